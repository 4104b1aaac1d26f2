"""Job runner: failures stay with their job, results go to the outbox per destination.

The pipeline is replaced by small stand-ins (the real one is exercised end to end in
``test_e2e.py``); the queue, the outbox and the runner are the real ones.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import signal
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from dicom_factory import make_mr_series, write_series

from dicom_node.config import NodeConfig
from dicom_node.run import pipeline
from dicom_node.run.runner import Runner
from dicom_node.send.outbox import Outbox
from dicom_node.store.index import Index
from dicom_node.store.jobs import JobQueue

PACS = {"ae_title": "PACS", "host": "127.0.0.1", "port": 11113}
VIEWER = {"ae_title": "VIEWER", "host": "127.0.0.1", "port": 11114, "overlay": False}


class _NoSendOutbox(Outbox):
    """The real outbox, with sending switched off (only queueing is under test)."""

    def send_due(self, now=None) -> int:
        return 0


@pytest.fixture
def env(tmp_path: Path):
    cfg = NodeConfig(data_dir=tmp_path / "data")
    cfg.data_dir.mkdir(parents=True)
    idx = Index(cfg.index_path)
    queue = JobQueue(idx)
    outbox = _NoSendOutbox(cfg.outbox_db, cfg.outbox_dir)
    runner = Runner(cfg, idx, queue, outbox,
                    executor_factory=lambda n: cf.ThreadPoolExecutor(max_workers=n),
                    poll_s=0.05, send_interval_s=0.05)
    yield cfg, queue, outbox, runner
    runner.stop()


def _fake_results(tmp_path: Path, monkeypatch=None):
    """A pipeline that 'produces' an SR-like object and two overlay images.

    With ``monkeypatch``, the overlay images come from a follow-up step (as in ms-lesions).
    """
    files = write_series(make_mr_series(3), tmp_path / "results")
    sr = [{"kind": "SR", "overlay": False, "path": str(files[0])}]
    overlay = [{"kind": "OVERLAY", "overlay": True, "path": str(p)} for p in files[1:]]
    base = {"summary": {"lesion_count": 2, "total_volume_mm3": 1500.0},
            "timings_s": {"inference": 0.1}}

    if monkeypatch is not None:
        monkeypatch.setitem(pipeline.PIPELINES, "fake-overlay",
                            lambda job: {**base, "files": sr + overlay})
        return lambda job: {**base, "files": sr, "followup": "fake-overlay"}
    return lambda job: {**base, "files": sr + overlay}


def _wait_state(queue: JobQueue, job_id: str, states=("done", "failed"), timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = queue.get(job_id)
        if job.state in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {queue.get(job_id).state}")


def test_a_failing_job_records_its_reason_and_the_next_job_runs(env, tmp_path, monkeypatch):
    cfg, queue, outbox, runner = env
    ok = _fake_results(tmp_path)

    def flaky(job):
        if job["study_uid"] == "1.2.3":
            raise pipeline.PipelineError("FLAIR series refused: gaps between slices")
        return ok(job)

    monkeypatch.setitem(pipeline.PIPELINES, "ms-lesions", flaky)
    bad = queue.enqueue("1.2.3", "r", "ms-lesions", {"flair": "1.2.3.1"}, [PACS], priority=9)
    good = queue.enqueue("1.2.4", "r", "ms-lesions", {"flair": "1.2.4.1"}, [PACS])
    runner.start()
    bad_job = _wait_state(queue, bad)
    good_job = _wait_state(queue, good)
    assert bad_job.state == "failed"
    assert "gaps between slices" in bad_job.reason
    assert good_job.state == "done"
    assert "2 lesion(s)" in good_job.reason and "1.50 ml" in good_job.reason
    assert len(outbox.items(good)) == 3


def test_overlay_is_switched_off_per_destination(env, tmp_path, monkeypatch):
    """SEG/SR first, overlay from the follow-up step; a destination may refuse the overlay."""
    cfg, queue, outbox, runner = env
    monkeypatch.setitem(pipeline.PIPELINES, "ms-lesions", _fake_results(tmp_path, monkeypatch))
    job_id = queue.enqueue("1.2.5", "r", "ms-lesions", {"flair": "1.2.5.1"}, [PACS, VIEWER])
    runner.start()
    assert _wait_state(queue, job_id).state == "done"
    by_dest: dict[str, int] = {}
    for it in outbox.items(job_id):
        by_dest[it.destination.ae_title] = by_dest.get(it.destination.ae_title, 0) + 1
    assert by_dest == {"PACS": 3, "VIEWER": 1}


def test_a_job_without_usable_destination_fails_before_running(env, monkeypatch):
    cfg, queue, outbox, runner = env
    called = []
    monkeypatch.setitem(pipeline.PIPELINES, "ms-lesions", lambda job: called.append(job))
    unknown = {"sender": True, "ae_title": "MODALITY", "host": "10.0.0.9", "port": None,
               "error": "sender AE 'MODALITY' is not in node.yaml peers (port unknown)"}
    job_id = queue.enqueue("1.2.6", "r", "ms-lesions", {"flair": "1.2.6.1"}, [unknown])
    runner.start()
    job = _wait_state(queue, job_id)
    assert job.state == "failed" and "not in node.yaml peers" in job.reason
    assert called == []


class _DeadWorkerPool(cf.Executor):
    """An executor whose worker 'dies' (as a process pool reports an OOM-killed worker)."""

    def submit(self, fn, *args, **kwargs):
        fut: cf.Future = cf.Future()
        fut.set_exception(BrokenProcessPool("a child process terminated abruptly"))
        return fut


def _dead_worker_runner(tmp_path, monkeypatch, pools, **runner_cfg):
    cfg = NodeConfig(data_dir=tmp_path / "data", runner=runner_cfg)
    cfg.data_dir.mkdir(parents=True)
    idx = Index(cfg.index_path)
    queue = JobQueue(idx)
    monkeypatch.setitem(pipeline.PIPELINES, "ms-lesions", _fake_results(tmp_path))
    runner = Runner(cfg, idx, queue, _NoSendOutbox(cfg.outbox_db, cfg.outbox_dir),
                    executor_factory=lambda n: pools.pop(0), poll_s=0.05)
    return queue, runner


def test_a_job_whose_worker_died_runs_again_on_a_fresh_worker(tmp_path, monkeypatch, caplog):
    pools = [_DeadWorkerPool(), cf.ThreadPoolExecutor(max_workers=1)]
    queue, runner = _dead_worker_runner(tmp_path, monkeypatch, pools)
    job_id = queue.enqueue("1.2.7", "r", "ms-lesions", {"flair": "1.2.7.1"}, [PACS])
    with caplog.at_level(logging.ERROR, logger="dicom_node.run.runner"):
        runner.start()
        try:
            job = _wait_state(queue, job_id)
        finally:
            runner.stop()
    assert job.state == "done" and job.attempts == 2
    assert pools == []  # the second (fresh) pool ran it
    assert any("worker process died" in r.getMessage() and "runs again (attempt 2 of at most 2)"
               in r.getMessage() for r in caplog.records)


def test_a_job_that_kills_every_worker_fails_and_a_fresh_worker_takes_the_next(tmp_path,
                                                                                monkeypatch):
    pools = [_DeadWorkerPool(), _DeadWorkerPool(), cf.ThreadPoolExecutor(max_workers=1)]
    queue, runner = _dead_worker_runner(tmp_path, monkeypatch, pools)
    first = queue.enqueue("1.2.7", "r", "ms-lesions", {"flair": "1.2.7.1"}, [PACS], priority=9)
    second = queue.enqueue("1.2.8", "r", "ms-lesions", {"flair": "1.2.8.1"}, [PACS])
    runner.start()
    try:
        job = _wait_state(queue, first)
        assert job.state == "failed" and job.attempts == 2
        assert "worker process died" in job.reason
        assert _wait_state(queue, second).state == "done"
    finally:
        runner.stop()


def test_no_retry_when_the_admin_sets_none(tmp_path, monkeypatch):
    pools = [_DeadWorkerPool(), cf.ThreadPoolExecutor(max_workers=1)]
    queue, runner = _dead_worker_runner(tmp_path, monkeypatch, pools, worker_death_retries=0)
    job_id = queue.enqueue("1.2.7", "r", "ms-lesions", {"flair": "1.2.7.1"}, [PACS])
    runner.start()
    try:
        job = _wait_state(queue, job_id)
    finally:
        runner.stop()
    assert job.state == "failed" and job.attempts == 1 and "worker process died" in job.reason


@pytest.mark.parametrize("die,said", [((signal.raise_signal, signal.SIGKILL), "signal SIGKILL"),
                                      ((os._exit, 3), "exit code 3")])
def test_how_a_real_worker_ended_is_named(die, said):
    """What the log says of a worker that the kernel killed (as the OOM killer does) or that exited."""
    from dicom_node.run.runner import _how_workers_ended

    pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        fut = pool.submit(*die)
        with pytest.raises(BrokenProcessPool) as err:
            fut.result(timeout=60)
        assert _how_workers_ended(pool, err.value) == f"worker ended by {said}"
    finally:
        pool.shutdown(wait=False)
