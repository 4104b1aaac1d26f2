"""Follow-up against the prior study, through a real Orthanc (issue 11).

Two studies of one patient (the longitudinal patient01 of ``../shared``: FLAIR at two time
points, 3-4 mm axial slices) are uploaded to Orthanc; only the follow-up is sent to the node,
which must find the prior itself (C-FIND, Study Root), retrieve it (C-MOVE to its own AE title;
Orthanc knows the node as a modality), compare, and send into the follow-up study a SEG, a change
SEG and an SR with the comparison. Scenarios:

* the prior is fetched and compared, with a kill -9 while it is being retrieved: after the
  restart the job runs again and every result reaches Orthanc exactly once; the prior is not
  analysed as a study of its own and nothing is sent into it;
* the prior was analysed by the node before: its lesions and tracking UIDs are reused (no
  retrieval, no second segmentation), and a study that repeats the follow-up's images later
  (the self-pair) has no new lesion and no activity; the self-pair runs after the node's
  result folder of the follow-up was removed, so its tracking UIDs come from the node's SR of
  the follow-up in Orthanc (retrieved, read back, its lesions matched to the follow-up
  segmented again; this node retrieves with C-GET, so the SR comes through the node's C-GET,
  and a C-MOVE of the same SR to the node afterwards starts no job);
* no prior, and a prior in another slice orientation (retrieved with C-GET): the report says
  "no comparable prior" with the reason, and carries no change figures.
"""

from __future__ import annotations

import shutil
import time
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
import SimpleITK as sitk

from dicom_node.devtools.demo import prior_routing
from dicom_node.devtools.orthanc import OrthancServer
from dicom_node.devtools.wrap import write_mr_series
from dicom_node.encode.uids import derive_uid

REPO = Path(__file__).resolve().parents[1]
LONG = REPO.parent / "shared" / "data" / "ms" / "longitudinal" / "patient01"

pytestmark = [pytest.mark.slow, pytest.mark.orthanc]

RESULT_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def flairs():
    if not (LONG / "study1_FLAIR.nii.gz").is_file():
        pytest.skip("../shared/data/ms/longitudinal/patient01 is absent (the test needs two "
                    "real FLAIRs of one patient)")
    return (sitk.ReadImage(str(LONG / "study1_FLAIR.nii.gz")),
            sitk.ReadImage(str(LONG / "study2_FLAIR.nii.gz")))


@pytest.fixture
def pacs(orthanc):
    """The real Orthanc of conftest.py, holding both studies of the patient."""
    return orthanc


def _node(node_factory, pacs: OrthancServer, tmp_path: Path, name: str = "node",
          retrieve: str = "move", **overrides):
    node = node_factory(
        name,
        peers=[{"name": "orthanc", "ae_title": pacs.aet, "host": "127.0.0.1",
                "port": pacs.dicom_port}],
        routing_file=str(prior_routing(tmp_path / name / "routing-prior.yaml", retrieve=retrieve,
                                       lookback_days=3650, optional_grace_seconds=1)),
        completion={"quiet_seconds": 2},
        **overrides,
    )
    pacs.register_modality("ainode", node.ae_title, "127.0.0.1", node.port)
    return node


def _study(tmp: Path, image: sitk.Image, tag: str, date: str, *, patient: str = "MSNODE-FU1",
           orient: str = "LPS") -> str:
    """Write one FLAIR study (UIDs derived from ``tag``); return its Study Instance UID."""
    uid = derive_uid("test-prior", tag)
    write_mr_series(image, tmp / tag, study_uid=uid, series_number=3,
                    series_description="AX FLAIR", contrast="FLAIR", patient_id=patient,
                    study_date=date, orient=orient,
                    study_description="MR BRAIN follow-up (research test data)")
    return uid


def _uid(tag: str) -> str:
    return derive_uid("test-prior", tag)


def _upload(pacs: OrthancServer, tmp: Path, tag: str) -> str:
    pacs.upload_dir(tmp / tag)
    return pacs.find_study(derive_uid("test-prior", tag)) or ""


