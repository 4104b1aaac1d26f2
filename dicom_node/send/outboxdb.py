"""The outbox's table: its schema (and the column an earlier version's lacks), states and rows.

:class:`dicom_node.send.outbox.Outbox` keeps one row per (result instance, destination) in an
SQLite table of its own database file: :func:`open_db` opens it (WAL, ``synchronous=NORMAL``)
and creates or updates the table; :class:`OutboxState` and :class:`OutboxItem` are a row's
state and the row itself (:func:`item_from_row`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from dicom_node.send.destinations import Destination

__all__ = ["OutboxItem", "OutboxState", "item_from_row", "open_db"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    dest_ae TEXT NOT NULL,
    dest_host TEXT NOT NULL,
    dest_port INTEGER NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL,
    retry_since REAL,
    UNIQUE (sop_instance_uid, dest_ae, dest_host, dest_port)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_try);
CREATE INDEX IF NOT EXISTS outbox_job ON outbox (job_id);
"""


class OutboxState(StrEnum):
    """State of an outbox item: ``pending`` -> ``sent``, or ``dead`` after ``max_attempts``."""

    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


@dataclass
class OutboxItem:
    """One (instance, destination) row of the outbox."""

    id: int
    job_id: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    destination: Destination
    path: Path
    state: OutboxState
    attempts: int
    next_try: float
    last_error: str | None
    created_at: float
    updated_at: float
    sent_at: float | None
    retry_since: float | None = None  #: start of the current delivery attempt period


def open_db(path: Path) -> sqlite3.Connection:
    """A connection to the outbox database (shared between threads: the caller locks), with the
    table created, or given the column an earlier version's lacks."""
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30.0)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    cols = {r["name"] for r in db.execute("PRAGMA table_info(outbox)")}
    if "retry_since" not in cols:  # an outbox from an earlier version
        db.execute("ALTER TABLE outbox ADD COLUMN retry_since REAL")
    return db


def item_from_row(row: sqlite3.Row) -> OutboxItem:
    """The :class:`OutboxItem` of a table row."""
    return OutboxItem(
        id=row["id"], job_id=row["job_id"], sop_instance_uid=row["sop_instance_uid"],
        sop_class_uid=row["sop_class_uid"], transfer_syntax_uid=row["transfer_syntax_uid"],
        destination=Destination(row["dest_ae"], row["dest_host"], int(row["dest_port"])),
        path=Path(row["path"]), state=OutboxState(row["state"]), attempts=row["attempts"],
        next_try=row["next_try"], last_error=row["last_error"], created_at=row["created_at"],
        updated_at=row["updated_at"], sent_at=row["sent_at"], retry_since=row["retry_since"],
    )
