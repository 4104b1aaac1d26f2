"""Whether the fast paths (:mod:`.fastdimse`) match the installed pynetdicom: :func:`available`.

The package's one guard (:func:`dicom_node._pynetdicom.problems`: the verified pynetdicom series
and every private name used), and pynetdicom's own encoding and decoding of a sample C-STORE
exchange matching :mod:`.dimsecodec` (checked once). Otherwise a warning is logged once and
every association runs stock pynetdicom. Also the P-DATA-TF class the fast reader hands to
pynetdicom (:data:`_FastPDataTF`, made by :func:`available`) and :func:`_only_standard`.
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any

from dicom_node._pynetdicom.dimsecodec import (
    c_store_request,
    decode_command_set,
    encode_c_store_rsp,
    encode_p_data_tf,
)

__all__ = ["available"]

log = logging.getLogger("dicom_node._pynetdicom.fastdimse")  # its warning, as before the split

_AVAILABLE: bool | None = None
_STANDARD_HANDLERS: frozenset = frozenset()
_FastPDataTF: Any = None


def _self_check() -> str | None:
    """Compare :mod:`.dimsecodec` with pynetdicom's codec on sample messages; a reason if it differs."""
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
