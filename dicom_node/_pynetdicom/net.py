"""Small network helpers shared by the SCP and the SCU sender.

Nagle's algorithm delays the small last segment of every DIMSE message until the peer's
delayed ACK (about 40 ms on Linux loopback), so every C-STORE stalls. Both ends of our
associations therefore set ``TCP_NODELAY``.

Usage in a pynetdicom SCU/SCP::

    from dicom_node._pynetdicom.net import nodelay_handlers
    assoc = ae.associate(host, port, evt_handlers=nodelay_handlers())
    ae.start_server(addr, evt_handlers=[*nodelay_handlers(), ...])
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.events import EventHandlerType

__all__ = ["set_nodelay", "on_conn_open_nodelay", "nodelay_handlers", "set_reactor_poll"]

log = logging.getLogger(__name__)


def set_nodelay(sock: socket.socket | None) -> bool:
    """Set ``TCP_NODELAY`` on ``sock``; return True on success (never raises)."""
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True
    except (OSError, AttributeError, ValueError) as exc:  # closed or non-TCP socket
        log.debug("TCP_NODELAY not set: %s", exc)
        return False


def on_conn_open_nodelay(event: Any) -> None:
    """pynetdicom ``EVT_CONN_OPEN`` handler: set TCP_NODELAY on the association's socket."""
    try:
        set_nodelay(event.assoc.dul.socket.socket)
    except AttributeError:
        pass


def nodelay_handlers() -> list[EventHandlerType]:
    """Return ``[(evt.EVT_CONN_OPEN, on_conn_open_nodelay)]`` for ``evt_handlers=``."""
    return [(evt.EVT_CONN_OPEN, on_conn_open_nodelay)]


class _PollClock:
    """Stand-in for the ``time`` module inside pynetdicom's reactors.

    ``sleep`` runs the calling thread's own idle wait when it has one (``_node_wait``, set per
    association by :func:`dicom_node._pynetdicom.fastdimse.install`: a wait that ends early when there is
    work), else sleeps at most ``cap_s``.
    """

    def __init__(self, cap_s: float) -> None:
        self.cap_s = cap_s

    def sleep(self, seconds: float) -> None:
        wait = getattr(threading.current_thread(), "_node_wait", None)
        if wait is not None:
            wait(seconds)
        else:
            time.sleep(min(seconds, self.cap_s))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def set_reactor_poll(interval_s: float) -> None:
    """Cap the idle-poll sleep of pynetdicom's association and DUL reactors (default 1 ms).

    Both reactor threads poll with ``time.sleep(0.001)``; every C-STORE waits for up to two of
    those sleeps (request seen, response sent). A shorter interval cuts that latency at the
    cost of more wake-ups while an association is open; ``interval_s >= 0.001`` keeps the
    library's sleeps. Associations switched to :mod:`dicom_node._pynetdicom.fastdimse` wait for work
    instead (this cap does not apply to them).
    """
    import pynetdicom.association as _assoc

    from dicom_node._pynetdicom import require

    require("the reactor poll clock")
    import pynetdicom.dul as _dul

    clock = _PollClock(max(0.0, interval_s) if interval_s < 0.001 else math.inf)
    _assoc.time = clock  # type: ignore[assignment]  # a module global swapped on purpose
    _dul.time = clock  # type: ignore[assignment]
