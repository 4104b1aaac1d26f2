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
from node_harness import STORESCU, NodeProcess

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
