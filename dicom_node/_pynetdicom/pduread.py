"""The bounded PDU reader of the Storage SCP's associations (fast and stock DIMSE paths).

:func:`_read_pdu_data` replaces ``DULServiceProvider._read_pdu_data``: the same events and
log messages as pynetdicom 3.0 for every outcome, with the association's
:class:`dicom_node.receive.limits.PduGuard` checking each PDU's declared length before anything
is read and its deadlines, and (on the fast path) P-DATA-TF PDUs split by
:func:`.dimsecodec.split_p_data_tf` without copies. :func:`install_reader` puts it on an
association that stays on pynetdicom's own DIMSE path; :func:`.fastdimse.install` on the others.
"""

from __future__ import annotations

import logging
from typing import Any

from dicom_node._pynetdicom import fastcheck
from dicom_node._pynetdicom.dimsecodec import _PDU_HEADER, split_p_data_tf

__all__ = ["install_reader"]

_DUL_LOG = logging.getLogger("pynetdicom.dul")  # pynetdicom's own messages, as it logs them


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
            and fastcheck._only_standard(assoc, evt.EVT_PDU_RECV)):
        pdvs = split_p_data_tf(body)
        if pdvs is not None:
            pdu = fastcheck._FastPDataTF(pdvs)
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


def install_reader(assoc: Any) -> bool:
    """Read this (not yet started) association's PDUs with :func:`_read_pdu_data` without the
    P-DATA-TF fast path (the stock DIMSE path, bounded by its guard); False: pynetdicom's own
    reader (internals differ)."""
    if not fastcheck.available() or assoc.dul.is_alive():
        return False
    from functools import partial

    assoc.dul._read_pdu_data = partial(_read_pdu_data, assoc.dul, fast=False)
    return True
