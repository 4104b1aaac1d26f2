"""Orthanc -> node: real series uploaded to a real Orthanc, C-STOREd to the node process.

Every instance must be spooled with the content Orthanc holds, indexed, its series
completed, and the study routed as the shipped rules say (FLAIR study -> one job back to the
sender; T1-only study and non-MR objects -> no job).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dicom_factory import make_mr_series, write_series
from test_scp import content, dataset_bytes, spooled

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]

FOLDERS = {
    "flair": "dicom2nifti/siemens_trio_3D_FLAIR_SPACE_4sl_explicit",
    "t1_ge_130": "dcm_qa_ge/ge_pioneer_3D_Ax_T1_MPRAGE",
    "t1_enhanced": "dcm_qa_xa30/siemens_prisma_xa30_enh_T1w_tfl3d",
    "flair_jpegls": "dicom2nifti/unknownvendor_trio_3D_FLAIR_4sl_jpegls",
    "sr": "edge/siemens_phoenix_sr_vb",
}


def test_orthanc_store_to_node_spools_indexes_completes_routes(orthanc, node_factory,
                                                               shared_dicom):
    node = node_factory(
        completion={"quiet_seconds": 2},
        runner={"enabled": False},
        peers=[{"name": "pacs", "ae_title": orthanc.aet, "host": "127.0.0.1",
                "port": orthanc.dicom_port}],
    )
    orthanc.register_modality("ainode", node.ae_title, "127.0.0.1", node.port)
    assert orthanc.echo("ainode")
    ids: dict[str, list[str]] = {}
    for key, rel in FOLDERS.items():
        folder = shared_dicom / rel
        if not folder.is_dir():
            pytest.skip(f"missing corpus folder {rel}")
        ids[key] = orthanc.upload_dir(folder)
    all_ids = [i for v in ids.values() for i in v]
    studies = sorted({orthanc.get(f"/instances/{i}/study")["ID"] for i in all_ids})
    orthanc.store_to("ainode", studies)

    # spooled: the same content as Orthanc holds. Orthanc (DCMTK) re-serialises when it sends
    # (e.g. sequences with explicit lengths), so real files are compared element by element;
    # the node writes the received bytes (see the byte-identity test below).
    stored = spooled(node)
    assert len(stored) == len(all_ids)
    for iid in all_ids:
        sop = orthanc.instance_tags(iid)["SOPInstanceUID"]
        assert content(stored[sop]) == content(_tmp_file(orthanc.instance_file(iid))), sop

    # indexed and completed
    tags = {k: orthanc.instance_tags(v[0]) for k, v in ids.items()}
    want = {tags[k]["SeriesInstanceUID"]: len(v) for k, v in ids.items()}
    st = node.wait_for(lambda s: all(
        any(x["series_uid"] == u and x["state"] == "complete" for x in s["series"])
        for u in want), timeout=30)
    got = {x["series_uid"]: x for x in st["series"]}
    for uid, n in want.items():
        assert got[uid]["n_instances"] == n and got[uid]["calling_ae"] == orthanc.aet
    # the GE series says ImagesInAcquisition and the 3D enhanced object is a whole series
    assert got[tags["t1_ge_130"]["SeriesInstanceUID"]]["completion_reason"] == "expected-count"
    assert got[tags["t1_enhanced"]["SeriesInstanceUID"]]["completion_reason"] == "expected-count"
    assert got[tags["flair"]["SeriesInstanceUID"]]["contrast"] == "FLAIR"

    # routed: each FLAIR study gets a job back to the sender; others none
    st = node.wait_for(lambda s: len(s["jobs"]) >= 2, timeout=15)
    jobs = {j["study_uid"]: j for j in st["jobs"]}
    for key in ("flair", "flair_jpegls"):
        job = jobs[tags[key]["StudyInstanceUID"]]
        assert job["inputs"]["flair"] == tags[key]["SeriesInstanceUID"]
        assert job["destinations"][0]["port"] == orthanc.dicom_port
        assert job["destinations"][0]["ae_title"] == orthanc.aet
    for key in ("t1_ge_130", "t1_enhanced", "sr"):
        assert tags[key]["StudyInstanceUID"] not in jobs
    assert node.alive()


def _tmp_file(data: bytes) -> Path:
    import tempfile

    fh = tempfile.NamedTemporaryFile(suffix=".dcm", delete=False)
    fh.write(data)
    fh.close()
    return Path(fh.name)


def test_orthanc_to_node_dataset_bytes_identical(orthanc, node_factory, tmp_path):
    """For datasets DCMTK sends unchanged (no sequences, even lengths), the spooled dataset
    is byte-identical to the file Orthanc holds."""
    node = node_factory(runner={"enabled": False})
    orthanc.register_modality("ainode", node.ae_title, "127.0.0.1", node.port)
    ser = make_mr_series(12, 64, 64, contrast="T2", images_in_acquisition=True)
    ids = [orthanc.upload(p) for p in write_series(ser, tmp_path / "s")]
    orthanc.store_to("ainode", ids)
    stored = spooled(node)
    for iid, ds in zip(ids, ser, strict=False):
        raw = orthanc.instance_file(iid)
        assert dataset_bytes(stored[ds.SOPInstanceUID]) == dataset_bytes(_tmp_file(raw))
