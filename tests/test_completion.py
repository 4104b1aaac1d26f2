"""Series/study completion against the real node process and dcmtk storescu.

Quiet period, early completion by known size, optional T1 grace period, re-opening after
completion (new job version), and a node restarted between receipt and completion.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from dicom_factory import make_mr_series, write_series
from node_harness import STORESCU

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not Path(STORESCU).exists(), reason="dcmtk not installed")


def routing_with_grace(tmp_path: Path, grace: float) -> str:
    """The shipped routing.yaml with a shorter optional grace period (for test speed)."""
    doc = yaml.safe_load((REPO / "config" / "routing.yaml").read_text())
    for rule in doc["rules"]:
        rule["optional_grace_seconds"] = grace
    p = tmp_path / "routing.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(p)


def _series(st: dict, uid: str) -> dict | None:
    return next((s for s in st["series"] if s["series_uid"] == uid), None)


def _send(node, folder: Path) -> None:
    r = node.storescu(folder)
    assert r.returncode == 0, r.stdout + r.stderr


def test_quiet_period_completes_classifies_and_queues_a_job(node_factory, tmp_path):
    node = node_factory(completion={"quiet_seconds": 1.5, "early": True},
                        runner={"enabled": False},
                        routing_file=routing_with_grace(tmp_path, 0))
    flair = make_mr_series(6, 32, 32, contrast="FLAIR")
    _send(node, write_series(flair, tmp_path / "flair")[0].parent)
    uid = flair[0].SeriesInstanceUID
    # the instances are acknowledged once spooled and indexed a moment later: once indexed,
    # the series is still receiving (not complete before the quiet period)
    st = node.wait_for(lambda s: _series(s, uid) is not None, 5, interval=0.05)
    assert _series(st, uid)["state"] == "receiving"
    st = node.wait_for(lambda s: (_series(s, uid) or {}).get("state") == "complete", 20)
    s = _series(st, uid)
    assert s["n_instances"] == 6 and s["contrast"] == "FLAIR"
    assert s["completion_reason"] == "quiet-period"
    assert 1.5 <= s["complete_delay_s"] < 4.0
    st = node.wait_for(lambda s: len(s["jobs"]) == 1, 10)
    job = st["jobs"][0]
    assert job["state"] == "queued" and job["inputs"] == {"flair": uid}
    assert job["study_uid"] == flair[0].StudyInstanceUID and job["calling_ae"] == "STORESCU"
    assert "series complete" in node.log_text()


def test_known_size_completes_early(node_factory, tmp_path):
    node = node_factory(completion={"quiet_seconds": 30}, runner={"enabled": False},
                        routing_file=routing_with_grace(tmp_path, 0))
    ser = make_mr_series(8, 32, 32, contrast="FLAIR", images_in_acquisition=True)
    t0 = time.monotonic()
    _send(node, write_series(ser, tmp_path / "s")[0].parent)
    uid = ser[0].SeriesInstanceUID
    st = node.wait_for(lambda s: (_series(s, uid) or {}).get("state") == "complete", 10)
    assert time.monotonic() - t0 < 10  # far below the 30 s quiet period
    s = _series(st, uid)
    assert s["completion_reason"] == "expected-count" and s["complete_delay_s"] < 1.0


def test_optional_t1_is_waited_for_within_the_grace_period(node_factory, tmp_path):
    node = node_factory(completion={"quiet_seconds": 3.0, "early": False},
                        runner={"enabled": False},
                        routing_file=routing_with_grace(tmp_path, 30))
    flair = make_mr_series(5, 32, 32, contrast="FLAIR", series_number=3)
    study = flair[0].StudyInstanceUID
    t1 = make_mr_series(12, 32, 32, contrast="T1", study_uid=study, series_number=4)
    t1_files = write_series(t1, tmp_path / "t1")
    _send(node, write_series(flair, tmp_path / "flair")[0].parent)
    fuid = flair[0].SeriesInstanceUID
    # the T1 trickles in (gaps well under the quiet period) and is still arriving when the
    # FLAIR completes: no job yet
    k = 0
    while k < len(t1_files) - 2:
        _send(node, t1_files[k])
        k += 1
        st = node.status()
        if (_series(st, fuid) or {}).get("state") == "complete":
            assert st["jobs"] == []  # waiting for the optional T1
            break
        time.sleep(0.3)
    else:
        pytest.fail("the FLAIR did not complete while the T1 was arriving")
    for f in t1_files[k:]:
        _send(node, f)
    st = node.wait_for(lambda s: len(s["jobs"]) >= 1, 30)
    assert len(st["jobs"]) == 1
    assert st["jobs"][0]["inputs"] == {"flair": fuid, "t1": t1[0].SeriesInstanceUID}
    assert "waits up to" in node.log_text()


def test_grace_period_expires_without_the_optional_series(node_factory, tmp_path):
    node = node_factory(completion={"quiet_seconds": 2.5, "early": False},
                        runner={"enabled": False},
                        routing_file=routing_with_grace(tmp_path, 2))
    flair = make_mr_series(5, 32, 32, contrast="FLAIR", series_number=3)
    other = make_mr_series(40, 32, 32, contrast="T2", study_uid=flair[0].StudyInstanceUID,
                           series_number=5)
    other_files = write_series(other, tmp_path / "t2")
    _send(node, write_series(flair, tmp_path / "flair")[0].parent)
    # another series keeps trickling in, past the FLAIR's completion + the 2 s grace period:
    # the job is queued at the deadline, without waiting for it
    for f in other_files:
        _send(node, f)
        st = node.status()
        if st["jobs"]:
            break
        time.sleep(0.3)
    else:
        pytest.fail("no job was queued while the other series kept arriving")
    assert st["jobs"][0]["inputs"] == {"flair": flair[0].SeriesInstanceUID}
    assert _series(st, other[0].SeriesInstanceUID)["state"] == "receiving"


def test_instance_after_completion_reopens_and_queues_a_new_version(node_factory, tmp_path):
    node = node_factory(completion={"quiet_seconds": 1.0}, runner={"enabled": False},
                        routing_file=routing_with_grace(tmp_path, 0))
    ser = make_mr_series(6, 32, 32, contrast="FLAIR")
    files = write_series(ser, tmp_path / "s")
    uid = ser[0].SeriesInstanceUID
    for f in files[:5]:
        _send(node, f)
    st = node.wait_for(lambda s: len(s["jobs"]) == 1, 20)
    assert _series(st, uid)["n_instances"] == 5
    # the same instances again: idempotent, nothing re-opens, no new job
    _send(node, tmp_path / "s" / "0001.dcm")
    time.sleep(2.0)
    st = node.status()
    assert len(st["jobs"]) == 1 and _series(st, uid)["completions"] == 1
    # a late new instance: re-open, complete again, job version 2 with the full series
    _send(node, files[5])
    st = node.wait_for(lambda s: len(s["jobs"]) == 2, 20)
    s = _series(st, uid)
    assert s["state"] == "complete" and s["n_instances"] == 6 and s["completions"] == 2
    assert sorted(j["version"] for j in st["jobs"]) == [1, 2]
    assert "re-opened" in node.log_text()


def test_restart_between_receipt_and_completion_still_completes(node_factory, tmp_path):
    node = node_factory(completion={"quiet_seconds": 3.0, "early": False},
                        runner={"enabled": False},
                        routing_file=routing_with_grace(tmp_path, 0))
    ser = make_mr_series(5, 32, 32, contrast="FLAIR")
    _send(node, write_series(ser, tmp_path / "s")[0].parent)
    uid = ser[0].SeriesInstanceUID
    time.sleep(0.5)  # let the index writer commit
    assert _series(node.status(), uid)["state"] == "receiving"
    node.kill()  # crash before the quiet period ends
    assert _series(node.status(), uid)["state"] == "receiving"
    node.start()
    st = node.wait_for(lambda s: (_series(s, uid) or {}).get("state") == "complete", 20)
    assert _series(st, uid)["n_instances"] == 5
    node.wait_for(lambda s: len(s["jobs"]) == 1, 10)
    assert "re-armed 1 receiving series" in node.log_text()
