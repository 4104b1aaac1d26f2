"""Durable outbox of results: what is due for which destination, retries, dead letters.

Every result object is first written atomically to ``files_dir`` and recorded in an SQLite
table keyed by ``(SOPInstanceUID, destination)``; :meth:`Outbox.send_due` then C-STOREs what is
due, one association per destination (:mod:`dicom_node.send.storescu`, the C-STORE SCU, with a
presentation context per (SOP class, transfer syntax) of the files). A failed item is retried with exponential
backoff (``base_delay_s * 2**(attempts-1)``, capped at ``max_delay_s``, no jitter, so the
schedule is predictable) and goes to the ``dead`` state after ``max_attempts`` failures (0: no
limit) or, with ``retry_for_s``, once it has been undelivered that long (the node's default:
72 hours, so a PACS maintenance night is outlasted).

With ``echo_interval_s``, :meth:`Outbox.probe_destinations` C-ECHOes every destination that has
items waiting in backoff or dead-lettered for not being reachable (at most once per interval);
when it answers again, its pending items are due at once and those dead ones go back to
pending: results reach a PACS that comes back without an operator. Items the PACS itself
refused (a failure status, no presentation context) are not revived by an echo.

State lives only in the database and the files, so a new :class:`Outbox` on the same paths
(after a restart or a crash) carries on where the old one stopped. Enqueueing the same SOP
Instance UID for the same destination again is a no-op (an item already ``sent`` is never sent
again; a ``dead`` one is revived), and because the encoders derive UIDs from the job, a job run
twice produces the same instances: a PACS receives each result once.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.receive.spool import copy_file, save_dataset
from dicom_node.send import storescu
from dicom_node.send.destinations import Destination
from dicom_node.send.outboxdb import OutboxItem, OutboxState, item_from_row, open_db

log = logging.getLogger(__name__)

__all__ = ["Outbox", "OutboxItem", "OutboxState", "Destination"]

#: ``last_error`` prefixes of failures that say "the destination could not be reached"; a
#: destination that answers C-ECHO again gets these items back (see ``probe_destinations``).
_UNREACHABLE = ("cannot associate", "connection failed", "association rejected",
                "association aborted", "association lost", "no C-STORE response")


def _count(counter: str) -> None:
    """Increment a Prometheus counter of :mod:`dicom_node.ops.metrics` (never fails a send)."""
    try:
        from dicom_node.ops import metrics

        getattr(metrics, counter).inc()
    except Exception:  # noqa: BLE001
        pass


class Outbox:
    """Persisted queue of result objects to C-STORE, with backoff and a dead-letter state.

    Parameters
    ----------
    db_path
        SQLite database (created if needed; WAL mode).
    files_dir
        Where the queued objects are kept until sent.
    max_attempts
        Failures after which an item becomes ``dead`` (0: no limit).
    base_delay_s, max_delay_s
        Backoff: after the n-th failure the next try is ``min(base * 2**(n-1), max)`` later.
    retry_for_s
        An item undelivered this long (since it was queued or revived) becomes ``dead`` at its
        next failure; None: only ``max_attempts`` counts.
    echo_interval_s
        Seconds between C-ECHO probes of an unreachable destination (0: no probes).
    ae_title
        Calling AE title of the node.
    timeout_s
        Connection, ACSE, DIMSE and network timeout of each association.
    keep_sent_files
        Keep the files of sent items (default: delete them).
    """

    def __init__(
        self,
        db_path: Path | str,
        files_dir: Path | str,
        max_attempts: int = 8,
        base_delay_s: float = 2.0,
        *,
        max_delay_s: float = 600.0,
        ae_title: str = "AINODE",
        timeout_s: float = 30.0,
        keep_sent_files: bool = False,
        retry_for_s: float | None = None,
        echo_interval_s: float = 0.0,
    ) -> None:
        self.db_path = Path(db_path)
        self.files_dir = Path(files_dir)
        self.max_attempts = int(max_attempts)
        self.base_delay_s = float(base_delay_s)
        self.max_delay_s = float(max_delay_s)
        self.ae_title = ae_title
        self.timeout_s = float(timeout_s)
        self.keep_sent_files = keep_sent_files
        self.retry_for_s = None if retry_for_s is None else float(retry_for_s)
        self.echo_interval_s = float(echo_interval_s)
        self._last_probe: dict[Destination, float] = {}
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        with self._lock:
            self._db = open_db(self.db_path)

    # ------------------------------------------------------------------ queue
    def delay_for(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure (deterministic, no jitter)."""
        return min(self.base_delay_s * (2 ** max(attempts - 1, 0)), self.max_delay_s)

    def _path_for(self, sop_uid: str, dest: Destination) -> Path:
        d = hashlib.sha1(str(dest).encode()).hexdigest()[:12]
        return self.files_dir / d / f"{sop_uid}.dcm"

    def enqueue(self, job_id: str, ds: Dataset, dest: Destination) -> None:
        """Queue ``ds`` for ``dest``; a no-op if this instance is already queued or sent there.

        A ``dead`` item for the same (instance, destination) is revived (attempts reset).
        """
        meta = getattr(ds, "file_meta", None)
        ts = str(getattr(meta, "TransferSyntaxUID", "") or ExplicitVRLittleEndian)
        self._enqueue(job_id, str(ds.SOPInstanceUID), str(ds.SOPClassUID), ts, dest,
                      lambda path: save_dataset(ds, path, durable=True))

    def enqueue_file(self, job_id: str, src: Path, dest: Destination, *, sop_instance_uid: str,
                     sop_class_uid: str, transfer_syntax_uid: str) -> None:
        """Like :meth:`enqueue` for a Part-10 file whose UIDs the caller knows: the file is copied
        byte for byte, not read and encoded again."""
        self._enqueue(job_id, sop_instance_uid, sop_class_uid, transfer_syntax_uid, dest,
                      lambda path: copy_file(src, path, durable=True))

    def _enqueue(self, job_id: str, sop_uid: str, sop_class: str, ts: str, dest: Destination,
                 write: Callable[[Path], Path]) -> None:
        key = (sop_uid, dest.ae_title, dest.host, int(dest.port))
        with self._lock:
            row = self._db.execute(
                "SELECT id, state FROM outbox WHERE sop_instance_uid=? AND dest_ae=? AND dest_host=? "
                "AND dest_port=?", key).fetchone()
            if row is not None and row["state"] in (OutboxState.PENDING, OutboxState.SENT):
                log.debug("outbox: %s -> %s already %s", sop_uid, dest, row["state"])
                return
            path = self._path_for(sop_uid, dest)
            write(path)
            now = time.time()
            if row is None:
                self._db.execute(
                    "INSERT INTO outbox (job_id, sop_instance_uid, sop_class_uid, transfer_syntax_uid,"
                    " dest_ae, dest_host, dest_port, path, state, attempts, next_try, created_at,"
                    " updated_at, retry_since) VALUES (?,?,?,?,?,?,?,?, 'pending', 0, ?, ?, ?, ?)",
                    (job_id, sop_uid, sop_class, ts, dest.ae_title, dest.host, int(dest.port),
                     str(path), now, now, now, now))
            else:
                self._db.execute(
                    "UPDATE outbox SET state='pending', attempts=0, next_try=?, last_error=NULL,"
                    " job_id=?, path=?, transfer_syntax_uid=?, updated_at=?, retry_since=? "
                    "WHERE id=?", (now, job_id, str(path), ts, now, now, row["id"]))
                log.info("outbox: revived dead item %s -> %s", sop_uid, dest)

    # ------------------------------------------------------------------ inspection
    def items(self, job_id: str | None = None, state: OutboxState | None = None) -> list[OutboxItem]:
        """Outbox rows (optionally of one job and/or state), oldest first."""
        sql, args = "SELECT * FROM outbox WHERE 1=1", []
        if job_id is not None:
            sql += " AND job_id=?"
            args.append(job_id)
        if state is not None:
            sql += " AND state=?"
            args.append(state)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [item_from_row(r) for r in rows]

    def pending_count(self, job_id: str | None = None) -> int:
        """Items still to be sent (state ``pending``), of one job or all."""
        return self.counts(job_id).get(OutboxState.PENDING, 0)

    def counts(self, job_id: str | None = None) -> dict[str, int]:
        """``{state: count}`` (``pending``, ``sent``, ``dead``)."""
        sql, args = "SELECT state, COUNT(*) AS n FROM outbox", []
        if job_id is not None:
            sql += " WHERE job_id=?"
            args.append(job_id)
        with self._lock:
            rows = self._db.execute(sql + " GROUP BY state", args).fetchall()
        out: dict[str, int] = {s.value: 0 for s in OutboxState}
        out.update({r["state"]: r["n"] for r in rows})
        return out

    def next_due(self) -> float | None:
        """Earliest ``next_try`` of the pending items (epoch seconds), or None."""
        with self._lock:
            row = self._db.execute("SELECT MIN(next_try) AS t FROM outbox WHERE state='pending'").fetchone()
        return row["t"] if row and row["t"] is not None else None

    def retry_dead(self, job_id: str | None = None) -> int:
        """Move ``dead`` items (of one job or all) back to ``pending`` with attempts reset."""
        now = time.time()
        sql = ("UPDATE outbox SET state='pending', attempts=0, next_try=?, updated_at=?, "
               "retry_since=? WHERE state='dead'")
        args: list = [now, now, now]
        if job_id is not None:
            sql += " AND job_id=?"
            args.append(job_id)
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def oldest_undelivered_age(self, now: float | None = None) -> float:
        """Seconds since the oldest item not yet sent (pending or dead) was queued; 0 if none."""
        now = time.time() if now is None else float(now)
        with self._lock:
            row = self._db.execute("SELECT MIN(created_at) AS t FROM outbox "
                                   "WHERE state IN ('pending', 'dead')").fetchone()
        return max(0.0, now - row["t"]) if row and row["t"] is not None else 0.0

    def probe_destinations(self, now: float | None = None) -> int:
        """C-ECHO each destination that has items in backoff or dead-lettered as unreachable
        (at most once per ``echo_interval_s``); when one answers, make its pending items due
        now and revive those dead items. Return the number of items made due or revived."""
        if self.echo_interval_s <= 0:
            return 0
        now = time.time() if now is None else float(now)
        unreachable = " OR ".join("last_error LIKE ?" for _ in _UNREACHABLE)
        like = [f"{p}%" for p in _UNREACHABLE]
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT dest_ae, dest_host, dest_port FROM outbox WHERE "
                f"(state='pending' AND attempts>0 AND next_try>?) OR (state='dead' AND ({unreachable}))",
                [now, *like]).fetchall()
        total = 0
        for r in rows:
            dest = Destination(r["dest_ae"], r["dest_host"], int(r["dest_port"]))
            if now - self._last_probe.get(dest, float("-inf")) < self.echo_interval_s:
                continue
            self._last_probe[dest] = now
            if not self._echo(dest):
                continue
            key = [dest.ae_title, dest.host, dest.port]
            with self._lock:
                due = self._db.execute(
                    "UPDATE outbox SET next_try=?, updated_at=? WHERE state='pending' AND "
                    "next_try>? AND dest_ae=? AND dest_host=? AND dest_port=?",
                    [now, time.time(), now, *key]).rowcount
                revived = self._db.execute(
                    "UPDATE outbox SET state='pending', attempts=0, next_try=?, updated_at=?, "
                    f"retry_since=? WHERE state='dead' AND ({unreachable}) AND dest_ae=? AND "
                    "dest_host=? AND dest_port=?", [now, time.time(), now, *like, *key]).rowcount
            if due or revived:
                log.info("outbox: %s answers C-ECHO again: %d waiting and %d dead-lettered "
                         "item(s) sent now", dest, due, revived)
            total += due + revived
        return total

    def _echo(self, dest: Destination) -> bool:
        return storescu.echo(dest, self.ae_title, self.timeout_s)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ sending
    def _mark_sent(self, item: OutboxItem) -> None:
        _count("INSTANCES_SENT")
        now = time.time()
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET state='sent', attempts=attempts+1, last_error=NULL, sent_at=?,"
                " updated_at=? WHERE id=?", (now, now, item.id))
        if not self.keep_sent_files:
            try:
                item.path.unlink()
            except FileNotFoundError:
                pass

    def _mark_failed(self, item: OutboxItem, error: str, now: float) -> None:
        _count("SEND_FAILURES")
        attempts = item.attempts + 1
        since = item.retry_since if item.retry_since is not None else item.created_at
        dead = ((self.max_attempts > 0 and attempts >= self.max_attempts)
                or (self.retry_for_s is not None and now - since >= self.retry_for_s))
        nxt = now + self.delay_for(attempts)
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET state=?, attempts=?, next_try=?, last_error=?, updated_at=? "
                "WHERE id=?",
                (OutboxState.DEAD if dead else OutboxState.PENDING, attempts, nxt, error[:500], time.time(), item.id))
        if dead:
            log.error("outbox: %s -> %s dead after %d attempts in %.0f s: %s",
                      item.sop_instance_uid, item.destination, attempts, now - since, error)
        else:
            log.warning("outbox: %s -> %s failed (attempt %d%s, next in %.0f s): %s",
                        item.sop_instance_uid, item.destination, attempts,
                        f"/{self.max_attempts}" if self.max_attempts > 0 else "", nxt - now, error)

    def send_due(self, now: float | None = None) -> int:
        """C-STORE every pending item whose ``next_try`` has come; return how many were stored.

        One association per destination (more if over 128 presentation contexts). Failures
        are recorded per item (backoff / dead-letter). Only one ``send_due`` runs at a time per
        Outbox; a concurrent call returns 0 at once.
        """
        if not self._send_lock.acquire(blocking=False):
            return 0
        try:
            now = time.time() if now is None else float(now)
            with self._lock:
                rows = self._db.execute(
                    "SELECT * FROM outbox WHERE state='pending' AND next_try<=? ORDER BY id",
                    (now,)).fetchall()
            by_dest: dict[Destination, list[OutboxItem]] = {}
            for r in rows:
                it = item_from_row(r)
                by_dest.setdefault(it.destination, []).append(it)
            sent = 0
            for dest, items in by_dest.items():
                todo = list(items)
                while todo:
                    progress = 0
                    left: list[OutboxItem] = []
                    for batch in storescu.batches(todo):
                        n, untried = self._send_batch(dest, batch, now)
                        progress += n
                        left.extend(untried)
                    sent += progress
                    if not left:
                        break
                    if progress == 0:  # association keeps dying without progress: charge them
                        for it in left:
                            self._mark_failed(it, f"association lost before sending ({dest})", now)
                        break
                    todo = left  # association lost mid-way: retry the untried ones at once
            if rows:
                self._publish_metrics(time.time() - now if sent else None)
            return sent
        finally:
            self._send_lock.release()

    def _publish_metrics(self, send_seconds: float | None) -> None:
        try:
            from dicom_node.ops import metrics

            metrics.OUTBOX_DEAD.set(self.counts().get(OutboxState.DEAD, 0))
            if send_seconds is not None:
                metrics.observe_stage("send", send_seconds)
        except Exception:  # noqa: BLE001 - metrics never fail a send
            pass

    def _send_batch(self, dest: Destination, items: list[OutboxItem],
                    now: float) -> tuple[int, list[OutboxItem]]:
        """Send ``items`` on one association (:func:`dicom_node.send.storescu.send_batch`),
        recording each outcome; return (stored count, items not tried)."""
        return storescu.send_batch(
            dest, items, ae_title=self.ae_title, timeout_s=self.timeout_s,
            on_sent=self._mark_sent, on_failed=lambda it, error: self._mark_failed(it, error, now))
