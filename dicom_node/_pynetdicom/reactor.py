"""Pause an association's reactor thread reliably before the sender's C-STORE (patch 3 of the package)."""

from __future__ import annotations

import time

from pynetdicom.association import Association

__all__ = ["pause_reactor"]


def pause_reactor(assoc: Association) -> None:
    """Make sure pynetdicom's reactor thread is blocked before a C-STORE.

    ``send_c_store`` pauses the association's reactor by clearing a checkpoint and waiting for
    ``_is_paused``; that flag can still be True from the reactor's previous loop turn, so on a
    busy machine the reactor sometimes takes the C-STORE response off the queue ("Received
    unexpected C-STORE service message") and the sender waits for the DIMSE timeout (seen here
    on 2 loaded cores, ~1 in 100 stores; cf. pynetdicom issue #435). Clearing the checkpoint
    ourselves and giving the reactor time to reach its blocking wait closes that window.
    """
    cp = getattr(assoc, "_reactor_checkpoint", None)
    if cp is None or not hasattr(assoc, "_is_paused"):
        return
    cp.clear()
    deadline = time.monotonic() + 0.5
    time.sleep(0.002)  # longer than one reactor loop turn (1 ms sleep)
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.0005)
