"""``dicom-node retry``: run a job again (re-send its dead deliveries, or re-queue it)."""

from __future__ import annotations

import argparse
import sys

from dicom_node.cli.common import add_config_option, load_or_exit
from dicom_node.store.jobs import JobState


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``retry`` command."""
    s = sub.add_parser("retry", help="run a job again")
    s.add_argument("job", help="job id (see `dicom-node status`)")
    add_config_option(s)
    s.set_defaults(func=cmd_retry)


def cmd_retry(args: argparse.Namespace) -> int:
    """Run a job again: dead deliveries of a done job are re-sent, otherwise the job is
    re-queued and a running node picks it up (same input and model: same output UIDs)."""
    from dicom_node.store.index import Index
    from dicom_node.store.jobs import JobQueue

    cfg = load_or_exit(args.config)
    queue = JobQueue(Index(cfg.index_path))
    job = queue.get(args.job)
    if job is None:
        print(f"error: no job {args.job!r}", file=sys.stderr)
        return 2
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        print(f"job {job.id} is already {job.state}")
        return 0
    if job.state == JobState.DONE and cfg.outbox_db.exists():
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
