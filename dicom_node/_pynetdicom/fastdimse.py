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

Modules: the codec is :mod:`.dimsecodec`, the bounded PDU reader (also used on the stock path)
:mod:`.pduread`, and the version check :mod:`.fastcheck`; this module installs them per
association and holds the waits, the inline serving and the DIMSE fast paths. Their public
names are importable from here as before.

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
import threading
import time
from io import BytesIO
from typing import Any

from dicom_node._pynetdicom.dimsecodec import (
    c_store_request,
    decode_command_set,
    encode_c_store_rsp,
    encode_p_data_tf,
    split_p_data_tf,
)
from dicom_node._pynetdicom.fastcheck import _only_standard, available
from dicom_node._pynetdicom.pduread import _read_pdu_data, install_reader

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

#: Serve complete C-STORE requests in the DUL thread (see :func:`_serve_inline`).
INLINE_STORE = True

_HANDLER_LOG = logging.getLogger("pynetdicom._handlers")


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
