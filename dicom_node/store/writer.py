"""The index's writer thread: batches the SCP's instance records into the index, off the hot path."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from typing import Callable

from dicom_node.store.index import Index
from dicom_node.store.records import InstanceRecord, SeriesTouch

__all__ = ["IndexWriter"]

log = logging.getLogger(__name__)


class IndexWriter(threading.Thread):
    """Background thread that batches :class:`InstanceRecord` s into the index.

    Parameters
    ----------
    index : Index
    on_batch : callable
        Called (in this thread) with the list of :class:`SeriesTouch` after every commit.
    max_batch : int
        Maximum records per transaction.
    window_s : float
        After the first record of a batch, wait this long for more (fewer transactions and
        timer re-arms while a series streams in; the files are already durable).
    """

    def __init__(
        self,
        index: Index,
        on_batch: Callable[[list[SeriesTouch]], None] | None = None,
        max_batch: int = 500,
        window_s: float = 0.1,
    ) -> None:
        super().__init__(name="index-writer", daemon=True)
        self.index = index
        self.on_batch = on_batch
        self.max_batch = max_batch
        self.window_s = window_s
        self.q: "queue.Queue[InstanceRecord | None]" = queue.Queue()
        self._stopping = threading.Event()
        self._idle = threading.Event()
        self._idle.set()

    def put(self, rec: InstanceRecord) -> None:
        self._idle.clear()
        self.q.put(rec)

    def stop(self, timeout: float = 10.0) -> None:
        """Flush what is queued, then stop."""
        self._stopping.set()
        self.q.put(None)
        self.join(timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is committed (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.q.unfinished_tasks == 0:
                return True
            time.sleep(0.005)
        return False

    def run(self) -> None:
        while True:
            item = self.q.get()
            batch: list[InstanceRecord] = []
            n_items = 1
            stop = item is None
            if item is not None:
                batch.append(item)
            if not stop:
                # Collect for window_s without taking records one by one: a blocking get per
                # record would wake this thread (and contend for the GIL with the SCP) on
                # every C-STORE. stop() ends the wait early.
                self._stopping.wait(self.window_s)
            while len(batch) < self.max_batch:
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                n_items += 1
                if nxt is None:
                    stop = True  # drain what is queued, then stop
                else:
                    batch.append(nxt)
            try:
                if batch:
                    touched = self._write(batch)
                    if self.on_batch and touched:
                        try:
                            self.on_batch(touched)
                        except Exception:
                            log.exception("index writer: completion callback failed")
            finally:
                for _ in range(n_items):
                    self.q.task_done()
            if stop and self.q.empty():
                return

    def _write(self, batch: list[InstanceRecord]) -> list[SeriesTouch]:
        for attempt in range(5):
            try:
                return self.index.write_batch(batch)
            except sqlite3.OperationalError as exc:
                log.warning("index write failed (attempt %d): %s", attempt + 1, exc)
                time.sleep(0.2 * (attempt + 1))
        log.error("index write gave up on %d record(s); they will be re-indexed from the "
                  "spool at the next start-up", len(batch))
        return []
