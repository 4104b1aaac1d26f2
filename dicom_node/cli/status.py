"""``dicom-node status``: print series, jobs and outbox (and the live counters of a running node)."""

from __future__ import annotations

import argparse
import json
import time

from dicom_node.cli.common import add_config_option, load_or_exit
from dicom_node.config import NodeConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``status`` command."""
    s = sub.add_parser("status", help="list series and jobs")
    add_config_option(s)
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.set_defaults(func=cmd_status)


def _fmt_t(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


_SERIES_KEYS = ("series_uid", "study_uid", "modality", "series_description", "contrast", "state",
                "n_instances", "expected_instances", "first_received_at", "last_received_at",
                "completed_at", "complete_delay_s", "completion_reason", "completions",
                "calling_ae")


def status_dict(cfg: NodeConfig) -> dict:
    """What ``dicom-node status --json`` prints, as a dict.

    Parameters
    ----------
    cfg : NodeConfig
        The node's configuration: its index and outbox are read from ``cfg.data_dir`` (the node
        may be running), its live counters from its HTTP endpoint when ``cfg.http.port`` is
        set.

    Returns
    -------
    dict
        ``series`` (one dict per series, the columns of ``_SERIES_KEYS``), ``jobs`` (one per
        job, oldest first), ``outbox`` (counts, and every item not yet sent) and ``live`` (the
        running node's counters, or None).
    """
    from dicom_node.store.index import Index
    from dicom_node.store.jobs import JobQueue

    series: list[dict] = []
    jobs: list[dict] = []
    if cfg.index_path.exists():
        idx = Index(cfg.index_path)
        try:
            series = [{k: s[k] for k in _SERIES_KEYS} for s in idx.list_series()]
            jobs = [j.to_dict() for j in JobQueue(idx).list()]
        finally:
            idx.close()
    live = None
    if cfg.http.port:  # counters live in the serving process: read them from its endpoint
        from dicom_node.ops.endpoint import live_snapshot

        live = live_snapshot(cfg.http.port, cfg.http.host)
    return {"series": series, "jobs": jobs, "outbox": _outbox_status(cfg), "live": live}


def cmd_status(args: argparse.Namespace) -> int:
    """Print series (uid, contrast, state, instances) and jobs (id, state, reason)."""
    cfg = load_or_exit(args.config)
    st = status_dict(cfg)
    series, jobs, outbox, live = st["series"], st["jobs"], st["outbox"], st["live"]
    if args.json:
        print(json.dumps(st, indent=None, default=str))
        return 0
    if live is not None:
        free = live.get("spool_free_bytes")
        print(f"Node: {live.get('health', {}).get('status', '?')}, up {live.get('uptime_s', 0):.0f} s;"
              f" received {live.get('instances_received', 0)} instance(s)"
              f" ({live.get('instances_failed', 0)} failed), {live.get('series_completed', 0)}"
              f" series completed, sent {live.get('instances_sent', 0)}"
              f" ({live.get('send_failures', 0)} send failures), spool free "
              + (f"{free / 2**30:.1f} GiB" if free is not None else "?"))
    elif cfg.http.port:
        print(f"Node: not answering on http://{cfg.http.host}:{cfg.http.port} (not running?)")
    print(f"Series ({len(series)})")
    print(f"  {'series_uid':<64} {'contrast':<10} {'state':<10} {'n':>5}  description")
    for s in series:
        print(f"  {s['series_uid']:<64} {s['contrast'] or '-':<10} {s['state']:<10} "
              f"{s['n_instances']:>5}  {s['series_description'] or ''}")
    print(f"Jobs ({len(jobs)})")
    print(f"  {'id':<12} {'state':<8} {'rule':<20} {'v':>2}  reason")
    for j in jobs:
        print(f"  {j['id']:<12} {j['state']:<8} {j['rule'] or '-':<20} {j['version']:>2}  "
              f"{j['reason'] or ''}")
    c = outbox["counts"]
    print(f"Outbox (pending {c.get('pending', 0)}, sent {c.get('sent', 0)}, "
          f"dead {c.get('dead', 0)})")
    for it in outbox["items"]:
        print(f"  {it['job_id']:<12} {it['state']:<8} {it['destination']:<32} "
              f"attempts {it['attempts']}  {it['last_error'] or ''}")
    return 0


def _outbox_status(cfg: NodeConfig) -> dict:
    """Outbox counts, plus every item that is not yet sent (pending or dead)."""
    if not cfg.outbox_db.exists():
        return {"counts": {}, "items": []}
    from dicom_node.send.outbox import Outbox, OutboxState

    ob = Outbox(cfg.outbox_db, cfg.outbox_dir)
    try:
        items = [it for it in ob.items() if it.state != OutboxState.SENT]
        return {"counts": ob.counts(), "items": [
            {"job_id": it.job_id, "sop_instance_uid": it.sop_instance_uid, "state": it.state,
             "destination": str(it.destination), "attempts": it.attempts,
             "last_error": it.last_error, "next_try": it.next_try} for it in items]}
    finally:
        ob.close()
