"""Node logs, as an operator reads them: text by default, JSON as an option; one line per series
(not per instance) at INFO, per instance only at DEBUG; UIDs, never patient names.

The real node (``dicom-node serve``) receives a series from dcmtk ``storescu``; its log output
is checked line by line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dicom_factory import make_mr_series, write_series
from node_harness import STORESCU, NodeProcess, association_rq

PATIENT_NAME = "Zyxwv^Secretname"   # must never reach the logs
N_INSTANCES = 12

pytestmark = pytest.mark.skipif(not Path(STORESCU).exists(), reason="Debian package dcmtk missing")


def _send_series(node: NodeProcess, folder: Path) -> tuple[str, list[str]]:
    dss = make_mr_series(N_INSTANCES, 16, 16, contrast="FLAIR", patient_name=PATIENT_NAME)
    write_series(dss, folder)
    res = node.storescu(folder)
    assert res.returncode == 0, res.stderr
    series_uid = str(dss[0].SeriesInstanceUID)
    node.wait_for(lambda st: any(s["series_uid"] == series_uid and s["state"] == "complete"
                                 for s in st["series"]), timeout=60)
    return series_uid, [str(ds.SOPInstanceUID) for ds in dss]


def _name_variants() -> list[str]:
    family, given = PATIENT_NAME.split("^")
    return [PATIENT_NAME, family, given, f"{given} {family}"]


def test_text_info_log_one_line_per_series_no_instances_no_names(node_factory, tmp_path):
    node = node_factory(completion={"quiet_seconds": 1})
    series_uid, sops = _send_series(node, tmp_path / "series")
    node.stop()
    text = node.log_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # human-readable: "<date> <time> LEVEL logger: message", not JSON
    assert lines and all(not ln.lstrip().startswith("{") for ln in lines)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\S* (INFO|WARNING|ERROR|DEBUG) ", lines[0])
    # the series is logged (by UID), a few lines per series, not one per instance
    series_lines = [ln for ln in lines if series_uid in ln]
    assert 1 <= len(series_lines) < N_INSTANCES / 2, series_lines
    assert any("complete" in ln for ln in series_lines)
    for sop in sops:
        assert sop not in text, "per-instance lines must stay at DEBUG"
    for name in _name_variants():
        assert name not in text, f"patient name part {name!r} in the log"


def test_json_debug_log_parses_and_lists_instances_without_names(node_factory, tmp_path):
    node = node_factory(completion={"quiet_seconds": 1}, log={"format": "json", "level": "DEBUG"})
    series_uid, sops = _send_series(node, tmp_path / "series")
    node.stop()
    text = node.log_text()
    records = []
    for ln in text.splitlines():
        if not ln.strip():
            continue
        rec = json.loads(ln)  # every line is one JSON object
        assert {"ts", "level", "msg"} <= rec.keys()
        records.append(rec)
    msgs = "\n".join(r["msg"] for r in records)
    assert any(r["level"] == "DEBUG" for r in records)
    for sop in sops:  # per instance at DEBUG
        assert sop in msgs
    assert any(series_uid in r["msg"] and r["level"] == "INFO" for r in records)
    for name in _name_variants():
        assert name not in text


FORGED = "2026-01-01 00:00:00,000 INFO dicom_node.scp: FORGED"
_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def test_network_values_cannot_forge_log_lines(node_factory, tmp_path):
    """A UID holding a newline and a fake record (it reaches the log through pynetdicom's and
    the node's own warnings) and an AE title holding NUL and a newline: every line the node
    writes is one of its records (or an indented continuation), none is the forged one, and
    no NUL is written."""
    import socket

    from pynetdicom import AE, build_context

    from dicom_node._pynetdicom.reactor import pause_reactor

    node = node_factory(runner={"enabled": False}, allowed_peers=[{"ae_title": "STORESCU"},
                                                                  {"ae_title": "PYSCU"}])
    ds = make_mr_series(1, 8, 8)[0]
    ds.SOPInstanceUID = "1.2.3\n" + FORGED
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ae = AE(ae_title="PYSCU")
    ae.requested_contexts = [build_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)]
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    pause_reactor(assoc)  # as the node's sender: pynetdicom issue 435 (dicom_node._pynetdicom.reactor)
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status and status.Status == 0xA900  # the invalid UID is refused, not stored

    # an A-ASSOCIATE-RQ whose calling AE title bytes hold NUL and a newline
    rq = bytearray(association_rq(node, "PLACEHOLDER"))
    rq[26:42] = b"EV\x00IL\n" + FORGED[:10].encode()
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        s.sendall(bytes(rq))
        reply = s.recv(6)
    assert reply[:1] in (b"\x03", b"\x07")  # rejected or aborted, never accepted

    node.stop()
    raw = node.log_path.read_bytes()
    assert b"\x00" not in raw
    lines = raw.decode().splitlines()
    assert not any(line.startswith(FORGED[:23]) for line in lines), raw[-2000:]
    bad = [line for line in lines if line and not (_RECORD_START.match(line)
                                                   or line.startswith((" ", "Traceback")))]
    assert not bad, bad
    text = raw.decode()
    assert "FORGED" in text and "\\n2026-01-01 00:00:00,000 INFO dicom_node.scp: FORGED" in text
    assert "\\x00" in text  # the AE title's NUL, escaped
