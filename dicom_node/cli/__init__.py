"""``dicom-node`` command line.

Each subcommand is one ``cmd_<name>(args) -> int`` function plus a few lines in
:func:`build_parser`, so other modules can add theirs with a small edit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

DEFAULT_CONFIG = "config/node.yaml"


def _load(path: str):
    from dicom_node.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the node (Storage SCP, completion, routing) until SIGTERM/SIGINT."""
    from dicom_node.config import ConfigError
    from dicom_node.ops.logsetup import setup_logging

    cfg = _load(args.config)
    if args.port is not None:
        cfg.port = args.port
    setup_logging(cfg.log.format, cfg.log.level, cfg.log.file)
    from dicom_node.service import Node

    try:
        node = Node(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        node.run_forever()
    except OSError as exc:  # e.g. port in use
        print(f"error: cannot start the node: {exc}", file=sys.stderr)
        return 1
    return 0


def _fmt_t(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def cmd_status(args: argparse.Namespace) -> int:
    """Print series (uid, contrast, state, instances) and jobs (id, state, reason)."""
    from dicom_node.store.index import Index
    from dicom_node.store.jobs import JobQueue

    cfg = _load(args.config)
    if not cfg.index_path.exists():
        series, jobs = [], []
    else:
        idx = Index(cfg.index_path)
        series = idx.list_series()
        jobs = [j.to_dict() for j in JobQueue(idx).list()]
    outbox = _outbox_status(cfg)
    live = None
    if cfg.http.port:  # counters live in the serving process: read them from its endpoint
        from dicom_node.ops.metrics import live_snapshot

        live = live_snapshot(cfg.http.port, cfg.http.host)
    if args.json:
        out_series = [
            {k: s[k] for k in ("series_uid", "study_uid", "modality", "series_description",
                               "contrast", "state", "n_instances", "expected_instances",
                               "first_received_at", "last_received_at", "completed_at",
                               "complete_delay_s", "completion_reason", "completions",
                               "calling_ae")}
            for s in series
        ]
        print(json.dumps({"series": out_series, "jobs": jobs, "outbox": outbox, "live": live},
                         indent=None, default=str))
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


def _outbox_status(cfg) -> dict:
    """Outbox counts, plus every item that is not yet sent (pending or dead)."""
    if not cfg.outbox_db.exists():
        return {"counts": {}, "items": []}
    from dicom_node.send.outbox import Outbox

    ob = Outbox(cfg.outbox_db, cfg.outbox_dir)
    try:
        items = [it for it in ob.items() if it.state != "sent"]
        return {"counts": ob.counts(), "items": [
            {"job_id": it.job_id, "sop_instance_uid": it.sop_instance_uid, "state": it.state,
             "destination": str(it.destination), "attempts": it.attempts,
             "last_error": it.last_error, "next_try": it.next_try} for it in items]}
    finally:
        ob.close()


def cmd_retry(args: argparse.Namespace) -> int:
    """Run a job again: dead deliveries of a done job are re-sent, otherwise the job is
    re-queued and a running node picks it up (same input and model: same output UIDs)."""
    from dicom_node.store.index import Index
    from dicom_node.store.jobs import JobQueue

    cfg = _load(args.config)
    queue = JobQueue(Index(cfg.index_path))
    job = queue.get(args.job)
    if job is None:
        print(f"error: no job {args.job!r}", file=sys.stderr)
        return 2
    if job.state in ("queued", "running"):
        print(f"job {job.id} is already {job.state}")
        return 0
    if job.state == "done" and cfg.outbox_db.exists():
        from dicom_node.send.outbox import Outbox

        ob = Outbox(cfg.outbox_db, cfg.outbox_dir)
        revived = ob.retry_dead(job.id)
        ob.close()
        if revived:  # the results exist: deliver them again rather than recompute
            print(f"job {job.id}: {revived} dead outbox item(s) back to pending")
            return 0
    queue.requeue(job.id, "retry requested")
    print(f"job {job.id} re-queued (was {job.state}: {job.reason or '-'})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Orthanc + node + a brain MR study through the whole chain; print the lesion table."""
    from dicom_node.devtools.demo import main_args

    return main_args(args)


def cmd_rules_test(args: argparse.Namespace) -> int:
    """Dry-run the routing rules over DICOM files/folders (no network, no jobs)."""
    from dicom_node.route.rules import rules_test_main

    return rules_test_main(args.paths, args.rules, args.json)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dicom-node",
                                description="MS lesion DICOM AI node (research use only)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the Storage SCP, completion and routing")
    s.add_argument("--config", default=DEFAULT_CONFIG, help="node.yaml (default: %(default)s)")
    s.add_argument("--port", type=int, default=None, help="override the configured port")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("status", help="list series and jobs")
    s.add_argument("--config", default=DEFAULT_CONFIG, help="node.yaml (default: %(default)s)")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("retry", help="run a job again")
    s.add_argument("job", help="job id (see `dicom-node status`)")
    s.add_argument("--config", default=DEFAULT_CONFIG, help="node.yaml (default: %(default)s)")
    s.set_defaults(func=cmd_retry)

    s = sub.add_parser("demo", help="Orthanc + node + a study through the whole chain")
    s.add_argument("--workdir", default="demo-output", help="scratch directory (recreated)")
    s.add_argument("--case", default=None,
                   help="NIfTI case folder (FLAIR.nii.gz, T1.nii.gz); default: "
                        "../shared/data/ms/cross_sectional/patient19 if present, else a phantom")
    s.add_argument("--keep", action="store_true", default=None,
                   help="keep Orthanc and the node running at the end (default when interactive)")
    s.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for results")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("rules", help="routing rules tools")
    rsub = s.add_subparsers(dest="rules_command", required=True)
    t = rsub.add_parser("test", help="dry-run the routing rules over DICOM files/folders")
    t.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders (recursive)")
    t.add_argument("--json", action="store_true", help="one JSON object per line per series")
    t.add_argument("--rules", default=None, help="routing file (default: config/routing.yaml)")
    t.set_defaults(func=cmd_rules_test)

    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)

