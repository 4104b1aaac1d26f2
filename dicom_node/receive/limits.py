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
* **Message rate**: PDUs that each arrive in time can still be tiny (one byte of a data set per
  P-DATA-TF, one PDU per ``scp.network_timeout``). So every command set and every data set of a
  DIMSE message, from the first byte of its first PDU, must arrive within
  ``scp.network_timeout`` plus one second per ``scp.min_message_rate`` bytes received (default
  :data:`MIN_MESSAGE_RATE`, 1 KiB/s; 0 turns this off): a drip is cut off after about
  ``network_timeout``, an honest sender on any real network never meets the bound.

Every refusal is logged (peer address, reason; never patient data) and counted in
``dicom_node_associations_rejected_total{reason}``.
"""
from __future__ import annotations

import ipaddress
import logging
import struct
import threading
import time
from typing import Any, Callable

__all__ = ["HARD_MAX_PDU", "MAX_CONTROL_PDU", "MIN_MESSAGE_RATE", "ConnectionGate", "PduGuard",
           "refused"]

log = logging.getLogger("dicom_node.receive.limits")

#: Largest P-DATA-TF PDU read when we advertise "unlimited" (``scp.max_pdu: 0``).
HARD_MAX_PDU = 64 * 2**20
#: Largest PDU of any other type (A-ASSOCIATE-RQ with 128 contexts is well below 100 KiB).
MAX_CONTROL_PDU = 2**20
#: Bytes per second a PDU must at least arrive at, on top of the network timeout.
MIN_RATE = 64 * 2**10
#: Default of ``scp.min_message_rate``: bytes per second a DIMSE message's command set or data
#: set must at least average, after an allowance of ``scp.network_timeout``.
MIN_MESSAGE_RATE = 1024

_PDV_HEADER = struct.Struct(">LBB")  # PDV item length, presentation context ID, message control


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
        Seconds for any later PDU from its first byte (plus its length at :data:`MIN_RATE`),
        and the allowance of each DIMSE command set or data set before ``min_message_rate``.
    min_message_rate
        Bytes per second a command set or data set must average after ``pdu_timeout``
        (0: no bound).
    """

    def __init__(self, peer: str, max_pdu: int, request_timeout: float,
                 pdu_timeout: float, min_message_rate: float = MIN_MESSAGE_RATE) -> None:
        self.peer = peer
        self.max_pdu = int(max_pdu) if max_pdu else HARD_MAX_PDU
        self.request_timeout = float(request_timeout)
        self.pdu_timeout = float(pdu_timeout)
        self.min_message_rate = max(0.0, float(min_message_rate))
        self.opened = time.monotonic()
        self.first_pdu_done = False
        self.refused = False  #: the reader refused this connection (logged already)
        self.message_started: float | None = None  #: first byte of the message part arriving
        self.message_bytes = 0  #: P-DATA-TF bytes of that part so far
        self._pdu_started = self.opened
        self._message_binds = False  #: the message deadline is the nearer one of this read

    def message_deadline(self, extra_bytes: int = 0) -> float:
        """Deadline (monotonic) of the command set or data set arriving now (inf: none)."""
        if self.message_started is None or not self.min_message_rate:
            return float("inf")
        return (self.message_started + self.pdu_timeout
                + (self.message_bytes + extra_bytes) / self.min_message_rate)

    def header_deadline(self) -> float:
        """Deadline (monotonic) for the 6-byte header of the next PDU."""
        if not self.first_pdu_done:
            return self.opened + self.request_timeout
        self._pdu_started = time.monotonic()
        pdu = self._pdu_started + self.pdu_timeout
        message = self.message_deadline()
        self._message_binds = message < pdu
        return min(pdu, message)

    def body_deadline(self, header_deadline: float, length: int) -> float:
        if not self.first_pdu_done:
            return header_deadline
        pdu = self._pdu_started + self.pdu_timeout + length / MIN_RATE
        message = self.message_deadline(6 + length)
        self._message_binds = message < pdu
        return min(pdu, message)

    def check(self, pdu_type: int, length: int) -> str | None:
        """Why a PDU with this header is refused, or None."""
        limit = self.max_pdu if pdu_type == 0x04 else MAX_CONTROL_PDU
        if length > limit:
            return (f"PDU type 0x{pdu_type:02X} declares {length} bytes, more than the "
                    f"{limit} allowed")
        if not self.first_pdu_done and pdu_type != 0x01:
            return f"PDU type 0x{pdu_type:02X} before an A-ASSOCIATE-RQ"
        return None

    def received(self, pdu_type: int, body: bytes | bytearray | memoryview) -> None:
        """Account for a PDU read whole (``body``: after its 6-byte header).

        A P-DATA-TF's PDVs add to the command set or data set they belong to; a PDV with the
        "last fragment" bit ends it, and the next PDV starts a new one (at this PDU's start).
        """
        self.first_pdu_done = True
        if pdu_type != 0x04:
            return
        pos, end, extra = 0, len(body), 6
        while end - pos >= _PDV_HEADER.size:
            length, _, control = _PDV_HEADER.unpack_from(body, pos)
            if self.message_started is None:
                self.message_started = self._pdu_started
            self.message_bytes += extra + 4 + length
            extra = 0
            if control & 2:  # the last fragment of a command set or data set
                self.message_started, self.message_bytes = None, 0
            pos += 4 + length

    def timeout_key(self) -> str:
        """The metric label of the refusal :meth:`timeout_reason` describes."""
        return "slow_message" if self.first_pdu_done and self._message_binds else "timeout"

    def timeout_reason(self) -> str:
        if not self.first_pdu_done:
            return f"A-ASSOCIATE-RQ not complete {self.request_timeout:g} s after connecting"
        if self._message_binds and self.message_started is not None:
            took = time.monotonic() - self.message_started
            return (f"DIMSE message too slow: {self.message_bytes} bytes in {took:.1f} s, less "
                    f"than scp.min_message_rate={self.min_message_rate:g} bytes/s after "
                    f"scp.network_timeout={self.pdu_timeout:g} s")
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
