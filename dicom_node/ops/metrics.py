"""Prometheus metrics and health checks of the node (served by :mod:`dicom_node.ops.endpoint`).

The node's components update module-level metrics; ``serve`` starts the HTTP endpoint once::

    from dicom_node.ops import endpoint, metrics
    srv = endpoint.start_http(cfg.http.port, spool_dir=cfg.data_dir,
                              min_free_bytes=cfg.min_free_disk_mb * 2**20,
                              jobs_source=lambda: {"queued": 3, "running": 1})
    metrics.INSTANCES_RECEIVED.inc()                 # SCP, per instance stored
    metrics.SERIES_COMPLETED.inc()                   # completion timer fired
    metrics.observe_stage("inference", 4.2)          # or: with metrics.time_stage("inference"):
    metrics.set_jobs_by_state({"queued": 2, "done": 5})
    metrics.SEND_FAILURES.inc()                      # sender, per failed C-STORE attempt
    srv.stop()

All metrics live in a dedicated registry (:data:`REGISTRY`), so importing this module twice or
running several nodes in one test process never raises "duplicated timeseries".

:func:`health` is the document of ``/healthz``: ``ok`` while the node is fit to receive,
``degraded`` with the failing checks otherwise (spool below its free-space threshold, or a
registered check such as "SCP listening" failing). The spool free space gauge is refreshed at
scrape time (:func:`refresh`), never by a background loop.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from dicom_node.store.jobs import JOB_STATES

log = logging.getLogger(__name__)

#: Stage names used by the runner/sender; any other name is accepted too.
STAGES: tuple[str, ...] = (
    "completion_wait", "load", "preprocess", "inference", "postprocess", "encode", "send", "job",
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

BUILD_INFO = Info("dicom_node_build", "Node version and identity", registry=REGISTRY)
INSTANCES_RECEIVED = Counter(
    "dicom_node_instances_received", "DICOM instances stored in the spool (C-STORE success)",
    registry=REGISTRY,
)
INSTANCES_FAILED = Counter(
    "dicom_node_instances_failed", "C-STORE requests answered with a failure status",
    registry=REGISTRY,
)
ASSOCIATIONS_REJECTED = Counter(
    "dicom_node_associations_rejected", "Associations rejected (unknown peer, low disk)",
    ["reason"], registry=REGISTRY,
)
SERIES_COMPLETED = Counter(
    "dicom_node_series_completed", "Series declared complete (quiet period or known size)",
    registry=REGISTRY,
)
JOBS = Gauge("dicom_node_jobs", "Jobs in the queue by state", ["state"], registry=REGISTRY)
STAGE_SECONDS = Histogram(
    "dicom_node_stage_duration_seconds", "Duration of pipeline stages", ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, float("inf")),
    registry=REGISTRY,
)
INSTANCES_SENT = Counter(
    "dicom_node_instances_sent", "Result instances C-STOREd successfully to a destination",
    registry=REGISTRY,
)
SEND_FAILURES = Counter(
    "dicom_node_send_failures", "Failed C-STORE attempts of result instances (retried later)",
    registry=REGISTRY,
)
OUTBOX_DEAD = Gauge(
    "dicom_node_outbox_dead", "Result instances in the dead-letter state", registry=REGISTRY,
)
OUTBOX_OLDEST_UNDELIVERED = Gauge(
    "dicom_node_outbox_oldest_undelivered_seconds",
    "Age of the oldest result instance not yet delivered (pending or dead), 0 when none "
    "(at scrape time)", registry=REGISTRY,
)
SPOOL_FREE_BYTES = Gauge(
    "dicom_node_spool_free_bytes", "Free bytes on the spool file system (at scrape time)",
    registry=REGISTRY,
)

_state_lock = threading.Lock()
_spool_dir: Path | None = None
_jobs_source: Callable[[], Mapping[str, int]] | None = None
_outbox_source: Callable[[], Mapping[str, float]] | None = None
_checks: dict[str, Callable[[], bool | tuple[bool, str]]] = {}
_started_at = time.time()


def observe_stage(name: str, seconds: float) -> None:
    """Record the duration of one pipeline stage.

    Parameters
    ----------
    name : str
        Stage name, e.g. ``"inference"`` (see :data:`STAGES`).
    seconds : float
        Wall-clock duration in seconds (negative values are clipped to 0).
    """
    STAGE_SECONDS.labels(stage=name).observe(max(0.0, float(seconds)))


@contextmanager
def time_stage(name: str) -> Iterator[None]:
    """Context manager recording the duration of the enclosed block as stage ``name``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        observe_stage(name, time.perf_counter() - t0)


def set_jobs_by_state(counts: Mapping[str, int]) -> None:
    """Set the ``dicom_node_jobs{state=...}`` gauge; known states missing from ``counts`` -> 0."""
    for state in set(JOB_STATES) | set(counts):  # every state reported (0 when absent)
        JOBS.labels(state=state).set(int(counts.get(state, 0)))