def _results(pacs: OrthancServer, sid: str, node, *, n_seg: int, timeout: float = RESULT_TIMEOUT):
    """Series of the study once the SR and ``n_seg`` SEG series are there (and the job done)."""
    deadline = time.monotonic() + timeout
    found: dict[str, list[dict]] = {}
    while time.monotonic() < deadline:
        found = {}
        for s in pacs.get(f"/studies/{sid}/series"):
            found.setdefault(s["MainDicomTags"].get("Modality", "?"), []).append(s)
        st = node.status() if node.alive() else {"jobs": []}
        failed = [j for j in st["jobs"] if j["state"] == "failed"]
        assert not failed, f"job failed: {failed}\n{node.log_text()[-3000:]}"
        if len(found.get("SEG", [])) >= n_seg and found.get("SR"):
            return found
        time.sleep(1.0)
    raise AssertionError(f"results did not reach Orthanc in {timeout:.0f} s: "
                         f"{ {k: len(v) for k, v in found.items()} }\n{node.log_text()[-4000:]}")


def _first(pacs: OrthancServer, series: dict) -> pydicom.Dataset:
    return pydicom.dcmread(BytesIO(pacs.instance_file(series["Instances"][0])))


def _report(pacs: OrthancServer, found: dict) -> dict:
    from dicom_node.encode.sr_read import read_report

    assert len(found["SR"]) == 1, "one SR series expected"
    return read_report(_first(pacs, found["SR"][0]))


def _job_done(node, study_uid: str, timeout: float = RESULT_TIMEOUT) -> None:
    node.wait_for(lambda st: any(j["study_uid"] == study_uid and j["state"] == "done"
                                 for j in st["jobs"]), timeout=timeout, interval=1.0)


def test_reused_prior_tracking_uids_and_the_self_pair(pacs, node_factory, tmp_path, flairs):
    _study(tmp_path, flairs[0], "p2-prior", "20190305")
    follow_uid = _study(tmp_path, flairs[1], "p2-follow", "20200611")
    self_uid = _study(tmp_path, flairs[1], "p2-self", "20200612")  # same images, a day later
    sids = {t: _upload(pacs, tmp_path, t) for t in ("p2-prior", "p2-follow", "p2-self")}
    # this node retrieves with C-GET: the node's SR of the prior (below) comes through it
    node = _node(node_factory, pacs, tmp_path, retrieve="get", runner={"tta": False})

    # the node analyses the prior first (it came in the usual way, so it is analysed)
    pacs.store_to("ainode", [sids["p2-prior"]])
    prior_report = _report(pacs, _results(pacs, sids["p2-prior"], node, n_seg=1))
    prior_uids = {les["tracking_uid"] for les in prior_report["lesions"]}
    assert prior_uids, "the prior has no lesion to track"
    assert (prior_report.get("change") or {}).get("comparable") is not True  # nothing before it

    pacs.store_to("ainode", [sids["p2-follow"]])
    follow = _report(pacs, _results(pacs, sids["p2-follow"], node, n_seg=2))
    change = follow["change"]
    assert change["comparable"] is True
    continuing = [les for les in change["lesions"]
                  if les["timepoint"] == "follow-up" and les["status"] in ("stable", "enlarging")
                  and les["volume_prior_mm3"]]
    assert continuing, change
    # the follow-up's SR carries the prior SR's tracking UID for every continuing lesion
    follow_uids = {les["tracking_uid"] for les in follow["lesions"]}
    assert {les["tracking_uid"] for les in continuing} <= prior_uids
    assert {les["tracking_uid"] for les in continuing} <= follow_uids
    log = node.log_text()
    assert "(prior lesions reused)" in log, log[-3000:]
    assert "(0 instance(s) retrieved)" in log  # the node held the prior already

    # The node loses its result of the follow-up (retention, a reinstall): the self-pair then
    # segments it again, and takes its lesions' tracking UIDs from the node's SR in Orthanc.
    _job_done(node, follow_uid)
    (follow_job,) = [j for j in node.status()["jobs"] if j["study_uid"] == follow_uid]
    shutil.rmtree(Path(node.cfg["data_dir"]) / "results" / follow_job["id"])
    pacs.store_to("ainode", [sids["p2-self"]])
    same = _report(pacs, _results(pacs, sids["p2-self"], node, n_seg=1))
    change = same["change"]
    assert change["comparable"] is True and change["prior_study_uid"] == follow_uid
    assert change["n_new"] == 0 and change["n_enlarging"] == 0 and change["activity"] is False
    assert change["interval_days"] == 1
    _job_done(node, self_uid)
    # every lesion of the self-pair is a stable one and keeps the follow-up SR's tracking UID
    assert {les["tracking_uid"] for les in same["lesions"]} == follow_uids
    log = node.log_text()
    assert f"retrieved 1 SR instance(s) of prior {follow_uid} (C-GET)" in log, log[-3000:]
    assert f"SR(s) of the node in prior {follow_uid}" in log, log[-3000:]
    assert "prior lesion(s) taken from the node's SR" in log, log[-3000:]
    # the SR retrieved into the follow-up study ran no job there and nothing new went into it
    assert sorted(j["study_uid"] for j in node.status()["jobs"]) == sorted(
        [_uid("p2-prior"), follow_uid, self_uid])
    assert len([s for s in pacs.get(f"/studies/{sids['p2-follow']}/series")
                if s["MainDicomTags"].get("Modality") == "SR"]) == 1

    # retrieve: move (the other setting) brings the node's SR to the node's Storage SCP too
    from dicom_node.retrieve.qr import Peer, find_series, move_series

    peer = Peer(pacs.aet, "127.0.0.1", pacs.dicom_port)
    srs = [s.series_uid for s in find_series(node.ae_title, peer, follow_uid) if s.modality == "SR"]
    assert move_series(node.ae_title, peer, follow_uid, srs, node.ae_title).completed == 1
    time.sleep(4)  # past the completion quiet time: a re-received SR starts no job
    assert len(node.status()["jobs"]) == 3, node.status()["jobs"]


