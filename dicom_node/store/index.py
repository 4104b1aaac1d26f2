"""SQLite (WAL) index of what the node received: patients, studies, series, instances.

The spool (see :mod:`dicom_node.receive.spool`) is the source of truth: every acknowledged instance is
a durable file before the C-STORE response goes out. Index rows are written off the hot path by
:class:`IndexWriter` (a thread that batches inserts), and :meth:`Index.reconcile` re-indexes any
spooled file the index does not know (e.g. after a crash between ACK and batch commit).

Series rows carry a compact JSON of the routing-relevant header attributes of their first
instance (``header_json``), the completion state and timings, and the classification result
once complete. Instance rows carry the instance's routing header (``routing_header``, see
:func:`dicom_node.store.records.routing_header`), so that completion classifies and routes a
series without reading its files; rows without one (an index of an earlier version, files
re-indexed by :meth:`Index.reconcile`) have their file read instead.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterable

from dicom_node.store.records import InstanceRecord, SeriesTouch, expected_count, extract_header
from dicom_node.store.schema import connect, create

__all__ = ["Index", "SeriesState", "connect"]

log = logging.getLogger(__name__)


class SeriesState(StrEnum):
    """State of a series in the index: instances arriving, or complete (re-opened by a new one)."""

    RECEIVING = "receiving"
    COMPLETE = "complete"


class Index:
    """The node's SQLite index (WAL mode, one connection per thread).

    Parameters
    ----------
    path : Path
        Database file, usually ``data_dir/index.sqlite3``.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        create(self.conn())

    # -- connections ---------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (created on first use)."""
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = connect(self.path, synchronous="NORMAL")
        return c

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    # -- writes --------------------------------------------------------------------------
    def write_batch(self, records: Iterable[InstanceRecord]) -> list[SeriesTouch]:
        """Insert/replace instance rows and update their series/study rows in one transaction.

        A new (or replaced) instance of a series in state ``complete`` re-opens the series.
        """
        c = self.conn()
        touched: dict[str, InstanceRecord] = {}
        reopened: set[str] = set()
        c.execute("BEGIN IMMEDIATE")
        try:
            for r in records:
                c.execute(
                    "INSERT INTO patients(patient_id, first_seen) VALUES(?, ?) "
                    "ON CONFLICT(patient_id) DO NOTHING",
                    (r.patient_id, r.received_at),
                )
                c.execute(
                    "INSERT INTO studies(study_uid, patient_id, study_date, calling_ae, calling_host,"
                    " first_received_at, last_received_at) VALUES(?,?,?,?,?,?,?) "
                    "ON CONFLICT(study_uid) DO UPDATE SET last_received_at="
                    "max(last_received_at, excluded.last_received_at), calling_ae=excluded.calling_ae,"
                    " calling_host=excluded.calling_host",
                    (r.study_uid, r.patient_id, r.study_date, r.calling_ae, r.calling_host,
                     r.received_at, r.received_at),
                )
                hdr = r.header or {}
                exp, _why = expected_count(hdr) if r.header else (None, None)
                row = c.execute(
                    "SELECT state FROM series WHERE series_uid=?", (r.series_uid,)
                ).fetchone()
                if row is None:
                    c.execute(
                        "INSERT INTO series(series_uid, study_uid, modality, sop_class_uid,"
                        " series_number, series_description, header_json, state, n_instances,"
                        " expected_instances, first_received_at, last_received_at, calling_ae,"
                        " calling_host) VALUES(?,?,?,?,?,?,?,'receiving',0,?,?,?,?,?)",
                        (r.series_uid, r.study_uid, hdr.get("Modality"), r.sop_class_uid,
                         hdr.get("SeriesNumber") if isinstance(hdr.get("SeriesNumber"), int) else None,
                         hdr.get("SeriesDescription"),
                         json.dumps(hdr) if r.header is not None else None,
                         exp, r.received_at, r.received_at, r.calling_ae, r.calling_host),
                    )
                else:
                    if row["state"] == SeriesState.COMPLETE:
                        reopened.add(r.series_uid)
                    c.execute(
                        "UPDATE series SET state='receiving', last_received_at="
                        "max(coalesce(last_received_at,0), ?), calling_ae=?, calling_host=?,"
                        " header_json=coalesce(header_json, ?),"
                        " expected_instances=coalesce(expected_instances, ?) WHERE series_uid=?",
                        (r.received_at, r.calling_ae, r.calling_host,
                         json.dumps(hdr) if r.header is not None else None, exp, r.series_uid),
                    )
                c.execute(
                    "INSERT INTO instances(sop_uid, series_uid, study_uid, sop_class_uid,"
                    " transfer_syntax, instance_number, path, size, received_at, calling_ae,"
                    " calling_host, routing_header) VALUES(?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(sop_uid) DO UPDATE SET series_uid=excluded.series_uid,"
                    " study_uid=excluded.study_uid, sop_class_uid=excluded.sop_class_uid,"
                    " transfer_syntax=excluded.transfer_syntax,"
                    " instance_number=excluded.instance_number, path=excluded.path,"
                    " size=excluded.size, received_at=excluded.received_at,"
                    " calling_ae=excluded.calling_ae, calling_host=excluded.calling_host,"
                    " routing_header=excluded.routing_header, versions=versions+1",
                    (r.sop_uid, r.series_uid, r.study_uid, r.sop_class_uid, r.transfer_syntax,
                     r.instance_number, r.path, r.size, r.received_at, r.calling_ae,
                     r.calling_host, r.routing_header),
                )
                touched[r.series_uid] = r
            out: list[SeriesTouch] = []
            for suid in touched:
                c.execute(
                    "UPDATE series SET n_instances=(SELECT count(*) FROM instances WHERE "
                    "series_uid=?) WHERE series_uid=?",
                    (suid, suid),
                )
                row = c.execute(
                    "SELECT state, n_instances, expected_instances, last_received_at, study_uid "
                    "FROM series WHERE series_uid=?",
                    (suid,),
                ).fetchone()
                out.append(
                    SeriesTouch(suid, row["study_uid"], row["state"], row["n_instances"],
                                row["expected_instances"], row["last_received_at"],
                                suid in reopened)
                )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        for s in out:
            if s.reopened:
                log.info("series re-opened by a new instance after completion: series=%s "
                         "n=%d", s.series_uid, s.n_instances)
        return out

    # -- reads ---------------------------------------------------------------------------
    def instance_paths(self, series_uid: str) -> list[Path]:
        """Spool paths of the instances of a series (ordered by InstanceNumber, then UID)."""
        rows = self.conn().execute(
            "SELECT path FROM instances WHERE series_uid=? "
            "ORDER BY coalesce(instance_number, 0), sop_uid",
            (series_uid,),
        ).fetchall()
        return [Path(r["path"]) for r in rows]

    def instance_headers(self, series_uid: str) -> list[tuple[Path, bytes | None]]:
        """``(spool path, routing header or None)`` of the instances of a series, in the order
        of :meth:`instance_paths`."""
        rows = self.conn().execute(
            "SELECT path, routing_header FROM instances WHERE series_uid=? "
            "ORDER BY coalesce(instance_number, 0), sop_uid",
            (series_uid,),
        ).fetchall()
        return [(Path(r["path"]), r["routing_header"]) for r in rows]

    def instance_uids(self, series_uid: str) -> list[str]:
        rows = self.conn().execute(
            "SELECT sop_uid FROM instances WHERE series_uid=? ORDER BY sop_uid", (series_uid,)
        ).fetchall()
        return [r["sop_uid"] for r in rows]

    def series(self, series_uid: str) -> dict[str, Any] | None:
        row = self.conn().execute(
            "SELECT * FROM series WHERE series_uid=?", (series_uid,)
        ).fetchone()
        return dict(row) if row else None

    def series_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        rows = self.conn().execute(
            "SELECT * FROM series WHERE study_uid=? ORDER BY coalesce(series_number, 0), "
            "series_uid",
            (study_uid,),
        ).fetchall()
        return [dict(r) for r in rows]

    def list_series(self, state: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT * FROM series"
        args: tuple[Any, ...] = ()
        if state:
            q += " WHERE state=?"
            args = (state,)
        q += " ORDER BY first_received_at"
        return [dict(r) for r in self.conn().execute(q, args).fetchall()]

    def study(self, study_uid: str) -> dict[str, Any] | None:
        row = self.conn().execute(
            "SELECT * FROM studies WHERE study_uid=?", (study_uid,)
        ).fetchone()
        return dict(row) if row else None

    def known_paths(self) -> set[str]:
        return {r[0] for r in self.conn().execute("SELECT path FROM instances")}

    # -- state changes -------------------------------------------------------------------
    def mark_series_complete(
        self, series_uid: str, *, now: float, reason: str, expect_last: float | None = None
    ) -> dict[str, Any] | None:
        """Set a receiving series to ``complete``; return its row, or None if it changed.

        ``expect_last``: only complete if ``last_received_at`` still equals it (an instance
        that arrived since re-arms the timer instead).
        """
        c = self.conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute(
                "SELECT * FROM series WHERE series_uid=?", (series_uid,)
            ).fetchone()
            if row is None or row["state"] != SeriesState.RECEIVING or (
                expect_last is not None and row["last_received_at"] > expect_last + 1e-9
            ):
                c.execute("COMMIT")
                return None
            delay = max(0.0, now - (row["last_received_at"] or now))
            c.execute(
                "UPDATE series SET state='complete', completed_at=?, complete_delay_s=?,"
                " completion_reason=?, completions=completions+1 WHERE series_uid=?",
                (now, delay, reason, series_uid),
            )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        out = dict(row)
        out.update(state=SeriesState.COMPLETE, completed_at=now, complete_delay_s=delay,
                   completion_reason=reason)
        return out

    def set_series_info(self, series_uid: str, contrast: str | None, info: dict[str, Any]) -> None:
        self.conn().execute(
            "UPDATE series SET contrast=?, info_json=? WHERE series_uid=?",
            (contrast, json.dumps(info, default=str), series_uid),
        )

    def set_route_pending(self, study_uid: str, since: float | None,
                          deadline: float | None) -> None:
        self.conn().execute(
            "UPDATE studies SET route_pending_since=?, route_deadline=? WHERE study_uid=?",
            (since, deadline, study_uid),
        )

    def pending_studies(self) -> list[dict[str, Any]]:
        rows = self.conn().execute(
            "SELECT * FROM studies WHERE route_deadline IS NOT NULL"
        ).fetchall()
        return [dict(r) for r in rows]

    # -- recovery ------------------------------------------------------------------------
    def reconcile(self, spool: Any) -> int:
        """Index every spooled file the index does not know; return how many were added.

        Used at start-up: an instance acknowledged just before a crash is on disk but its index
        row may not have been committed.
        """
        import pydicom

        known = self.known_paths()
        missing = [t for t in spool.iter_files() if str(t[3]) not in known]
        if not missing:
            return 0
        recs = []
        for study_uid, series_uid, sop_uid, path in missing:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                st = path.stat()
            except Exception as exc:  # noqa: BLE001
                log.warning("reconcile: unreadable spooled file %s: %s", path, exc)
                continue
            hdr = extract_header(ds)
            recs.append(InstanceRecord(
                sop_uid=sop_uid, series_uid=series_uid, study_uid=study_uid,
                patient_id=str(ds.get("PatientID", "") or ""),
                sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
                transfer_syntax=str(getattr(ds.file_meta, "TransferSyntaxUID", "") or ""),
                instance_number=_int_or_none(ds.get("InstanceNumber")),
                path=str(path), size=st.st_size, received_at=st.st_mtime,
                calling_ae="", calling_host="", header=hdr,
                study_date=str(ds.get("StudyDate", "") or "") or None,
            ))
        self.write_batch(recs)
        log.info("reconcile: indexed %d spooled instance(s) missing from the index", len(recs))
        return len(recs)


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v) if v is not None and v != "" else None
    except (TypeError, ValueError):
        return None
