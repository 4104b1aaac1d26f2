"""Every DIMSE request gets an answer (patch 5 of the package).

pynetdicom hands a request the node does not serve (N-ACTION, C-FIND, ...) to the storage
service, which ignores it, and drops a C-STORE request it finds invalid (an empty SOP Instance
UID): the peer waits for a response that never comes. :func:`answer_every_request` wraps
``Association._serve_request`` (no hook reaches it) so that C-STORE and C-ECHO are served as
pynetdicom serves them and anything else is answered 0x0211 (a bad C-STORE 0xC000).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from pynetdicom.association import Association

log = logging.getLogger("dicom_node.receive.scp")  # the node's SCP log, as before the move

__all__ = ["answer_every_request", "STATUS_UNRECOGNIZED_OPERATION", "STATUS_CANNOT_UNDERSTAND"]

STATUS_CANNOT_UNDERSTAND = 0xC000


def answer_every_request(assoc: Association) -> None:
    """Install the wrapper on one association (from ``EVT_CONN_OPEN``)."""
    assoc._serve_request = partial(_serve_or_refuse, assoc, assoc._serve_request)  # type: ignore[method-assign]


#: Status of a DIMSE request this node does not serve (PS3.7 C.4.2: Unrecognized Operation).
STATUS_UNRECOGNIZED_OPERATION = 0x0211


def _serve_or_refuse(assoc: Any, serve: Any, msg: Any, context_id: int) -> None:
    """``Association._serve_request``: C-STORE and C-ECHO as pynetdicom serves them; any other
    request (N-ACTION, C-FIND, ...) is answered with 0x0211, and a C-STORE request pynetdicom
    finds invalid (an empty SOP Instance UID) with 0xC000, instead of silence (pynetdicom
    hands the first to the storage service and ignores the second: no response at all)."""
    from pynetdicom.dimse_primitives import C_CANCEL, C_ECHO, C_STORE

    is_request = getattr(msg, "MessageID", None) is not None
    valid = bool(getattr(msg, "is_valid_request", False))
    if (not is_request or isinstance(msg, C_CANCEL)
            or (valid and isinstance(msg, (C_STORE, C_ECHO)))):
        serve(msg, context_id)
        return
    status = STATUS_CANNOT_UNDERSTAND if isinstance(msg, C_STORE) else STATUS_UNRECOGNIZED_OPERATION
    rsp = type(msg)()
    rsp.MessageIDBeingRespondedTo = msg.MessageID
    rsp.Status = status
    for src, dst in (("AffectedSOPClassUID", "AffectedSOPClassUID"),
                     ("RequestedSOPClassUID", "AffectedSOPClassUID"),
                     ("AffectedSOPInstanceUID", "AffectedSOPInstanceUID"),
                     ("RequestedSOPInstanceUID", "AffectedSOPInstanceUID")):
        value = getattr(msg, src, None)
        if value and hasattr(rsp, dst):
            try:
                setattr(rsp, dst, value)
            except (TypeError, ValueError):
                pass
    log.warning("%s %s: answered 0x%04X; calling_ae=%s address=%s", msg.msg_type,
                "request incomplete" if valid is False and isinstance(msg, C_STORE)
                else "not supported", status, str(assoc.requestor.ae_title).strip(),
                assoc.requestor.address)
    try:
        assoc.dimse.send_msg(rsp, context_id)
    except Exception as exc:  # noqa: BLE001 - never silence: abort instead
        log.warning("cannot answer %s (%s): association aborted", msg.msg_type, exc)
        assoc.abort()