def test_no_prior_and_an_incomparable_prior(pacs, node_factory, tmp_path, flairs):
    lone_uid = _study(tmp_path, flairs[1], "p3-lone", "20200611", patient="MSNODE-LONE")
    _study(tmp_path, flairs[0], "p3-sag-prior", "20190305", patient="MSNODE-SAG", orient="PIL")
    _study(tmp_path, flairs[1], "p3-follow", "20200611", patient="MSNODE-SAG")
    sids = {t: _upload(pacs, tmp_path, t) for t in ("p3-lone", "p3-sag-prior", "p3-follow")}
    n_sag = len(pacs.get(f"/studies/{sids['p3-sag-prior']}/instances"))
    # this node retrieves with C-GET (on its own association; Orthanc needs no route back)
    node = _node(node_factory, pacs, tmp_path, retrieve="get", runner={"tta": False})

    pacs.store_to("ainode", [sids["p3-lone"]])
    lone = _report(pacs, _results(pacs, sids["p3-lone"], node, n_seg=1))
    assert lone["change"]["comparable"] is False
    assert "no earlier MR study" in lone["change"]["reason"]
    assert not lone["change"].get("n_new") and not lone["change"].get("activity")
    assert lone["summary"]["lesion_count"] >= 0  # the single-study result stands
    _job_done(node, lone_uid)

    pacs.store_to("ainode", [sids["p3-follow"]])
    found = _results(pacs, sids["p3-follow"], node, n_seg=1)
    change = _report(pacs, found)["change"]
    assert change["comparable"] is False
    assert "different slice orientation" in change["reason"], change
    assert len(found["SEG"]) == 1  # the lesion SEG only: no change SEG without a comparison
    log = node.log_text()
    assert "(C-GET)" in log and f"({n_sag} instance(s) retrieved)" in log, log[-3000:]
    assert {j["study_uid"] for j in node.status()["jobs"]} == {lone_uid, _uid("p3-follow")}


