"""The C-STORE command set and P-DATA-TF codec of the fast paths (:mod:`.fastdimse`).

Implicit VR Little Endian command sets (group 0000, PS3.7 6.3.1): :func:`decode_command_set`
splits one into its elements and :func:`c_store_request` builds the ``C_STORE`` primitive
pynetdicom would build from them; :func:`encode_c_store_rsp` encodes a plain C-STORE-RSP
byte-identically to pynetdicom. P-DATA-TF PDUs (PS3.8 9.3.5): :func:`encode_p_data_tf` and
:func:`split_p_data_tf` (zero-copy PDV views). Plain functions of bytes; whether they still match
the installed pynetdicom is checked by :func:`.fastcheck.available`.
"""

from __future__ import annotations

import struct
from typing import Any, Iterable

__all__ = [
    "C_STORE_RQ",
    "C_STORE_RSP",
    "NO_DATA_SET",
    "decode_command_set",
    "c_store_request",
    "encode_c_store_rsp",
    "encode_p_data_tf",
    "split_p_data_tf",
]

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
