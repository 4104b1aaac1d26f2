"""The node's HTTP endpoint (``/healthz``, ``/metrics``) and the client that reads it.

:func:`start_http` serves :mod:`dicom_node.ops.metrics`' registry and health document in a
daemon thread::

    srv = start_http(cfg.http.port, spool_dir=cfg.data_dir,
                     min_free_bytes=cfg.min_free_disk_mb * 2**20)
    srv.url, srv.port
    srv.stop()

Port ``0`` means "off", as in ``node.yaml`` (``http.port: 0``): :func:`start_http` then returns
``None``. ``/healthz`` answers ``200`` and a JSON object ``{"status": "ok", ...}`` while the node
is fit to receive, ``503`` with ``"status": "degraded"`` and the failing checks otherwise.
:func:`live_snapshot` reads a running node's figures back (``dicom-node status``, another
process than ``serve``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dicom_node.ops.metrics import (
    BUILD_INFO,
    REGISTRY,
    health,
    refresh,
    set_jobs_by_state,
    set_jobs_source,
    set_spool_dir,
)

__all__ = ["MetricsServer", "live_snapshot", "start_http"]

log = logging.getLogger("dicom_node.ops.metrics")  # its lines, as before the split


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
