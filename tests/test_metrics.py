"""The node's HTTP observability endpoint: /healthz and Prometheus /metrics, scraped for real."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dicom_node.devtools.orthanc import free_port
from dicom_node.ops import endpoint, metrics


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def server(tmp_path: Path):
    jobs = {"queued": 2, "running": 1}
    srv = endpoint.start_http(
        free_port(), "127.0.0.1", spool_dir=tmp_path, min_free_bytes=0,
        jobs_source=lambda: jobs, info={"version": "test", "ae_title": "AINODE"},
    )
    yield srv, jobs
    srv.stop()
    metrics.set_jobs_source(None)
    metrics.set_spool_dir(None)
    metrics.unregister_check("scp")


def test_port_zero_means_off():
    assert endpoint.start_http(0) is None


def test_metrics_scrape_reflects_node_activity(server, tmp_path):
    srv, jobs = server
    before = _samples(_get(srv.url + "/metrics")[2])

    for _ in range(3):
        metrics.INSTANCES_RECEIVED.inc()
    metrics.SERIES_COMPLETED.inc()
    metrics.SEND_FAILURES.inc()
    metrics.observe_stage("inference", 1.5)
    with metrics.time_stage("encode"):
        pass
    jobs["done"] = 4

    code, ctype, text = _get(srv.url + "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    after = _samples(text)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert delta("dicom_node_instances_received_total") == 3
    assert delta("dicom_node_series_completed_total") == 1
    assert delta("dicom_node_send_failures_total") == 1
    assert delta("dicom_node_stage_duration_seconds_count", stage="inference") == 1
    assert delta("dicom_node_stage_duration_seconds_sum", stage="inference") == pytest.approx(1.5)
    assert delta("dicom_node_stage_duration_seconds_bucket", stage="inference", le="1.0") == 0
    assert delta("dicom_node_stage_duration_seconds_bucket", stage="inference", le="2.0") == 1
    assert delta("dicom_node_stage_duration_seconds_count", stage="encode") == 1
    # jobs by state come from the registered source at scrape time; absent states read 0
    assert after[("dicom_node_jobs", (("state", "queued"),))] == 2
    assert after[("dicom_node_jobs", (("state", "running"),))] == 1
    assert after[("dicom_node_jobs", (("state", "done"),))] == 4
    assert after[("dicom_node_jobs", (("state", "failed"),))] == 0
    # spool free space is the real file system's, refreshed at scrape time
    free = after[("dicom_node_spool_free_bytes", ())]
    assert abs(free - shutil.disk_usage(tmp_path).free) < 512 * 2**20
    assert after[("dicom_node_build_info", (("ae_title", "AINODE"), ("version", "test")))] == 1


def test_healthz_ok_then_degraded(server):
    srv, _ = server
    code, ctype, text = _get(srv.url + "/healthz")
    body = json.loads(text)
    assert code == 200 and ctype == "application/json"
    assert body["status"] == "ok"
    assert body["checks"]["spool_free"]["free_bytes"] > 0
    assert body["ae_title"] == "AINODE"

    metrics.register_check("scp", lambda: (False, "listener thread died"))
    code, _, text = _get(srv.url + "/healthz")
    body = json.loads(text)
    assert code == 503
    assert body["status"] == "degraded"
    assert body["checks"]["scp"] == {"ok": False, "detail": "listener thread died"}

    metrics.register_check("scp", lambda: True)
    assert _get(srv.url + "/healthz")[0] == 200
    assert _get(srv.url + "/nope")[0] == 404


def test_healthz_degraded_when_spool_below_threshold(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    srv = endpoint.start_http(free_port(), "127.0.0.1", spool_dir=tmp_path,
                             min_free_bytes=free * 4)
    try:
        code, _, text = _get(srv.url + "/healthz")
        body = json.loads(text)
        assert code == 503
        assert body["checks"]["spool_free"]["ok"] is False
    finally:
        srv.stop()
        metrics.set_spool_dir(None)


def test_snapshot_matches_counters():
    snap0 = metrics.snapshot()
    metrics.INSTANCES_RECEIVED.inc(2)
    metrics.set_jobs_by_state({"failed": 1})
    snap = metrics.snapshot()
    assert snap["instances_received"] == snap0["instances_received"] + 2
    assert snap["jobs"]["failed"] == 1 and snap["jobs"]["queued"] == 0


def test_live_snapshot_reads_a_running_endpoint(server):
    srv, jobs = server
    metrics.INSTANCES_RECEIVED.inc(5)
    jobs["failed"] = 2
    live = endpoint.live_snapshot(srv.port)
    local = metrics.snapshot()
    assert live is not None
    for key in ("instances_received", "series_completed", "send_failures", "instances_sent"):
        assert live[key] == local[key]
    assert live["jobs"]["failed"] == 2 and live["jobs"]["queued"] == 2
    assert live["health"]["status"] == "ok"
    assert live["spool_free_bytes"] > 0


def test_live_snapshot_none_when_nothing_listens():
    assert endpoint.live_snapshot(free_port()) is None
    assert endpoint.live_snapshot(0) is None
