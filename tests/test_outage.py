"""A PACS outage longer than the retry period (issue 12, point 6), against the real node process
and a real Orthanc, with the outbox policy scaled down in the test config (retry for 18 s
instead of 72 h, backoff capped at 4 s, C-ECHO every 2 s): the PACS is down when the results
are ready and stays down until they are dead-lettered; when it comes back the node sends them
without an operator, each exactly once, and ``/metrics`` showed the oldest undelivered result's
age meanwhile. The default policy's 24 hours are tested in simulated time in test_sender.py.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk
from node_harness import fast_routing
from orthanc_harness import free_port

pytestmark = [pytest.mark.slow, pytest.mark.orthanc]

RETRY_FOR_S = 18.0


def _metric(port: int, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def _flair_study(out: Path) -> list[Path]:
    from dicom_node.devtools.wrap import write_mr_series

    arr = np.full((12, 48, 48), 200.0, np.float32)
    arr[4:8, 20:28, 20:28] = 900.0
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 3.0))
    return write_mr_series(img, out, study_uid="2.25.4711001", series_number=3,
                           series_description="FLAIR outage test", contrast="FLAIR")


def test_results_outlast_a_pacs_outage_and_arrive_exactly_once(orthanc, node_factory, tmp_path):
    http = free_port()
    node = node_factory(
        routing_file=str(fast_routing(tmp_path)), http={"port": http},
        peers=[{"name": "orthanc", "ae_title": orthanc.aet, "host": "127.0.0.1",
                "port": orthanc.dicom_port}],
        outbox={"retry_for_hours": RETRY_FOR_S / 3600, "base_delay_s": 1, "max_delay_s": 4,
                "echo_interval_s": 2})
    files = _flair_study(tmp_path / "study")
    orthanc.stop()  # the maintenance window starts before the results are ready
    r = node.storescu(*files, aet=orthanc.aet)
    assert r.returncode == 0, r.stdout + r.stderr
    st = node.wait_for(lambda s: any(j["state"] in ("done", "failed") for j in s["jobs"]),
                       timeout=300, interval=1.0)
    assert [j["state"] for j in st["jobs"]] == ["done"], st["jobs"]
    st = node.wait_for(lambda s: s["outbox"]["counts"].get("dead", 0) > 0
                       and s["outbox"]["counts"].get("pending", 0) == 0,
                       timeout=RETRY_FOR_S + 60, interval=1.0)
    n = st["outbox"]["counts"]["dead"]
    assert st["outbox"]["counts"].get("sent", 0) == 0
    time.sleep(10)  # still down: the outage is longer than the whole retry period
    age = _metric(http, "dicom_node_outbox_oldest_undelivered_seconds")
    assert age >= RETRY_FOR_S + 10
    assert _metric(http, "dicom_node_outbox_dead") == n

    orthanc.restart()  # no operator: no `dicom-node retry`
    st = node.wait_for(lambda s: s["outbox"]["counts"].get("sent", 0) == n,
                       timeout=60, interval=1.0)
    assert st["outbox"]["counts"] == {"pending": 0, "sent": n, "dead": 0}
    sid = orthanc.find_study("2.25.4711001")
    assert sid
    modalities = [orthanc.instance_tags(i["ID"]).get("Modality")
                  for i in orthanc.study_instances(sid)]
    assert "SR" in modalities
    assert len(modalities) == n  # the results only: the source series never went to Orthanc
    stored = sum(int(m) for m in re.findall(r"outbox: (\d+)/\d+ object\(s\) stored to",
                                            node.log_text()))
    assert stored == n  # each object C-STOREd once
    assert "answers C-ECHO again" in node.log_text()
    assert _metric(http, "dicom_node_outbox_oldest_undelivered_seconds") == 0
