"""How processes get memory (``ai.memory``, ``runner.allocator``): what a worker applies, and
that the tuned allocation changes no result."""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

PROBE = """
import json, sys
from ai import memory
before = memory.numpy_hugepage_advice()
applied = memory.tune(sys.argv[1])
print(json.dumps({"before": before, "after": memory.numpy_hugepage_advice(), "applied": applied,
                  "released": memory.release()}))
"""


def _probe(allocator: str) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, allocator], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the tuned allocation is glibc's (Linux)")
def test_tuned_switches_numpy_huge_pages_off_and_sets_glibc_system_changes_nothing():
    tuned = _probe("tuned")
    assert tuned["applied"] == {"numpy_hugepage_off": True, "glibc_keep": True}
    assert tuned["after"] is False
    system = _probe("system")
    assert system["applied"] == {"numpy_hugepage_off": False, "glibc_keep": False}
    assert system["after"] == system["before"]  # numpy's own default, untouched


def test_an_unknown_allocator_is_refused_by_name():
    from ai.memory import tune

    with pytest.raises(ValueError, match="tuned, system"):
        tune("jemalloc")


def test_the_config_defaults_to_tuned_and_refuses_other_values(tmp_path):
    from dicom_node.config import ConfigError, load_config

    base = (REPO / "config" / "node.yaml").read_text()
    assert load_config(REPO / "config" / "node.yaml").runner.allocator == "tuned"
    bad = tmp_path / "node.yaml"
    bad.write_text(base.replace("allocator: tuned", "allocator: fastest"))
    with pytest.raises(ConfigError, match="allocator"):
        load_config(bad)


def test_a_worker_applies_runner_allocator_at_start_up():
    """The node's worker processes (spawned, as the runner starts them) get the allocation
    that ``runner.allocator`` names."""
    from ai.memory import numpy_hugepage_advice
    from dicom_node.run.runner import _worker_init

    ctx = multiprocessing.get_context("spawn")
    seen = {}
    for allocator in ("tuned", "system"):
        with cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=_worker_init,
                                    initargs=(1, ("text", "WARNING", None), allocator)) as pool:
            seen[allocator] = pool.submit(numpy_hugepage_advice).result(timeout=120)
    assert seen["tuned"] is False
    assert seen["system"] is not False or numpy_hugepage_advice() is None


def test_an_idle_worker_releases_its_kept_heap_and_a_new_job_cancels_the_pending_release(monkeypatch):
    from dicom_node.run import pipeline, runner

    monkeypatch.setattr(runner, "_ALLOCATOR", "tuned")
    monkeypatch.setattr(runner, "RELEASE_AFTER_IDLE_S", 30.0)
    monkeypatch.setitem(pipeline.PIPELINES, "probe", lambda payload: {"ok": payload["n"]})
    assert runner._worker_run("probe", {"n": 1}) == {"ok": 1}
    first = runner._release_timer
    assert first is not None and first.is_alive()  # scheduled, not yet run
    assert runner._worker_run("probe", {"n": 2}) == {"ok": 2}
    assert not first.is_alive() and first.finished.is_set()  # cancelled by the second job
    monkeypatch.setattr(runner, "RELEASE_AFTER_IDLE_S", 0.05)
    with pytest.raises(KeyError):
        runner._worker_run("probe", {})  # a failed job schedules the release too
    last = runner._release_timer
    assert last is not None and last is not first
    last.join(timeout=5)
    assert not last.is_alive()  # it ran: the heap went back to the kernel on the timer's thread
    monkeypatch.setattr(runner, "_release_timer", None)


@pytest.mark.skipif(not GLIBC, reason="the tuned allocation is glibc's (Linux)")
def test_the_model_gives_the_same_lesions_with_either_allocation(tmp_path):
    """The allocation moves bytes, not results: a phantom segmented in a tuned and in a system
    process gives identical lesion labels and probabilities."""
    script = """
import hashlib, json, sys
from ai import memory
memory.tune(sys.argv[1])
from ai.synth import make_phantom
from ai.infer import Segmenter
ph = make_phantom(7, shape=(48, 112, 96))
seg = Segmenter(None, device="cpu", threads=1)
res = seg.segment(ph.image(ph.flair), ph.image(ph.t1))
print(json.dumps({"n": len(res.lesions), "labels": hashlib.sha256(res.labels.tobytes()).hexdigest(),
                  "prob": hashlib.sha256(res.probability.tobytes()).hexdigest()}))
"""
    out = {}
    for allocator in ("tuned", "system"):
        r = subprocess.run([sys.executable, "-c", script, allocator], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        out[allocator] = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["tuned"]["n"] > 0
    assert out["tuned"] == out["system"]
