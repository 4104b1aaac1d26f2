"""Parse once: the routing header kept at receipt stands in for the spooled files at completion.

* On every folder of the shared corpus, the routing header built from the bytes a sender would
  send (the structure walk's kept elements) classifies each series exactly as its files' whole
  headers do, and the shipped routing rules read the same values from it.
* A node whose spooled files are moved away after receipt still classifies the series and queues
  its job: completion reads no file.
* An index of the earlier version (no ``routing_header`` column) opens, gains the column, and
  its rows, which have no routing header, are classified from their files.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

import pydicom
import pytest
from dicom_factory import make_mr_series, write_series
from node_harness import STORESCU
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import UID

from dicom_node.receive.structure import walk_dataset
from dicom_node.route.classify import classify_series
from dicom_node.route.completion import CompletionManager, series_headers
from dicom_node.route.dicomfiles import iter_files
from dicom_node.route.rules import load_rules
from dicom_node.route.rules.conditions import _lookup_dataset
from dicom_node.store.index import Index
from dicom_node.store.jobs import JobQueue
from dicom_node.store.records import KEPT_TAGS, InstanceRecord, keeps_element, pack_routing_header, routing_header
from dicom_node.store.schema import SCHEMA

REPO = Path(__file__).resolve().parents[1]


def _as_received(path: Path):
    """``(full header, routing header)`` of a Part-10 file, the latter from its dataset bytes as
    the SCP gets them; None for a file without file meta or one the walk refuses."""
    with path.open("rb") as fp:
        try:
            read_preamble(fp, False)
            meta = _read_file_meta_info(fp)
        except Exception:  # noqa: BLE001 - not a Part-10 file
            return None
        raw = fp.read()
    ts = UID(str(meta.get("TransferSyntaxUID", "")))
    try:
        why, kept = walk_dataset(raw, ts, KEPT_TAGS)
    except (ValueError, AttributeError, NotImplementedError):  # not a transfer syntax
        return None
    if why is not None or kept is None:
        return None
    full = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return full, routing_header(pack_routing_header(kept, ts.is_implicit_VR, ts.is_little_endian))


@pytest.mark.shared
def test_routing_headers_classify_and_route_like_the_whole_headers(shared_dicom):
    rules = load_rules(REPO / "config" / "routing.yaml")
    tags = rules.header_tags()
    assert all(keeps_element(t) for t in tags)  # the shipped rules never need the file
    folders = sorted(p for p in shared_dicom.glob("*/*") if p.is_dir())
    compared = 0
    for folder in folders:
        pairs = [r for r in (_as_received(f) for f, _ in iter_files([folder])) if r is not None]
        if not pairs:
            continue
        full = [a for a, _ in pairs]
        kept = [b for _, b in pairs]
        assert asdict(classify_series(kept)) == asdict(classify_series(full)), folder
        for a, b in pairs[:3]:
            for tag in tags:
                assert _lookup_dataset(b, tag) == _lookup_dataset(a, tag), (folder, hex(tag))
        compared += 1
    assert compared >= 45, f"only {compared} corpus folders compared"


def _series(st: dict, uid: str) -> dict | None:
    return next((s for s in st["series"] if s["series_uid"] == uid), None)


@pytest.mark.skipif(not Path(STORESCU).exists(), reason="dcmtk not installed")
def test_completion_reads_no_spooled_file(node_factory, tmp_path):
    node = node_factory(completion={"quiet_seconds": 4, "early": False,
                                    "release_grace_seconds": 0},
                        runner={"enabled": False})
    flair = make_mr_series(6, 32, 32, contrast="FLAIR")
    r = node.storescu(write_series(flair, tmp_path / "flair")[0].parent)
    assert r.returncode == 0, r.stdout + r.stderr
    uid, study = flair[0].SeriesInstanceUID, flair[0].StudyInstanceUID
    node.wait_for(lambda s: ((_series(s, uid) or {}).get("n_instances") == 6), 10)
    spooled = Path(node.cfg["data_dir"]) / "spool" / study
    assert spooled.is_dir() and (_series(node.status(), uid) or {})["state"] == "receiving"
    moved = tmp_path / "moved"
    shutil.move(spooled, moved)  # nothing left to read at completion
    st = node.wait_for(lambda s: (_series(s, uid) or {}).get("state") == "complete"
                       and len(s["jobs"]) == 1, 20)
    assert _series(st, uid)["contrast"] == "FLAIR"
    assert st["jobs"][0]["inputs"] == {"flair": uid}
    assert "unreadable spooled file" not in node.log_text()


def _old_index(path: Path) -> None:
    """An index as the earlier version created it: no ``routing_header`` column."""
    old = SCHEMA.replace(",\n    routing_header BLOB", "")
    assert old != SCHEMA
    c = sqlite3.connect(path)
    c.executescript(old)
    c.close()


def test_an_earlier_versions_index_opens_and_its_rows_are_read_from_their_files(tmp_path):
    _old_index(tmp_path / "index.sqlite3")
    index = Index(tmp_path / "index.sqlite3")
    cols = {r["name"] for r in index.conn().execute("PRAGMA table_info(instances)")}
    assert "routing_header" in cols
    flair = make_mr_series(5, 32, 32, contrast="FLAIR")
    paths = write_series(flair, tmp_path / "spool")
    now = time.time()
    index.write_batch([InstanceRecord(
        sop_uid=ds.SOPInstanceUID, series_uid=ds.SeriesInstanceUID, study_uid=ds.StudyInstanceUID,
        patient_id=ds.PatientID, sop_class_uid=ds.SOPClassUID,
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID), instance_number=int(ds.InstanceNumber),
        path=str(p), size=p.stat().st_size, received_at=now, calling_ae="OLD", calling_host="")
        for ds, p in zip(flair, paths, strict=True)])
    uid = flair[0].SeriesInstanceUID
    assert [b for _, b in index.instance_headers(uid)] == [None] * 5
    assert len(series_headers(index, uid)) == 5  # from the files
    rules = load_rules(REPO / "config" / "routing.yaml")
    cm = CompletionManager(index, JobQueue(index), 60, rules=rules, classify=classify_series)
    cm._complete_series(uid, now, "quiet-period")
    assert (index.series(uid) or {})["contrast"] == "FLAIR"
    jobs = cm.jobs.list(study_uid=flair[0].StudyInstanceUID)
    assert [j.inputs for j in jobs] == [{"flair": uid}]
    for p in paths:  # and without the files, such rows cannot be classified: the files were read
        p.unlink()
    assert series_headers(index, uid) == []
