"""``dicom-node status`` and ``dicom-node retry`` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from dicom_factory import make_mr_series
from pydicom.uid import generate_uid

from dicom_node.config import load_config
from dicom_node.send.outbox import Destination, Outbox
from dicom_node.store.index import Index
from dicom_node.store.jobs import JobQueue

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicom_node.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _config(tmp_path: Path) -> Path:
    p = tmp_path / "node.yaml"
    p.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"),
                                 "routing_file": str(REPO / "config" / "routing.yaml")}))
    return p


def test_status_shows_jobs_with_reason_and_the_outbox(tmp_path):
    cfg_path = _config(tmp_path)
    cfg = load_config(cfg_path)
    cfg.data_dir.mkdir(parents=True)
    queue = JobQueue(Index(cfg.index_path))
    failed = queue.enqueue("1.2.3", "ms-lesions-brain", "ms-lesions", {"flair": "1.2.3.4"}, [])
    queue.claim_next()
    queue.mark_failed(failed, "FLAIR series refused: gaps between slices")
    ob = Outbox(cfg.outbox_db, cfg.outbox_dir, max_attempts=1)
    ob.enqueue(failed, make_mr_series(1)[0], Destination("PACS", "127.0.0.1", 1))
    ob.send_due()  # nothing listens on port 1: the item goes dead at once (max_attempts=1)
    ob.close()

    r = _cli("status", "--config", str(cfg_path))
    assert r.returncode == 0, r.stderr
    assert failed in r.stdout and "gaps between slices" in r.stdout
    assert "dead 1" in r.stdout and "PACS" in r.stdout

    doc = json.loads(_cli("status", "--config", str(cfg_path), "--json").stdout)
    job = next(j for j in doc["jobs"] if j["id"] == failed)
    assert job["state"] == "failed" and "gaps" in job["reason"]
    assert doc["outbox"]["counts"]["dead"] == 1
    assert doc["outbox"]["items"][0]["state"] == "dead"


def test_retry_requeues_a_failed_job_and_resends_dead_deliveries_of_a_done_one(tmp_path):
    cfg_path = _config(tmp_path)
    cfg = load_config(cfg_path)
    cfg.data_dir.mkdir(parents=True)
    queue = JobQueue(Index(cfg.index_path))
    failed = queue.enqueue("1.2.3", "r", "ms-lesions", {"flair": "1.2.3.4"}, [])
    queue.claim_next()
    queue.mark_failed(failed, "boom")
    r = _cli("retry", failed, "--config", str(cfg_path))
    assert r.returncode == 0, r.stderr
    assert queue.get(failed).state == "queued"

    done = queue.enqueue("1.2.5", "r", "ms-lesions", {"flair": "1.2.5.6"}, [])
    queue.mark_done(done, "ok")
    ob = Outbox(cfg.outbox_db, cfg.outbox_dir, max_attempts=1)
    ds = make_mr_series(1, series_uid=generate_uid())[0]
    ob.enqueue(done, ds, Destination("PACS", "127.0.0.1", 1))
    ob.send_due()
    assert ob.counts(done)["dead"] == 1
    r = _cli("retry", done, "--config", str(cfg_path))
    assert r.returncode == 0 and "back to pending" in r.stdout, r.stdout + r.stderr
    assert ob.counts(done)["pending"] == 1
    assert queue.get(done).state == "done"  # results exist: re-sent, not recomputed
    ob.close()

    r = _cli("retry", "nosuchjob", "--config", str(cfg_path))
    assert r.returncode == 2 and "no job" in r.stderr
