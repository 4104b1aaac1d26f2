"""The index's tables, the columns an index of an earlier version lacks, and connections.

The index (:class:`dicom_node.store.index.Index`: patients, studies, series, instances), the job
queue and the prior registry (their own tables, :mod:`.jobs`, :mod:`.priors`) share one SQLite
file in WAL mode; each thread opens its own connection (:func:`connect`). An index made by an
earlier version opens and works: :func:`create` adds the columns it lacks, and a value such a
row lacks reads as "not stored" (an instance without ``routing_header`` has its file read).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

__all__ = ["SCHEMA", "connect", "create"]

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    patient_id TEXT PRIMARY KEY,
    first_seen REAL
);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT,
    study_date TEXT,
    calling_ae TEXT,
    calling_host TEXT,
    first_received_at REAL,
    last_received_at REAL,
    route_pending_since REAL,
    route_deadline REAL
);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT,
    sop_class_uid TEXT,
    series_number INTEGER,
    series_description TEXT,
    header_json TEXT,
    state TEXT NOT NULL DEFAULT 'receiving',
    n_instances INTEGER NOT NULL DEFAULT 0,
    expected_instances INTEGER,
    first_received_at REAL,
    last_received_at REAL,
    completed_at REAL,
    complete_delay_s REAL,
    completion_reason TEXT,
    completions INTEGER NOT NULL DEFAULT 0,
    contrast TEXT,
    info_json TEXT,
    calling_ae TEXT,
    calling_host TEXT
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS series_state ON series(state);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    sop_class_uid TEXT,
    transfer_syntax TEXT,
    instance_number INTEGER,
    path TEXT NOT NULL,
    size INTEGER,
    received_at REAL,
    calling_ae TEXT,
    calling_host TEXT,
    versions INTEGER NOT NULL DEFAULT 1,
    routing_header BLOB
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
"""


def connect(path: Path, synchronous: str | None = None) -> sqlite3.Connection:
    """An autocommit SQLite connection in WAL mode with a 30 s busy timeout and ``Row``s
    (the index and the job queue share one database file; each thread opens its own).

    ``synchronous``: optional ``PRAGMA synchronous`` value (SQLite's default is FULL).
    """
    c = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    c.row_factory = sqlite3.Row
    c.execute("PRAGMA journal_mode=WAL")
    if synchronous:
        c.execute(f"PRAGMA synchronous={synchronous}")
    c.execute("PRAGMA busy_timeout=30000")
    return c


def create(conn: sqlite3.Connection) -> None:
    """Create the index's tables, or add the columns an earlier version's lack."""
    conn.executescript(SCHEMA)
    conn.commit()
    _add_column(conn, "instances", "routing_header", "BLOB")


def _add_column(conn: sqlite3.Connection, table: str, column: str, decl: str) -> None:
    """Add a column an index of an earlier version lacks (another process may add it first)."""
    if column in {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}:
        return
    try:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        log.info("index: column %s.%s added (index of an earlier version)", table, column)
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):
            raise
