"""The running node's /healthz and /metrics reflect what it receives (real node, real dcmtk)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from dicom_factory import make_mr_series, write_series
from node_harness import STORESCU
from orthanc_harness import free_port
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.skipif(not Path(STORESCU).exists(), reason="Debian package dcmtk missing")


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_node_metrics_count_received_instances_and_completed_series(node_factory, tmp_path):
    http_port = free_port()
    node = node_factory(completion={"quiet_seconds": 1}, http={"port": http_port})
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=5) as r:
        assert r.status == 200 and json.loads(r.read())["status"] == "ok"
    before = _scrape(http_port)
    assert before[("dicom_node_instances_received_total", ())] == 0

    dss = make_mr_series(7, 16, 16, contrast="FLAIR")
    res = node.storescu(write_series(dss, tmp_path / "series")[0].parent)
    assert res.returncode == 0, res.stderr
    series_uid = str(dss[0].SeriesInstanceUID)
    node.wait_for(lambda st: any(s["series_uid"] == series_uid and s["state"] == "complete"
                                 for s in st["series"]), timeout=60)

    after = _scrape(http_port)
    assert after[("dicom_node_instances_received_total", ())] == 7
    assert after[("dicom_node_series_completed_total", ())] == 1
    assert after[("dicom_node_stage_duration_seconds_count", (("stage", "completion_wait"),))] == 1
    assert after[("dicom_node_spool_free_bytes", ())] > 0
    jobs = {k[1][0][1]: v for k, v in after.items() if k[0] == "dicom_node_jobs"}
    assert set(jobs) >= {"queued", "running", "done", "failed"}
    # The same figures from the command line, read from the running node's endpoint.
    live = node.status()["live"]
    assert live["instances_received"] == 7 and live["series_completed"] == 1
    assert live["health"]["status"] == "ok"