def test_prior_is_retrieved_compared_and_a_kill_during_retrieval_sends_nothing_twice(
        pacs, node_factory, tmp_path, flairs):
    prior_uid = _study(tmp_path, flairs[0], "p1-prior", "20190305")
    follow_uid = _study(tmp_path, flairs[1], "p1-follow", "20200611")
    prior_sid = _upload(pacs, tmp_path, "p1-prior")
    follow_sid = _upload(pacs, tmp_path, "p1-follow")
    n_prior = len(pacs.get(f"/studies/{prior_sid}/instances"))
    node = _node(node_factory, pacs, tmp_path)

    pacs.store_to("ainode", [follow_sid])  # only the follow-up is sent
    deadline = time.monotonic() + 120
    while f"retrieving prior study {prior_uid}" not in node.log_text():
        assert time.monotonic() < deadline, node.log_text()[-3000:]
        time.sleep(0.02)
    node.kill()  # SIGKILL while the C-MOVE runs
    node.start()
    _results(pacs, follow_sid, node, n_seg=2)
    _job_done(node, follow_uid)
    time.sleep(3)  # anything sent twice would show up now
    found: dict[str, list[dict]] = {}
    for s in pacs.get(f"/studies/{follow_sid}/series"):
        found.setdefault(s["MainDicomTags"].get("Modality", "?"), []).append(s)
    assert len(found["SR"]) == 1 and len(found["SR"][0]["Instances"]) == 1
    assert len(found["SEG"]) == 2 and all(len(s["Instances"]) == 1 for s in found["SEG"])

    log = node.log_text()
    assert f"({n_prior} instance(s) retrieved)" in log, log[-3000:]
    report = _report(pacs, found)
    change = report["change"]
    assert change["comparable"] is True, change
    assert change["prior_study_uid"] == prior_uid
    assert change["interval_days"] == 464  # 2019-03-05 -> 2020-06-11
    assert change["activity"] == (change["n_new"] + change["n_enlarging"] > 0)
    assert change["total_volume_now_mm3"] == pytest.approx(report["summary"]["total_volume_mm3"],
                                                           rel=1e-3)
    segs = [_first(pacs, s) for s in found["SEG"]]
    change_seg = [s for s in segs if "change" in str(s.SeriesDescription).lower()]
    assert len(change_seg) == 1, [s.SeriesDescription for s in segs]
    labels = {str(s.SegmentLabel).lower().split()[0] for s in change_seg[0].SegmentSequence}
    assert labels and labels <= {"new", "enlarging", "stable", "shrinking"}, labels
    if change["n_new"]:
        assert "new" in labels
    assert all("RESEARCH" in str(s.SeriesDescription).upper() for s in segs)

    # the prior was retrieved whole, but not analysed by itself, and nothing went into it
    st = node.status()
    assert {j["study_uid"] for j in st["jobs"]} == {follow_uid}, st["jobs"]
    mods = {s["MainDicomTags"].get("Modality") for s in pacs.get(f"/studies/{prior_sid}/series")}
    assert mods == {"MR"}, mods


def test_a_pacs_that_does_not_know_the_node_says_so(pacs, tmp_path, flairs):
    """A PACS that does not know the node: a C-FIND, or a C-MOVE to an AE title it has no
    modality for, gives the admin the reason, not a silent empty prior (the node turns it into
    "no comparable prior: prior study not retrieved: ...", see dicom_node.retrieve.prior)."""
    from dicom_node.retrieve.qr import Peer, RetrieveError, find_series, find_studies, move_series

    uid = _study(tmp_path, flairs[0], "p5-prior", "20190305", patient="MSNODE-P5")
    _upload(pacs, tmp_path, "p5-prior")
    peer = Peer(pacs.aet, "127.0.0.1", pacs.dicom_port)
    # Orthanc answers queries only from AE titles it knows
    with pytest.raises(RetrieveError, match="does it allow AINODE to query"):
        find_studies("AINODE", peer, "MSNODE-P5", modality="MR")
    pacs.register_modality("ainode", "AINODE", "127.0.0.1", 11112)
    (study,) = find_studies("AINODE", peer, "MSNODE-P5", date_range="20180101-20200101",
                            modality="MR")
    assert study.study_uid == uid and study.study_date == "20190305"
    (series,) = find_series("AINODE", peer, uid)
    assert series.modality == "MR" and series.n_instances == 36
    with pytest.raises(RetrieveError, match="does the PACS know NOTKNOWN as a DICOM modality"):
        move_series("AINODE", peer, uid, [series.series_uid], "NOTKNOWN")
