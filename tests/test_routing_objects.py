"""Routing on what real series hold (issue 12, point 7), against the node process.

* A Raw Data object that arrives before its Enhanced MR image in the same series: the series is
  classified from its image (T1), not from the Raw Data (not an image), and the Raw Data object
  stays out of the volume.
* An optional T1 whose JPEG 2000 streams are cut short (well-formed DICOM, so it is received
  and classified T1): the job drops it, runs FLAIR-only and says so in its reason and in the SR.
"""
from __future__ import annotations

import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from node_harness import fast_routing
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

ENHANCED_T1 = "dcm_qa_xa30/siemens_prisma_xa30_enh_T1w_tfl3d"


def _raw_data_beside(image: pydicom.Dataset) -> Dataset:
    ds = Dataset()
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
               "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
               "SeriesInstanceUID", "SeriesNumber", "FrameOfReferenceUID", "Manufacturer"):
        if kw in image:
            setattr(ds, kw, image.get(kw))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66"  # Raw Data Storage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20240101", "120000"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_raw_data_beside_enhanced_mr_is_classified_from_the_image(node_factory, shared_dicom,
                                                                  tmp_path):
    folder = shared_dicom / ENHANCED_T1
    if not folder.is_dir():
        pytest.skip(f"{ENHANCED_T1} missing")
    enhanced = sorted(p for p in folder.iterdir() if p.is_file())[0]
    image = pydicom.dcmread(enhanced, stop_before_pixels=True)
    raw = tmp_path / "raw.dcm"
    _raw_data_beside(image).save_as(raw, enforce_file_format=True)
    node = node_factory(runner={"enabled": False})
    assert node.storescu(raw).returncode == 0  # the Raw Data object first
    assert node.storescu(enhanced).returncode == 0
    uid = str(image.SeriesInstanceUID)
    st = node.wait_for(lambda s: any(x["series_uid"] == uid and x["state"] == "complete"
                                     and x["contrast"] for x in s["series"]), timeout=60)
    series = next(x for x in st["series"] if x["series_uid"] == uid)
    assert series["contrast"] == "T1", series


def _series(arr: np.ndarray, out: Path, study: str, number: int, contrast: str) -> list[Path]:
    from dicom_node.devtools.wrap import write_mr_series

    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing((1.0, 1.0, 3.0))
    return write_mr_series(img, out, study_uid=study, series_number=number,
                           series_description=f"{contrast} routing test", contrast=contrast)


def _cut_j2k(path: Path) -> None:
    """Compress to JPEG 2000 and cut each codestream to half (DICOM structure stays whole)."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(path)
    ds.compress(JPEG2000Lossless)
    frames = list(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([f[: len(f) // 2] for f in frames])
    ds.save_as(path, enforce_file_format=True)


def test_t1_that_does_not_decode_is_dropped_and_the_job_runs_flair_only(orthanc, node_factory,
                                                                         tmp_path):
    study = "2.25.4711002"
    arr = np.full((12, 48, 48), 200.0)
    arr[4:8, 20:28, 20:28] = 900.0
    flair = _series(arr, tmp_path / "flair", study, 3, "FLAIR")
    t1 = _series(arr, tmp_path / "t1", study, 4, "T1")
    for p in t1:
        _cut_j2k(p)
    with pytest.raises(RuntimeError):
        _ = pydicom.dcmread(t1[0]).pixel_array  # the T1 really does not decode
    node = node_factory(
        routing_file=str(fast_routing(tmp_path)),
        peers=[{"name": "orthanc", "ae_title": orthanc.aet, "host": "127.0.0.1",
                "port": orthanc.dicom_port}])
    for r in [node.storescu(*flair, aet=orthanc.aet), *node.storescu_own_ts(*t1, aet=orthanc.aet)]:
        assert r.returncode == 0, r.stdout + r.stderr
    st = node.wait_for(lambda s: any(j["state"] in ("done", "failed") for j in s["jobs"]),
                       timeout=300, interval=1.0)
    (job,) = st["jobs"]
    assert job["state"] == "done", job
    assert "T1 series not used" in job["reason"] and "FLAIR-only" in job["reason"]
    deadline = time.monotonic() + 60
    sr = None
    while sr is None and time.monotonic() < deadline:
        sid = orthanc.find_study(study)
        for inst in orthanc.study_instances(sid) if sid else []:
            ds = pydicom.dcmread(BytesIO(orthanc.instance_file(inst["ID"])))
            if ds.Modality == "SR":
                sr = ds
        time.sleep(1.0)
    assert sr is not None, node.log_text()[-2000:]
    comments = [str(it.TextValue) for it in sr.ContentSequence
                if it.ValueType == "TEXT" and it.ConceptNameCodeSequence[0].CodeValue == "121106"]
    assert any("T1 series not used" in c for c in comments), comments


def test_a_preferred_t1_that_does_not_decode_gives_way_to_the_next_qualifying_t1(
        orthanc, node_factory, tmp_path):
    """Two T1 series: the rule prefers the newest (series 5), whose pixels do not decode; the
    job falls back to the other T1 (series 4), not to FLAIR-only."""
    from dicom_node.encode.uids import derive_uid

    study = "2.25.4711003"
    arr = np.full((12, 48, 48), 200.0)
    arr[4:8, 20:28, 20:28] = 900.0
    flair = _series(arr, tmp_path / "flair", study, 3, "FLAIR")
    good_t1 = _series(arr, tmp_path / "t1a", study, 4, "T1")
    bad_t1 = _series(arr, tmp_path / "t1b", study, 5, "T1")
    for p in bad_t1:
        _cut_j2k(p)
    node = node_factory(
        routing_file=str(fast_routing(tmp_path)),
        peers=[{"name": "orthanc", "ae_title": orthanc.aet, "host": "127.0.0.1",
                "port": orthanc.dicom_port}])
    # both T1s are in before the FLAIR, so that the study is routed once, with both candidates
    for r in [*node.storescu_own_ts(*bad_t1, aet=orthanc.aet),
              node.storescu(*good_t1, aet=orthanc.aet)]:
        assert r.returncode == 0, r.stdout + r.stderr
    node.wait_for(lambda s: sum(x["state"] == "complete" for x in s["series"]) == 2, timeout=60)
    assert node.storescu(*flair, aet=orthanc.aet).returncode == 0
    st = node.wait_for(lambda s: any(j["state"] in ("done", "failed") for j in s["jobs"]),
                       timeout=300, interval=1.0)
    (job,) = st["jobs"]
    assert job["state"] == "done", job
    bad_uid = derive_uid("wrap-series", study, "T1", "5")
    good_uid = derive_uid("wrap-series", study, "T1", "4")
    assert job["inputs"]["t1"] == bad_uid  # routing preferred the newest T1
    assert "T1 series not used" in job["reason"] and f"next candidate {good_uid} used" in job["reason"]
    assert "FLAIR-only" not in job["reason"]
