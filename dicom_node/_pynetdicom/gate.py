"""The association gate: a wrapper around pynetdicom's acceptor negotiation that can reject early.

``set_gate(ae, gate)`` registers ``gate(calling_ae, address, called_ae) -> reject reason or None`` for the
associations an AE accepts; a reason ``(result, source, diagnostic)`` is sent as A-ASSOCIATE-RJ
before any presentation context is negotiated. Patch 1 of :mod:`dicom_node._pynetdicom`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from pynetdicom import AE, evt
from pynetdicom.acse import ACSE

from dicom_node._pynetdicom import require

__all__ = ["Gate", "set_gate"]

Gate = Callable[[str, str, str], tuple[int, int, int] | None]

_GATES: weakref.WeakKeyDictionary[AE, Gate] = weakref.WeakKeyDictionary()
_ORIG_NEGOTIATE = ACSE._negotiate_as_acceptor


def _gated_negotiate_as_acceptor(self: ACSE) -> None:
    gate = _GATES.get(self.assoc.ae)
    if gate is not None:
        rq = self.requestor.primitive
        assert rq is not None  # set by the A-ASSOCIATE-RQ that started this negotiation
        self.requestor.ae_title = rq.calling_ae_title
        rsd = gate(str(rq.calling_ae_title).strip(), self.assoc.requestor.address,
                   str(rq.called_ae_title).strip())
        if rsd:
            self.send_reject(*rsd)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
    _ORIG_NEGOTIATE(self)


def set_gate(ae: AE, gate: Gate) -> None:
    """Run ``gate`` before negotiating each association ``ae`` accepts (installs the wrapper once).

    Raises
    ------
    RuntimeError
        The installed pynetdicom is not the verified one (see :func:`dicom_node._pynetdicom.problems`).
    """
    require("the association gate")
    if ACSE._negotiate_as_acceptor is not _gated_negotiate_as_acceptor:
        ACSE._negotiate_as_acceptor = _gated_negotiate_as_acceptor  # type: ignore[method-assign]
    _GATES[ae] = gate
