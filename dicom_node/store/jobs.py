"""Study job queue in SQLite (the index database, table ``jobs``).

States: ``queued`` -> ``running`` -> ``done`` | ``failed``; ``requeue`` puts a job back to
``queued`` (retry), ``requeue_running`` does that at start-up for jobs a crash left running.

``job_key`` identifies a job's *input*: study UID, rule and, per role, the series UID and a digest
of its instance set. Enqueuing a job whose key already exists returns the existing job (no
duplicate). When a completed series re-opens and re-completes with other instances, the key
changes and a new job (``version`` + 1) is queued; its outputs get new UIDs when the pipeline
derives them from ``job_key``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterable, Mapping

from dicom_node.store.schema import connect

__all__ = ["Job", "JobQueue", "JobState", "JOB_STATES", "make_job_key"]



class JobState(StrEnum):
    """State of a study job: ``queued`` -> ``running`` -> ``done`` | ``failed``."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


JOB_STATES: tuple[JobState, ...] = tuple(JobState)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    job_key TEXT,
    study_uid TEXT NOT NULL,
    rule TEXT,
    pipeline TEXT,
    inputs TEXT NOT NULL,
    destinations TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'queued',
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1,
    calling_ae TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    alternates TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, priority, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_key ON jobs(job_key);
"""


def make_job_key(study_uid: str, rule: str, inputs: dict[str, str],
                 instance_sets: Mapping[str, Iterable[str]] | None = None) -> str:
    """Deterministic key of a job's input (sha256 hex).

    Parameters
    ----------
    study_uid, rule : str
    inputs : dict
        ``{role: series_uid}``.
    instance_sets : dict, optional
        ``{series_uid: SOP Instance UIDs}``; included so that a series that changed gives a new key.
    """
    h = hashlib.sha256()
    h.update(study_uid.encode())
    h.update(b"\0" + rule.encode())
    for role in sorted(inputs):
        suid = inputs[role]
        h.update(b"\0" + role.encode() + b"=" + suid.encode())
        if instance_sets and suid in instance_sets:
            for uid in sorted(instance_sets[suid]):
                h.update(b"\1" + uid.encode())
    return h.hexdigest()


@dataclass
class Job:
    """A queued study job (see module docstring for states)."""

    id: str
    study_uid: str
    rule: str
    pipeline: str
    inputs: dict[str, str]
    destinations: list[dict[str, Any]]
    priority: int
    state: JobState
    reason: str | None
    attempts: int
    created_at: float
    updated_at: float
    calling_ae: str | None = None
    job_key: str | None = None
    version: int = 1
    #: role -> further qualifying series UIDs, in the rule's order of preference after the chosen
    #: one: the pipeline falls back to them when the chosen series cannot be read.
    alternates: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        return cls(
            id=row["id"], study_uid=row["study_uid"], rule=row["rule"], pipeline=row["pipeline"],
            inputs=json.loads(row["inputs"]), destinations=json.loads(row["destinations"]),
            priority=row["priority"], state=JobState(row["state"]), reason=row["reason"],
            attempts=row["attempts"], created_at=row["created_at"], updated_at=row["updated_at"],
            calling_ae=row["calling_ae"], job_key=row["job_key"], version=row["version"],
            alternates=json.loads(row["alternates"] or "{}") if "alternates" in row.keys() else {},
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class JobQueue:
    """SQLite-backed job queue.

    Parameters
    ----------
    index_or_db_path : Index or Path or str
        An :class:`dicom_node.store.index.Index` (its database is used) or a database path.
    """

    def __init__(self, index_or_db_path: Any) -> None:
        path = getattr(index_or_db_path, "path", index_or_db_path)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)
        cols = {r["name"] for r in self._conn().execute("PRAGMA table_info(jobs)")}
        if "alternates" not in cols:  # an index written before alternates were kept
            self._conn().execute("ALTER TABLE jobs ADD COLUMN alternates TEXT")

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = connect(self.path)  # synchronous FULL: job states matter
        return c

    def enqueue(
        self,
        study_uid: str,
        rule: str,
        pipeline: str,
        inputs: dict[str, str],
        destinations: list[dict[str, Any]],
        priority: int = 0,
        *,
        calling_ae: str | None = None,
        job_key: str | None = None,
        alternates: dict[str, list[str]] | None = None,
    ) -> str:
        """Queue a job; return its id (the existing job's id if ``job_key`` is already known).

        Higher ``priority`` runs first. ``alternates``: per role, the other qualifying series
        in order of preference (see :attr:`Job.alternates`).
        """
        key = job_key or make_job_key(study_uid, rule, inputs)
        now = time.time()
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute("SELECT id FROM jobs WHERE job_key=?", (key,)).fetchone()
            if row is not None:
                c.execute("COMMIT")
                return row["id"]
            prev = c.execute(
                "SELECT max(version) AS v FROM jobs WHERE study_uid=? AND rule=?",
                (study_uid, rule),
            ).fetchone()
            version = (prev["v"] or 0) + 1
            job_id = uuid.uuid4().hex[:12]
            c.execute(
                "INSERT INTO jobs(id, job_key, study_uid, rule, pipeline, inputs, destinations,"
                " priority, state, attempts, version, calling_ae, created_at, updated_at,"
                " alternates) VALUES(?,?,?,?,?,?,?,?,'queued',0,?,?,?,?,?)",
                (job_id, key, study_uid, rule, pipeline, json.dumps(inputs, sort_keys=True),
                 json.dumps(destinations), int(priority), version, calling_ae, now, now,
                 json.dumps(alternates or {}, sort_keys=True)),
            )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return job_id

    def claim_next(self) -> Job | None:
        """Atomically move the best queued job to ``running`` and return it (or None)."""
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute(
                "SELECT * FROM jobs WHERE state='queued' ORDER BY priority DESC, created_at, id "
                "LIMIT 1"
            ).fetchone()
            if row is None:
                c.execute("COMMIT")
                return None
            now = time.time()
            c.execute(
                "UPDATE jobs SET state='running', attempts=attempts+1, reason=NULL, updated_at=? "
                "WHERE id=?",
                (now, row["id"]),
            )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return self.get(row["id"])

    def _set(self, job_id: str, state: JobState, reason: str | None, only_from: tuple[JobState, ...] = ()
             ) -> bool:
        q = "UPDATE jobs SET state=?, reason=?, updated_at=? WHERE id=?"
        args: list[Any] = [state, reason, time.time(), job_id]
        if only_from:
            q += " AND state IN (%s)" % ",".join("?" * len(only_from))
            args += list(only_from)
        cur = self._conn().execute(q, args)
        return cur.rowcount > 0

    def mark_done(self, job_id: str, reason: str | None = None) -> None:
        """Mark a job ``done`` (``reason``: optional note, e.g. "no lesions")."""
        if not self._set(job_id, JobState.DONE, reason):
            raise KeyError(job_id)

    def mark_failed(self, job_id: str, reason: str) -> None:
        """Mark a job ``failed`` with a human-readable reason."""
        if not self._set(job_id, JobState.FAILED, reason):
            raise KeyError(job_id)

    def requeue(self, job_id: str, reason: str | None = None) -> None:
        """Put a job back to ``queued`` (retry)."""
        if not self._set(job_id, JobState.QUEUED, reason):
            raise KeyError(job_id)

    def requeue_running(self) -> int:
        """At start-up: jobs left ``running`` by a crash go back to ``queued``; return count."""
        cur = self._conn().execute(
            "UPDATE jobs SET state='queued', reason='requeued after restart', updated_at=? "
            "WHERE state='running'",
            (time.time(),),
        )
        return cur.rowcount

    def get(self, job_id: str) -> Job | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def list(self, state: str | None = None, study_uid: str | None = None) -> list[Job]:
        q = "SELECT * FROM jobs"
        cond, args = [], []
        if state:
            cond.append("state=?")
            args.append(state)
        if study_uid:
            cond.append("study_uid=?")
            args.append(study_uid)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        q += " ORDER BY created_at, id"
        return [Job.from_row(r) for r in self._conn().execute(q, args).fetchall()]