def set_spool_dir(path: str | os.PathLike[str] | None) -> None:
    """Tell the metrics which directory's file system is the spool (for free-space reporting)."""
    global _spool_dir
    with _state_lock:
        _spool_dir = Path(path) if path is not None else None


def set_jobs_source(source: Callable[[], Mapping[str, int]] | None) -> None:
    """Register a callable returning ``{state: count}``, called at every scrape / health check."""
    global _jobs_source
    with _state_lock:
        _jobs_source = source


def set_outbox_source(source: Callable[[], Mapping[str, float]] | None) -> None:
    """Register a callable returning ``{"dead": n, "oldest_undelivered_s": s}``, called at
    every scrape."""
    global _outbox_source
    with _state_lock:
        _outbox_source = source


def register_check(name: str, check: Callable[[], bool | tuple[bool, str]]) -> None:
    """Add a health check, e.g. ``register_check("scp", lambda: scp_thread.is_alive())``.

    The callable returns ``True``/``False`` or ``(ok, detail)``; an exception counts as failed.
    """
    with _state_lock:
        _checks[name] = check


def unregister_check(name: str) -> None:
    """Remove a health check registered with :func:`register_check` (no error if absent)."""
    with _state_lock:
        _checks.pop(name, None)


def spool_free_bytes() -> int | None:
    """Free bytes on the spool's file system, or ``None`` when no spool is set or it is missing."""
    with _state_lock:
        spool = _spool_dir
    if spool is None:
        return None
    probe = spool
    while not probe.exists() and probe != probe.parent:  # not created yet: report its parent fs
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def refresh() -> None:
    """Refresh scrape-time gauges (spool free space, jobs by state from the registered source)."""
    free = spool_free_bytes()
    if free is not None:
        SPOOL_FREE_BYTES.set(free)
    with _state_lock:
        source, outbox = _jobs_source, _outbox_source
    if source is not None:
        try:
            set_jobs_by_state(source())
        except Exception as exc:  # noqa: BLE001 - a broken source must not break /metrics
            log.warning("metrics: jobs source failed: %s", exc)
    if outbox is not None:
        try:
            figures = outbox()
            OUTBOX_DEAD.set(figures.get("dead", 0))
            OUTBOX_OLDEST_UNDELIVERED.set(figures.get("oldest_undelivered_s", 0.0))
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: outbox source failed: %s", exc)


def _counter_value(counter: Counter) -> float:
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                return sample.value
    return 0.0


def snapshot() -> dict[str, Any]:
    """Current figures as a plain dict (what ``dicom-node status --json`` may print).

    Returns
    -------
    dict
        ``instances_received``, ``instances_failed``, ``series_completed``, ``instances_sent``,
        ``send_failures``, ``jobs`` ({state: count}), ``spool_free_bytes``, ``uptime_s``.
    """
    refresh()
    jobs: dict[str, int] = {}
    for metric in JOBS.collect():
        for sample in metric.samples:
            jobs[sample.labels["state"]] = int(sample.value)
    return {
        "instances_received": int(_counter_value(INSTANCES_RECEIVED)),
        "instances_failed": int(_counter_value(INSTANCES_FAILED)),
        "series_completed": int(_counter_value(SERIES_COMPLETED)),
        "instances_sent": int(_counter_value(INSTANCES_SENT)),
        "send_failures": int(_counter_value(SEND_FAILURES)),
        "jobs": jobs,
        "spool_free_bytes": spool_free_bytes(),
        "uptime_s": round(time.time() - _started_at, 1),
    }


def health(min_free_bytes: int = 0) -> tuple[bool, dict[str, Any]]:
    """Evaluate the health checks.

    Parameters
    ----------
    min_free_bytes : int
        Spool free-space threshold below which the node refuses new associations; below it the
        node is reported degraded.

    Returns
    -------
    (ok, body)
        ``ok`` is False when any check fails; ``body`` is the JSON document of ``/healthz``.
    """
    checks: dict[str, dict[str, Any]] = {}
    free = spool_free_bytes()
    if free is not None:
        checks["spool_free"] = {
            "ok": free >= min_free_bytes, "free_bytes": free, "min_free_bytes": min_free_bytes,
        }
    with _state_lock:
        registered = dict(_checks)
    for name, fn in registered.items():
        try:
            res = fn()
            ok, detail = (res if isinstance(res, tuple) else (bool(res), ""))
        except Exception as exc:  # noqa: BLE001 - best effort: any failure gives the fallback
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        checks[name] = {"ok": bool(ok), **({"detail": detail} if detail else {})}
    ok = all(c["ok"] for c in checks.values())
    body: dict[str, Any] = {
        "status": "ok" if ok else "degraded",
        "uptime_s": round(time.time() - _started_at, 1),
        "checks": checks,
    }
    info = _build_info()
    if info:
        body.update(info)
    return ok, body


def _build_info() -> dict[str, str]:
    for metric in BUILD_INFO.collect():
        for sample in metric.samples:
            return dict(sample.labels)
    return {}
