"""Small network helpers shared by the SCP and the SCU sender.

Nagle's algorithm delays the small last segment of every DIMSE message until the peer's
delayed ACK (about 40 ms on Linux loopback), so every C-STORE stalls. Both ends of our
associations therefore set ``TCP_NODELAY``.

Usage in a pynetdicom SCU/SCP::

    from dicom_node.net import nodelay_handlers
    assoc = ae.associate(host, port, evt_handlers=nodelay_handlers())
    ae.start_server(addr, evt_handlers=[*nodelay_handlers(), ...])
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pynetdicom import evt

__all__ = ["set_nodelay", "on_conn_open_nodelay", "nodelay_handlers"]

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


def nodelay_handlers() -> list[tuple[Any, Any]]:
    """Return ``[(evt.EVT_CONN_OPEN, on_conn_open_nodelay)]`` for ``evt_handlers=``."""
    return [(evt.EVT_CONN_OPEN, on_conn_open_nodelay)]
