"""Fast paths through pynetdicom for the Storage SCP: C-STORE-RQ in, C-STORE-RSP out.

pynetdicom spends most of a C-STORE in generic machinery rather than in the network or the
disk: its two reactor threads (DUL and association) sleep-poll between steps, each command set
is decoded and each response encoded through pydicom's generic dataset reader and writer, a PDU
is read 4 KiB at a time and copied several times, and logging handlers format messages that the
node's log level discards. This module keeps pynetdicom as the association and state-machine
library and replaces only those steps, for the associations of our SCP (installed per association
by :func:`install` from its ``EVT_CONN_OPEN`` handler; the sender's associations are untouched):

* **Waits.** The reactors' idle ``time.sleep`` (routed through :class:`dicom_node._pynetdicom.net._PollClock`)
  becomes a wait that ends as soon as there is work, and never lasts longer than the sleep
  pynetdicom asked for: the DUL thread ``select``-s on its socket and on a wake-up socket written
  whenever a primitive is queued for it; the association thread waits on its DIMSE message
  queue.
* **PDU in.** A P-DATA-TF PDU is read with ``recv_into`` into one buffer and split into its PDVs
  without copies. Other PDU types, malformed P-DATA-TF PDUs and associations with handlers bound
  to ``EVT_DATA_RECV`` (or non-standard ``EVT_PDU_RECV`` handlers) use pynetdicom's decoder.
* **DIMSE in.** A C-STORE-RQ whose command set comes in one fragment is decoded by
  :func:`decode_command_set` / :func:`c_store_request` into the same ``C_STORE`` primitive
  pynetdicom builds (same setters, same values); its data set fragments are joined once.
  Anything else (other messages, unexpected command elements, multi-fragment command sets,
  ``STORE_RECV_CHUNKED_DATASET``, ``EVT_DIMSE_RECV`` handlers that would log or are not
  pynetdicom's standard ones) goes through pynetdicom's ``DIMSEMessage``.
* **Serving.** A complete C-STORE-RQ is served by pynetdicom's own ``StorageServiceClass`` (so
  the ``EVT_C_STORE`` handler, its status handling and the response are pynetdicom's) in the DUL
  thread that decoded it, when nothing else is queued for or being served by the association
  thread; that saves two thread wake-ups per instance (request to the association thread,
  response back). Anything else is served by the association thread as usual.
* **DIMSE and PDU out.** A plain C-STORE-RSP (no Offending Element, no Error Comment) is encoded
  by :func:`encode_c_store_rsp`, byte-identical to pynetdicom's encoding, and P-DATA-TF PDUs by
  :func:`encode_p_data_tf`.

Version guard: the package's one guard (:func:`dicom_node._pynetdicom.problems`: the verified
pynetdicom series and every private name used), and pynetdicom's own encoding and decoding of a
sample C-STORE exchange matching this module's (checked once, see :func:`available`). Otherwise
a warning is logged once and every association runs stock pynetdicom.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
from io import BytesIO
from typing import Any, Iterable

__all__ = [
    "available",
    "install",
    "decode_command_set",
    "c_store_request",
    "encode_c_store_rsp",
    "encode_p_data_tf",
    "split_p_data_tf",
    "install_reader",
]

log = logging.getLogger(__name__)

_ELEMENT = struct.Struct("<HHI")  # Implicit VR Little Endian element header: group, element, len
_US = struct.Struct("<HHIH")
_UL = struct.Struct("<HHII")
_PDU_HEADER = struct.Struct(">BBL")  # PDU type, reserved, length
_PDV_HEADER = struct.Struct(">LB")  # PDV item length, presentation context ID

# Command Field values (PS3.7 E.1) and Command Data Set Type "no data set"
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101

# Elements (group 0000) a C-STORE-RQ may carry, PS3.7 9.3.1.1
_RQ_ELEMENTS = frozenset({
    0x0000,  # CommandGroupLength UL
    0x0002,  # AffectedSOPClassUID UI
    0x0100,  # CommandField US
    0x0110,  # MessageID US
    0x0700,  # Priority US
    0x0800,  # CommandDataSetType US
    0x1000,  # AffectedSOPInstanceUID UI
    0x1030,  # MoveOriginatorApplicationEntityTitle AE
    0x1031,  # MoveOriginatorMessageID US
})
_RQ_US = (0x0100, 0x0110, 0x0700, 0x0800, 0x1031)

#: Serve complete C-STORE requests in the DUL thread (see :func:`_serve_inline`).
INLINE_STORE = True

_DUL_LOG = logging.getLogger("pynetdicom.dul")  # pynetdicom's own messages, as it logs them
_HANDLER_LOG = logging.getLogger("pynetdicom._handlers")


# -- command set codec (Implicit VR Little Endian, group 0000: PS3.7 6.3.1) ----------------------
def decode_command_set(raw: bytes | bytearray | memoryview) -> dict[int, bytes] | None:
    """Split an encoded command set into ``{element number: value bytes}``.

    ``None`` when it is not a plain group-0000 element list (another group, a length running
    past the end, an undefined length, a repeated element).
    """
    out: dict[int, bytes] = {}
    pos, end = 0, len(raw)
    while pos < end:
        if end - pos < 8:
            return None
        group, elem, length = _ELEMENT.unpack_from(raw, pos)
        pos += 8
        if group != 0 or length > end - pos or elem in out:
            return None
        out[elem] = bytes(raw[pos:pos + length])
        pos += length
    return out


def _text(value: bytes) -> str | None:
    """A single-valued string as pydicom decodes it (ISO 8859-1); None when multi-valued."""
    s = value.decode("latin-1")
    return None if "\\" in s else s


def c_store_request(fields: dict[int, bytes] | None) -> Any | None:
    """The ``C_STORE`` request primitive pynetdicom would build from these command elements.

    The values are decoded as pydicom decodes them (UI: trailing NUL and spaces removed; AE:
    surrounding spaces removed; US: little-endian unsigned short) and set through the
    primitive's own setters in tag order, as ``DIMSEMessage.message_to_primitive`` does. Returns
    ``None`` for anything but a C-STORE-RQ with a data set and well-formed values (the caller
    then uses pynetdicom's decoder, with its own error handling).
    """
    from pynetdicom.dimse_primitives import C_STORE

    if not fields or not fields.keys() <= _RQ_ELEMENTS:
        return None
    for elem in _RQ_US:
        if elem in fields and len(fields[elem]) != 2:
            return None
    if 0x0000 in fields and len(fields[0x0000]) != 4:
        return None
    us = {e: struct.unpack("<H", fields[e])[0] for e in _RQ_US if e in fields}
    if us.get(0x0100) != C_STORE_RQ or us.get(0x0800) in (None, NO_DATA_SET):
        return None
    try:
        req = C_STORE()
        for elem, attr in ((0x0002, "AffectedSOPClassUID"), (0x1000, "AffectedSOPInstanceUID")):
            if elem in fields:
                uid = _text(fields[elem])
                if uid is None:
                    return None
                setattr(req, attr, uid.rstrip("\0 "))
        if 0x0110 in fields:
            req.MessageID = us[0x0110]
        if 0x0700 in fields:
            req.Priority = us[0x0700]
        if 0x1030 in fields:
            aet = _text(fields[0x1030])
            if aet is None or not aet.strip():
                return None
            req.MoveOriginatorApplicationEntityTitle = aet.strip()
        if 0x1031 in fields:
            req.MoveOriginatorMessageID = us[0x1031]
    except Exception:  # noqa: BLE001 - pynetdicom's decoder reports it its own way
        return None
    return req


def _ui_element(elem: int, uid: str) -> bytes:
    value = uid.encode("latin-1")
    if len(value) % 2:
        value += b"\0"
    return _ELEMENT.pack(0, elem, len(value)) + value


def encode_c_store_rsp(message_id_being_responded_to: int, status: int,
                       sop_class_uid: str | None, sop_instance_uid: str | None) -> bytes:
    """Encode the command set of a C-STORE-RSP without Offending Element or Error Comment.

    Byte-identical to pynetdicom's ``C_STORE_RSP`` encoding: Implicit VR Little Endian, group
    length first, elements in tag order, UIDs padded to even length with NUL, absent UIDs left
    out, Command Data Set Type 0x0101 (no data set).
    """
    parts = []
    if sop_class_uid:
        parts.append(_ui_element(0x0002, sop_class_uid))
    parts.append(_US.pack(0, 0x0100, 2, C_STORE_RSP))
    parts.append(_US.pack(0, 0x0120, 2, message_id_being_responded_to))
    parts.append(_US.pack(0, 0x0800, 2, NO_DATA_SET))
    parts.append(_US.pack(0, 0x0900, 2, status))
    if sop_instance_uid:
        parts.append(_ui_element(0x1000, sop_instance_uid))
    body = b"".join(parts)
    return _UL.pack(0, 0x0000, 4, len(body)) + body


# -- PDU codec --------------------------------------------------------------------------------
def encode_p_data_tf(pdvs: Iterable[tuple[int, bytes]]) -> bytes:
    """Encode a P-DATA-TF PDU (PS3.8 9.3.5) from ``(context ID, PDV data)`` pairs."""
    parts = []
    for context_id, data in pdvs:
        parts.append(_PDV_HEADER.pack(len(data) + 1, context_id))
        parts.append(data)
    body = b"".join(parts)
    return _PDU_HEADER.pack(0x04, 0, len(body)) + body


def split_p_data_tf(body: bytearray | bytes) -> list[tuple[int, memoryview]] | None:
    """The PDVs of a P-DATA-TF PDU body (after its 6-byte header) as zero-copy views.

    ``None`` when malformed (an item running past the end, an item without its message control
    header, no item at all): pynetdicom's decoder then handles the PDU as it always has.
    """
    view = memoryview(body)
    pos, end = 0, len(body)
    pdvs = []
    while pos < end:
        if end - pos < 6:
            return None
        length, context_id = _PDV_HEADER.unpack_from(body, pos)
        if length < 2 or length > end - pos - 4:
            return None
        pdvs.append((context_id, view[pos + 5:pos + 4 + length]))
        pos += 4 + length
    return pdvs or None


# -- version guard ----------------------------------------------------------------------------
_AVAILABLE: bool | None = None
_STANDARD_HANDLERS: frozenset = frozenset()
_FastPDataTF: Any = None


def _self_check() -> str | None:
    """Compare this module's codec with pynetdicom's on sample messages; a reason if it differs."""
    from pynetdicom import dimse_messages as dm
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    from dicom_node._pynetdicom import problems

    found = problems()  # the version series and every private name used (the one guard)
    if found:
        return "; ".join(found)

    # C-STORE-RSP: ours vs pynetdicom's, for an odd and an even UID length and two statuses
    for status, sop_class, sop_inst in ((0x0000, "1.2.840.10008.5.1.4.1.1.4", "1.2.3.4"),
                                        (0xA700, "1.2.840.10008.5.1.4.1.1.4.1", "1.2.3.45")):
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = 7
        rsp.AffectedSOPClassUID = sop_class
        rsp.AffectedSOPInstanceUID = sop_inst
        rsp.Status = status
        msg = dm.C_STORE_RSP()
        msg.primitive_to_message(rsp)
        if encode(msg.command_set, True, True) != encode_c_store_rsp(7, status, sop_class,
                                                                     sop_inst):
            return "C-STORE-RSP encoding differs from pynetdicom's"
    # C-STORE-RQ: pynetdicom's decoder vs ours
    rq = C_STORE()
    rq.MessageID = 12
    rq.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    rq.AffectedSOPInstanceUID = "1.2.3.4.5"
    rq.Priority = 0
    rq.MoveOriginatorApplicationEntityTitle = "MOVER"
    rq.MoveOriginatorMessageID = 3
    rq.DataSet = BytesIO(b"\x08\x00\x18\x00\x00\x00\x00\x00")
    out = dm.C_STORE_RQ()
    out.primitive_to_message(rq)
    pdata = list(out.encode_msg(1, 0))
    stock = dm.DIMSEMessage()
    done = False
    for p in pdata:
        done = stock.decode_msg(p)
    if not done:
        return "pynetdicom did not decode its own C-STORE-RQ"
    theirs = stock.message_to_primitive()
    cmd = pdata[0].presentation_data_value_list[0][1]
    ours = c_store_request(decode_command_set(cmd[1:]))
    if ours is None:
        return "C-STORE-RQ command set not understood"
    for attr in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
                 "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID"):
        if getattr(ours, attr) != getattr(theirs, attr):
            return f"C-STORE-RQ {attr} decodes differently"
    # P-DATA-TF encoding
    pdvs = [(1, b"\x03abc"), (3, b"\x02" + bytes(range(7)))]
    p = P_DATA()
    p.presentation_data_value_list.extend(pdvs)
    if P_DATA_TF(p).encode() != encode_p_data_tf(pdvs):
        return "P-DATA-TF encoding differs from pynetdicom's"
    return None


def available() -> bool:
    """True when the fast paths match this pynetdicom (checked once; logs when they do not)."""
    global _AVAILABLE, _STANDARD_HANDLERS, _FastPDataTF
    if _AVAILABLE is not None:
        return _AVAILABLE
    try:
        reason = _self_check()
    except Exception as exc:  # noqa: BLE001 - any drift in internals means: stay stock
        reason = f"{type(exc).__name__}: {exc}"
    if reason:
        import pynetdicom

        log.warning("fast DIMSE paths off, pynetdicom %s runs unmodified: %s",
                    getattr(pynetdicom, "__version__", "?"), reason)
        _AVAILABLE = False
        return False
    from pynetdicom import _handlers
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    _STANDARD_HANDLERS = frozenset((
        _handlers.standard_pdu_recv_handler, _handlers.standard_pdu_sent_handler,
        _handlers.standard_dimse_recv_handler, _handlers.standard_dimse_sent_handler))

    class FastPDataTF(P_DATA_TF):
        """A received P-DATA-TF whose PDVs were split by :func:`split_p_data_tf`."""

        def __init__(self, pdvs: list[tuple[int, memoryview]]) -> None:
            super().__init__()
            self._pdvs = pdvs

        def to_primitive(self) -> Any:
            primitive = P_DATA()
            # memoryviews, not bytes: pynetdicom only slices and joins PDV values (no copy here)
            primitive.presentation_data_value_list.extend(self._pdvs)  # type: ignore[arg-type]
            return primitive

    _FastPDataTF = FastPDataTF
    _AVAILABLE = True
    return True


# -- per-association installation -------------------------------------------------------------
def _only_standard(assoc: Any, event: Any) -> bool:
    """No handler bound to ``event`` except pynetdicom's standard logging ones."""
    return all(h[0] in _STANDARD_HANDLERS for h in assoc.get_handlers(event))


class _Wake:
    """A socket pair: writing to one end wakes a ``select`` on the other."""

    def __init__(self) -> None:
        self.r, self.w = socket.socketpair()
        self.r.setblocking(False)
        self.w.setblocking(False)

    def set(self) -> None:
        try:
            self.w.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed (the DUL has ended)
            pass

    def drain(self) -> None:
        try:
            while self.r.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.w.close()
        self.r.close()


class _WakingQueue(queue.Queue):
    """The DUL's ``to_provider_queue``: a put also wakes the DUL thread."""

    def __init__(self, wake: _Wake) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake.set()


class _Pending:
    """DIMSE messages queued for the association thread and not yet served by it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def add(self) -> None:
        with self.lock:
            self.count += 1

    def done(self) -> None:
        with self.lock:
            self.count = max(0, self.count - 1)


class _CountingQueue(queue.Queue):
    """The DIMSE ``msg_queue``: counts what is queued for the association thread."""

    def __init__(self, pending: _Pending) -> None:
        super().__init__()
        self._pending = pending

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self._pending.add()
        super().put(item, block, timeout)


def _serve_inline(assoc: Any, req: Any, context_id: int) -> bool:
    """Run the Storage service for a complete C-STORE-RQ here, in the DUL thread.

    pynetdicom hands every request to the association thread (one thread wake-up to serve it,
    another to send the response). Here :class:`pynetdicom.service_class.StorageServiceClass`
    itself runs where the request was decoded, with what ``Association._serve_request`` checks
    first; the response primitive goes to the DUL's queue and out on its next loop. False
    (nothing done) when any of those checks would not pass: the association thread then serves
    the request as usual.
    """
    from pynetdicom import _config
    from pynetdicom.service_class import StorageServiceClass
    from pynetdicom.sop_class import uid_to_service_class

    if assoc._sent_release or not assoc.is_established or not req.is_valid_request:
        return False
    context = assoc._accepted_cx.get(context_id)
    if context is None:
        return False
    if not _config.UNRESTRICTED_STORAGE_SERVICE:
        class_uid = req.AffectedSOPClassUID
        class_uid = assoc.acceptor.accepted_common_extended.get(class_uid, (class_uid,))[0]
        if uid_to_service_class(class_uid) is not StorageServiceClass:
            return False
    dimse = assoc.dimse
    try:
        dimse.cancel_req = {}
        StorageServiceClass(assoc).SCP(req, context)
        dimse.cancel_req = {}
    except Exception as exc:
        logging.getLogger("pynetdicom.association").exception(exc)
        assoc._abort_nonblocking()  # a blocking abort would wait for this very thread
    return True


def _dul_wait(dul: Any, wake: _Wake, seconds: float) -> None:
    """The DUL thread's idle wait: until its socket is readable, a primitive is queued for it,
    or ``seconds`` have passed."""
    raw = getattr(dul.socket, "socket", None)
    if raw is None:
        time.sleep(seconds)
        return
    if isinstance(raw, ssl.SSLSocket) and raw.pending():
        return
    try:
        ready, _, _ = select.select([raw, wake.r], [], [], seconds)
    except (OSError, ValueError):  # socket closed meanwhile: the reactor will notice
        time.sleep(seconds)
        return
    if wake.r in ready:
        wake.drain()


def _queue_wait(q: queue.Queue, seconds: float) -> None:
    """The association thread's idle wait: until a DIMSE message is queued or ``seconds``."""
    with q.not_empty:
        if not q.queue:
            q.not_empty.wait(seconds)


def _recv_exact(assoc_socket: Any, n: int, deadline: float = float("inf")) -> bytearray:
    """Read ``n`` bytes (fewer only when the peer closed the connection) by ``deadline``
    (monotonic; ``TimeoutError`` after it); the buffer grows with the bytes received."""
    from dicom_node.receive.limits import read_exact

    return read_exact(assoc_socket.socket, n, deadline)


# A-ABORT, source 2 (service provider), reason 0 (not specified)
_A_ABORT = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00"


def _refuse(dul: Any, guard: Any, reason: str, key: str) -> None:
    """Log and count the refusal, send an A-ABORT and close the connection (Evt17)."""
    from dicom_node.receive.limits import refused

    refused(guard.peer, reason, key)
    guard.refused = True
    try:
        dul.socket.socket.sendall(_A_ABORT)
    except (OSError, AttributeError):
        pass
    dul.socket.close()


def _read_failed(dul: Any, guard: Any, exc: OSError) -> None:
    """A PDU read ended early: past its deadline a refusal, else a lost connection (Evt17)."""
    if guard is not None and isinstance(exc, TimeoutError):
        _refuse(dul, guard, guard.timeout_reason(), guard.timeout_key())
        return
    _DUL_LOG.error("Connection closed before the entire PDU was received")
    _DUL_LOG.exception(exc)
    dul.event_queue.put("Evt17")


def _read_pdu_data(dul: Any, fast: bool = True) -> None:
    """``DULServiceProvider._read_pdu_data`` with the P-DATA-TF fast path (same events and log
    messages as pynetdicom 3.0 for every outcome), bounded by the association's
    :class:`dicom_node.receive.limits.PduGuard` (``dul._node_guard``) when it has one: the declared
    length is checked before anything is read, and the PDU must arrive by its deadline.
    ``fast=False``: every PDU is decoded by pynetdicom (``scp.fast_dimse: false``)."""
    from pynetdicom import evt

    guard = getattr(dul, "_node_guard", None)
    deadline = guard.header_deadline() if guard is not None else float("inf")
    try:
        head = _recv_exact(dul.socket, 6, deadline)
    except (OSError, TimeoutError) as exc:
        _read_failed(dul, guard, exc)
        return
    if len(head) != 6:
        dul.event_queue.put("Evt17")
        return
    pdu_type, _, pdu_length = _PDU_HEADER.unpack(head)
    if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
        _DUL_LOG.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
        dul.event_queue.put("Evt19")
        return
    if guard is not None:
        why = guard.check(pdu_type, pdu_length)
        if why:
            _refuse(dul, guard, why, "pdu_too_large" if "declares" in why else "protocol")
            return
        deadline = guard.body_deadline(deadline, pdu_length)
    try:
        body = _recv_exact(dul.socket, pdu_length, deadline)
    except (OSError, TimeoutError) as exc:
        _read_failed(dul, guard, exc)
        return
    if len(body) != pdu_length:
        _DUL_LOG.error(f"The received PDU is shorter than expected ({6 + len(body)} of "
                       f"{6 + pdu_length} bytes received)")
        dul.event_queue.put("Evt17")
        return

    if guard is not None:
        guard.received(pdu_type, body)
    pdu = None
    assoc = dul.assoc
    if (fast and pdu_type == 0x04 and not assoc.get_handlers(evt.EVT_DATA_RECV)
            and _only_standard(assoc, evt.EVT_PDU_RECV)):
        pdvs = split_p_data_tf(body)
        if pdvs is not None:
            pdu = _FastPDataTF(pdvs)
            dul.event_queue.put("Evt10")
    if pdu is None:
        try:
            pdu, event = dul._decode_pdu(head + body)
            dul.event_queue.put(event)
        except Exception as exc:  # noqa: BLE001 - as pynetdicom: Evt19
            _DUL_LOG.error("Unable to decode the received PDU data")
            _DUL_LOG.exception(exc)
            dul.event_queue.put("Evt19")
            return
    dul._recv_pdu.put(pdu)


def _send_pdu(dul: Any, orig_send: Any, pdu: Any) -> None:
    """``DULServiceProvider._send``: P-DATA-TF encoded by :func:`encode_p_data_tf`."""
    from pynetdicom import evt
    from pynetdicom.pdu import P_DATA_TF

    if (pdu.__class__ is P_DATA_TF and dul.socket is not None
            and _only_standard(dul.assoc, evt.EVT_PDU_SENT)):
        dul.socket.send(encode_p_data_tf(  # PDVs to send have both context ID and value
            (item.presentation_context_id, item.presentation_data_value)  # type: ignore[misc]
            for item in pdu.presentation_data_value_items))
        return
    orig_send(pdu)


class _Incoming:
    """A C-STORE-RQ being received on the fast path."""

    __slots__ = ("context_id", "request", "command", "chunks")

    def __init__(self, context_id: int, request: Any, command: bytes) -> None:
        self.context_id = context_id
        self.request = request
        self.command = command
        self.chunks: list[Any] = []


def _stock_pdv(dimse: Any, orig_receive: Any, context_id: int, data: Any) -> None:
    from pynetdicom.pdu_primitives import P_DATA

    p = P_DATA()
    p.presentation_data_value_list.append((context_id, bytes(data)))
    orig_receive(p)


def _to_stock(dimse: Any, inc: _Incoming) -> None:
    """Hand a C-STORE-RQ received so far to pynetdicom's ``DIMSEMessage`` (exact stock state)."""
    from pynetdicom.dimse_messages import DIMSEMessage
    from pynetdicom.pdu_primitives import P_DATA

    msg = DIMSEMessage()
    p = P_DATA()
    p.presentation_data_value_list.append((inc.context_id, b"\x03" + inc.command))
    msg.decode_msg(p, dimse.assoc)
    data_set = msg.data_set
    assert data_set is not None  # decode_msg of a command with a data set to come makes one
    for chunk in inc.chunks:
        data_set.write(chunk)
    dimse.message = msg


def _receive_primitive(dimse: Any, orig_receive: Any, primitive: Any) -> None:
    """``DIMSEServiceProvider.receive_primitive`` with the C-STORE-RQ fast path."""
    from pynetdicom import _config, evt
    from pynetdicom.pdu_primitives import P_DATA

    if primitive.__class__ is not P_DATA:
        orig_receive(primitive)
        return
    for context_id, data in primitive.presentation_data_value_list:
        inc = getattr(dimse, "_node_incoming", None)
        control = data[0]
        if inc is None:
            if (control & 3 == 3 and dimse.message is None
                    and not _config.STORE_RECV_CHUNKED_DATASET
                    and _only_standard(dimse.assoc, evt.EVT_DIMSE_RECV)
                    and not _HANDLER_LOG.isEnabledFor(logging.INFO)):
                command = bytes(data[1:])
                req = c_store_request(decode_command_set(command))
                if req is not None:
                    dimse._node_incoming = _Incoming(context_id, req, command)
                    continue
            _stock_pdv(dimse, orig_receive, context_id, data)
        elif not control & 1:  # a data set fragment
            inc.chunks.append(data[1:])
            if control & 2:  # the last one
                dimse._node_incoming = None
                req = inc.request
                req.DataSet = BytesIO(b"".join(inc.chunks))
                req._context_id = inc.context_id
                pending = getattr(dimse, "_node_pending", None)
                if (pending is None or pending.count or dimse.msg_queue.queue
                        or not _serve_inline(dimse.assoc, req, inc.context_id)):
                    dimse.msg_queue.put((inc.context_id, req))
        else:  # a command fragment inside a data set: pynetdicom decides what that means
            dimse._node_incoming = None
            _to_stock(dimse, inc)
            _stock_pdv(dimse, orig_receive, context_id, data)


def _send_msg(dimse: Any, orig_send: Any, primitive: Any, context_id: int) -> None:
    """``DIMSEServiceProvider.send_msg`` with the C-STORE-RSP fast path."""
    from pynetdicom import evt
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.pdu_primitives import P_DATA

    if (primitive.__class__ is C_STORE
            and isinstance(primitive.MessageIDBeingRespondedTo, int)
            and isinstance(primitive.Status, int) and 0 <= primitive.Status < 0x10000
            and primitive.OffendingElement is None and primitive.ErrorComment is None
            and _only_standard(dimse.assoc, evt.EVT_DIMSE_SENT)):
        command = encode_c_store_rsp(primitive.MessageIDBeingRespondedTo, primitive.Status,
                                     primitive.AffectedSOPClassUID,
                                     primitive.AffectedSOPInstanceUID)
        max_pdu = dimse.maximum_pdu_size
        if max_pdu == 0 or (max_pdu is not None and max_pdu >= 7
                            and len(command) <= max_pdu - 6):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
            dimse.dul.send_pdu(pdata)
            return
    orig_send(primitive, context_id)


def install_reader(assoc: Any) -> bool:
    """Read this (not yet started) association's PDUs with :func:`_read_pdu_data` without the
    P-DATA-TF fast path (the stock DIMSE path, bounded by its guard); False: pynetdicom's own
    reader (internals differ)."""
    if not available() or assoc.dul.is_alive():
        return False
    from functools import partial

    assoc.dul._read_pdu_data = partial(_read_pdu_data, assoc.dul, fast=False)
    return True


def install(assoc: Any) -> bool:
    """Switch one not yet started acceptor association to the fast paths; False: left stock.

    Call it from an ``EVT_CONN_OPEN`` handler (the association's threads have not started).
    """
    if not available():
        return False
    from functools import partial

    dul, dimse = assoc.dul, assoc.dimse
    if (dul.is_alive() or assoc.is_alive() or type(dul.to_provider_queue) is not queue.Queue
            or not dul.to_provider_queue.empty()):
        return False
    wake = _Wake()
    dul.to_provider_queue = _WakingQueue(wake)
    dul._node_wait = partial(_dul_wait, dul, wake)
    if (INLINE_STORE and type(dimse.msg_queue) is queue.Queue and dimse.msg_queue.empty()
            and hasattr(assoc, "_sent_release") and hasattr(assoc, "_accepted_cx")):
        pending = _Pending()
        dimse.msg_queue = _CountingQueue(pending)
        dimse._node_pending = pending
        orig_serve = assoc._serve_request

        def serve_request(msg: Any, context_id: int) -> None:
            try:
                orig_serve(msg, context_id)
            finally:
                pending.done()

        assoc._serve_request = serve_request
    assoc._node_wait = partial(_queue_wait, dimse.msg_queue)
    dul._read_pdu_data = partial(_read_pdu_data, dul)
    dul._send = partial(_send_pdu, dul, dul._send)
    dimse._node_incoming = None
    dimse.receive_primitive = partial(_receive_primitive, dimse, dimse.receive_primitive)
    dimse.send_msg = partial(_send_msg, dimse, dimse.send_msg)

    orig_kill, orig_run = dul.kill_dul, dul.run

    def kill_dul() -> None:
        orig_kill()
        wake.set()

    def run() -> None:
        try:
            orig_run()
        finally:
            wake.close()

    dul.kill_dul = kill_dul
    dul.run = run
    return True
