"""Prometheus metrics and a small HTTP endpoint (``/healthz``, ``/metrics``) for the node.

The node's components update module-level metrics; ``serve`` starts the HTTP thread once::

    from dicom_node.ops import metrics
    srv = metrics.start_http(cfg.http.port, spool_dir=cfg.data_dir,
                             min_free_bytes=cfg.min_free_disk_mb * 2**20,
                             jobs_source=lambda: {"queued": 3, "running": 1})
    metrics.INSTANCES_RECEIVED.inc()                 # SCP, per instance stored
    metrics.SERIES_COMPLETED.inc()                   # completion timer fired
    metrics.observe_stage("inference", 4.2)          # or: with metrics.time_stage("inference"):
    metrics.set_jobs_by_state({"queued": 2, "done": 5})
    metrics.SEND_FAILURES.inc()                      # sender, per failed C-STORE attempt
    srv.stop()

All metrics live in a dedicated registry (:data:`REGISTRY`), so importing this module twice or
running several nodes in one test process never raises "duplicated timeseries". Port ``0``
means "off", as in ``node.yaml`` (``http.port: 0``): :func:`start_http` then returns ``None``.

``/healthz`` answers ``200`` and a JSON object ``{"status": "ok", ...}`` while the node is fit to
receive, ``503`` with ``"status": "degraded"`` and the failing checks otherwise (spool below its
free-space threshold, or a registered check such as "SCP listening" failing). The spool free
space gauge is refreshed at scrape time, never by a background loop.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
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


def live_snapshot(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> dict[str, Any] | None:
    """Figures of a *running* node, read from its ``/healthz`` and ``/metrics`` endpoint.

    For ``dicom-node status``, which runs in another process than ``serve`` (counters live in
    the serving process). ``host`` ``0.0.0.0`` is read as loopback.

    Returns
    -------
    dict or None
        The keys of :func:`snapshot` plus ``health`` (the ``/healthz`` document), or ``None``
        when nothing answers on that port.
    """
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    if not port:
        return None
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    base = f"http://{host}:{int(port)}"
    try:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=timeout) as r:
                health_doc = json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 503 still carries the document
            health_doc = json.loads(exc.read() or b"{}")
        with urllib.request.urlopen(base + "/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except (OSError, ValueError):
        return None
    values: dict[str, float] = {}
    jobs: dict[str, int] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == "dicom_node_jobs":
                jobs[sample.labels.get("state", "?")] = int(sample.value)
            elif not sample.labels:
                values[sample.name] = sample.value
    free = values.get("dicom_node_spool_free_bytes")
    return {
        "instances_received": int(values.get("dicom_node_instances_received_total", 0)),
        "instances_failed": int(values.get("dicom_node_instances_failed_total", 0)),
        "series_completed": int(values.get("dicom_node_series_completed_total", 0)),
        "instances_sent": int(values.get("dicom_node_instances_sent_total", 0)),
        "send_failures": int(values.get("dicom_node_send_failures_total", 0)),
        "jobs": jobs,
        "spool_free_bytes": int(free) if free is not None else None,
        "uptime_s": health_doc.get("uptime_s"),
        "health": health_doc,
    }


class MetricsServer:
    """The running HTTP endpoint; :attr:`port` is the bound port, :meth:`stop` shuts it down."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        host, port = httpd.server_address[:2]
        self.host: str = host if isinstance(host, str) else host.decode()
        self.port: int = int(port)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9102``."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and join the thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)


def _make_handler(min_free_bytes: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "dicom-node-metrics"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/healthz", "/health"):
                ok, body = health(min_free_bytes)
                self._send(200 if ok else 503, "application/json",
                           (json.dumps(body) + "\n").encode())
            elif path == "/metrics":
                refresh()
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
            elif path == "/":
                self._send(200, "text/plain; charset=utf-8",
                           b"dicom-node: see /healthz and /metrics\n")
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def do_HEAD(self) -> None:
            self.do_GET()

        def _send(self, code: int, ctype: str, payload: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("http %s " + fmt, self.client_address[0], *args)

    return Handler


def start_http(
    port: int,
    host: str = "0.0.0.0",
    *,
    spool_dir: str | os.PathLike[str] | None = None,
    min_free_bytes: int = 0,
    jobs_source: Callable[[], Mapping[str, int]] | None = None,
    info: Mapping[str, str] | None = None,
) -> MetricsServer | None:
    """Serve ``/healthz`` and ``/metrics`` on ``host:port`` in a daemon thread.

    Parameters
    ----------
    port : int
        TCP port; ``0`` means off (as ``http.port: 0`` in node.yaml) and returns ``None``.
    host : str
        Address to bind (``0.0.0.0`` for all, ``127.0.0.1`` for local scrapers only).
    spool_dir : path, optional
        Directory whose file system's free space is reported (``dicom_node_spool_free_bytes``).
    min_free_bytes : int
        Free-space threshold for ``/healthz`` (node config ``min_free_disk_mb`` in bytes).
    jobs_source : callable, optional
        Returns ``{state: count}``; called at each scrape to fill ``dicom_node_jobs``.
    info : mapping, optional
        Static labels for ``dicom_node_build_info`` and ``/healthz`` (e.g. version, ae_title).

    Returns
    -------
    MetricsServer or None
        The running server (``.port``, ``.url``, ``.stop()``), or ``None`` when ``port == 0``.

    Raises
    ------
    OSError
        The port cannot be bound (in use, no permission).
    """
    if not port:
        return None
    if spool_dir is not None:
        set_spool_dir(spool_dir)
    if jobs_source is not None:
        set_jobs_source(jobs_source)
    if info:
        BUILD_INFO.info({str(k): str(v) for k, v in info.items()})
    set_jobs_by_state({})
    httpd = ThreadingHTTPServer((host, int(port)), _make_handler(int(min_free_bytes)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    srv = MetricsServer(httpd, thread)
    log.info("metrics: serving /healthz and /metrics on %s:%d", host, srv.port)
    return srv
