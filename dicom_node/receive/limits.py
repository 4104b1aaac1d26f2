"""The association gate: what a connection may cost the node before it has proven anything.

pynetdicom reads a PDU by trusting its 6-byte header: a peer that declares 0xFFFFFFFF bytes
made the node reserve that much (4 GB) before any check, also from a refused address; and its
reads time out per ``recv``, so a peer dripping one byte every few seconds holds an association
slot for ever. This module bounds both, for every association of the Storage SCP (the fast and
the stock DIMSE path read PDUs through :func:`dicom_node._pynetdicom.fastdimse.install_reader`):

* **At accept** (:class:`ConnectionGate`, before any thread or buffer): an address that no
  ``allowed_peers`` entry can match is closed at once, and so is a connection beyond
  ``scp.max_connections_per_address`` from one address. A refused peer never holds a slot.
* **PDU length**: a P-DATA-TF may not exceed the maximum PDU length we advertise
  (``scp.max_pdu``; with 0, "unlimited", :data:`HARD_MAX_PDU`), any other PDU
  :data:`MAX_CONTROL_PDU`. The buffer grows with the bytes actually received, never with the
  declared length.
* **Deadlines**: the whole A-ASSOCIATE-RQ, from the connection's opening, within
  ``scp.association_request_timeout`` (also the wait for its first byte); after it every PDU
  within ``scp.network_timeout`` from its first byte (plus one second per 64 KiB of declared
  length). A drip cannot reset them.

Every refusal is logged (peer address, reason; never patient data) and counted in
``dicom_node_associations_rejected_total{reason}``.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Any, Callable

__all__ = ["HARD_MAX_PDU", "MAX_CONTROL_PDU", "ConnectionGate", "PduGuard", "refused"]

log = logging.getLogger("dicom_node.receive.limits")

#: Largest P-DATA-TF PDU read when we advertise "unlimited" (``scp.max_pdu: 0``).
HARD_MAX_PDU = 64 * 2**20
#: Largest PDU of any other type (A-ASSOCIATE-RQ with 128 contexts is well below 100 KiB).
MAX_CONTROL_PDU = 2**20
#: Bytes per second a PDU must at least arrive at, on top of the network timeout.
MIN_RATE = 64 * 2**10


def refused(peer: str, reason: str, key: str) -> None:
    """Log and count one refusal (``key``: the metric's reason label)."""
    log.warning("connection refused: peer=%s reason=%s", peer, reason)
    try:
        from dicom_node.ops import metrics

        metrics.ASSOCIATIONS_REJECTED.labels(key).inc()
    except Exception:  # noqa: BLE001 - metrics never break the gate
        pass


class PduGuard:
    """Limits of one association's PDU reads (see the module docstring).

    Parameters
    ----------
    peer
        ``address:port`` of the peer, for the log.
    max_pdu
        The maximum PDU length we advertise (0: unlimited, read bound :data:`HARD_MAX_PDU`).
    request_timeout
        Seconds from the connection's opening for the whole A-ASSOCIATE-RQ.
    pdu_timeout
        Seconds for any later PDU from its first byte (plus its length at :data:`MIN_RATE`).
    """

    def __init__(self, peer: str, max_pdu: int, request_timeout: float,
                 pdu_timeout: float) -> None:
        self.peer = peer
        self.max_pdu = int(max_pdu) if max_pdu else HARD_MAX_PDU
        self.request_timeout = float(request_timeout)
        self.pdu_timeout = float(pdu_timeout)
        self.opened = time.monotonic()
        self.first_pdu_done = False
        self.refused = False  #: the reader refused this connection (logged already)

    def header_deadline(self) -> float:
        """Deadline (monotonic) for the 6-byte header of the next PDU."""
        if not self.first_pdu_done:
            return self.opened + self.request_timeout
        return time.monotonic() + self.pdu_timeout

    def body_deadline(self, header_deadline: float, length: int) -> float:
        if not self.first_pdu_done:
            return header_deadline
        return header_deadline + length / MIN_RATE

    def check(self, pdu_type: int, length: int) -> str | None:
        """Why a PDU with this header is refused, or None."""
        limit = self.max_pdu if pdu_type == 0x04 else MAX_CONTROL_PDU
        if length > limit:
            return (f"PDU type 0x{pdu_type:02X} declares {length} bytes, more than the "
                    f"{limit} allowed")
        if not self.first_pdu_done and pdu_type != 0x01:
            return f"PDU type 0x{pdu_type:02X} before an A-ASSOCIATE-RQ"
        return None

    def timeout_reason(self) -> str:
        if not self.first_pdu_done:
            return f"A-ASSOCIATE-RQ not complete {self.request_timeout:g} s after connecting"
        return f"PDU not complete within {self.pdu_timeout:g} s (and its length's allowance)"


def read_exact(sock: Any, n: int, deadline: float, chunk: int = 4 * 2**20) -> bytearray:
    """Read ``n`` bytes from the socket ``sock`` by ``deadline`` (monotonic).

    The buffer grows with what arrives (at most ``chunk`` ahead), never to the declared size
    at once. Fewer bytes are returned only when the peer closed the connection; past the
    deadline ``TimeoutError`` is raised.
    """
    buf = bytearray(min(n, chunk))
    got = 0
    old = sock.gettimeout()
    try:
        while got < n:
            if got == len(buf):
                buf.extend(bytes(min(n - got, max(chunk, len(buf)))))
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed")
            t = left if old is None else min(left, old)
            sock.settimeout(None if t == float("inf") else t)
            with memoryview(buf) as view:
                k = sock.recv_into(view[got:], min(n, len(buf)) - got)
            if not k:
                del buf[got:]
                return buf
            got += k
    finally:
        try:
            sock.settimeout(old)
        except OSError:
            pass
    return buf


class ConnectionGate:
    """Accept-time decisions: allow-listed address and per-address connection cap.

    Open connections are the accepted sockets of an address that are not closed yet, so
    nothing leaks however a connection ends.

    Parameters
    ----------
    cfg : NodeConfig
        ``allowed_peers``, ``allow_any_peer``, ``scp.max_connections_per_address``.
    host_matches : callable
        ``(pattern, address) -> bool`` (the SCP's allow-list matcher).
    """

    def __init__(self, cfg: Any, host_matches: Callable[[str, str], bool]) -> None:
        self.cfg = cfg
        self.host_matches = host_matches
        self.per_address = int(cfg.scp.max_connections_per_address)
        self._sockets: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def address_allowed(self, address: str) -> bool:
        """Could any allow-list entry match a peer at ``address``? (AE titles come later.)"""
        cfg = self.cfg
        if cfg.allow_any_peer:
            return True
        return any(not p.host or self.host_matches(p.host, address) for p in cfg.allowed_peers)

    def admit(self, address: str, port: int | None = None, sock: Any = None) -> bool:
        """Decide at accept (before any thread or buffer exists for the connection)."""
        peer = f"{address}:{port}" if port is not None else address
        if not self.address_allowed(address):
            refused(peer, "address not in allowed_peers (closed at accept)", "address")
            return False
        with self._lock:
            for a in list(self._sockets):
                self._sockets[a] = [s for s in self._sockets[a] if _is_open(s)]
                if not self._sockets[a]:
                    del self._sockets[a]
            n = len(self._sockets.get(address, ()))
            if n < self.per_address:
                if sock is not None:
                    self._sockets.setdefault(address, []).append(sock)
                return True
        refused(peer, f"{n} connections from this address already open "
                      f"(scp.max_connections_per_address)", "per_address_limit")
        return False


def _is_open(sock: Any) -> bool:
    try:
        return sock.fileno() != -1
    except (OSError, ValueError):
        return False


def server_class(gate: ConnectionGate) -> type:
    """pynetdicom's threaded association server, with ``gate`` deciding at accept."""
    from pynetdicom.transport import ThreadedAssociationServer

    class GatedAssociationServer(ThreadedAssociationServer):
        def get_request(self) -> tuple[Any, Any]:
            # as pynetdicom's, but the TLS handshake happens in the connection's own thread
            # (on its first read, under its deadlines), not in the accept loop, and only for
            # connections the gate admitted
            assert self.socket is not None  # bound by the server before it accepts
            client_socket, address = self.socket.accept()
            if self.ssl_context:
                client_socket = self.ssl_context.wrap_socket(
                    client_socket, server_side=True, do_handshake_on_connect=False)
            return client_socket, address

        def verify_request(self, request: Any, client_address: Any) -> bool:
            try:
                address, port = str(client_address[0]), int(client_address[1])
            except (TypeError, IndexError, ValueError):
                address, port = str(client_address), None
            return gate.admit(normal_address(address), port, request)

    return GatedAssociationServer


def normal_address(address: str) -> str:
    """An IPv4-mapped IPv6 address as IPv4 (as the allow-list compares them)."""
    try:
        a = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(a.ipv4_mapped) if a.version == 6 and a.ipv4_mapped else str(a)
