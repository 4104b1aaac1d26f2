"""Studies the node retrieved from the PACS as priors (table ``prior_retrievals`` of the index).

A study retrieved to be compared with a follow-up is spooled and indexed like any other, but it
is not routed as a study of its own: nobody asked for its analysis, and results sent into an old
study would surprise the radiologist. :meth:`PriorRegistry.register` is called before the
C-MOVE, so the registration survives a crash in the middle of the retrieval.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from dicom_node.store.index import Index

__all__ = ["PriorRegistry"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS prior_retrievals (
    study_uid TEXT PRIMARY KEY,
    job_id TEXT,
    peer TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    instances INTEGER
);
"""


class PriorRegistry:
    """Which studies were retrieved as priors, for which job, and when."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        return self.index.conn()  # the index's database and per-thread connection

    def register(self, study_uid: str, job_id: str, peer: str) -> None:
        """Record that ``study_uid`` is being retrieved for ``job_id`` (before the C-MOVE)."""
        with self._conn() as c:
            c.execute("INSERT INTO prior_retrievals (study_uid, job_id, peer, started_at) "
                      "VALUES (?, ?, ?, ?) ON CONFLICT(study_uid) DO UPDATE SET "
                      "job_id=excluded.job_id, peer=excluded.peer, started_at=excluded.started_at",
                      (study_uid, job_id, peer, time.time()))

    def finished(self, study_uid: str, instances: int) -> None:
        with self._conn() as c:
            c.execute("UPDATE prior_retrievals SET finished_at=?, instances=? WHERE study_uid=?",
                      (time.time(), instances, study_uid))

    def is_prior(self, study_uid: str) -> bool:
        """True when ``study_uid`` was retrieved as a prior (it is then never routed)."""
        row = self._conn().execute("SELECT 1 FROM prior_retrievals WHERE study_uid=?",
                                   (study_uid,)).fetchone()
        return row is not None

    def get(self, study_uid: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM prior_retrievals WHERE study_uid=?",
                                   (study_uid,)).fetchone()
        return dict(row) if row else None
