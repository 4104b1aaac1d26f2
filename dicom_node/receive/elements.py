"""Data element headers as PS3.5 encodes them, read with ``struct`` from the received bytes.

Shared by :mod:`dicom_node.receive.headerscan` (the few values the SCP needs per instance) and
:mod:`dicom_node.receive.structure` (the whole-dataset check): the byte order of element
headers, which explicit VRs have a 2- or 4-byte length, item and delimiter tags, and
:func:`_element_header`, which reads one element header or says why it cannot.
"""

from __future__ import annotations

import struct
from typing import Any

_TAG_LEN = struct.Struct("<HHI")
_U32 = struct.Struct("<I")
# explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"))
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 16


class _Layout:
    """The byte order of element headers and of the US values read for the pixel check."""

    __slots__ = ("tag_len", "tag_vr_len16", "u32", "us")

    def __init__(self, order: str) -> None:
        self.tag_len = struct.Struct(order + "HHI")  # group, element, 4-byte length
        self.tag_vr_len16 = struct.Struct(order + "HH2sH")  # explicit VR with a 2-byte length
        self.u32 = struct.Struct(order + "I")
        self.us = struct.Struct(order + "H")


_LE = _Layout("<")
_BE = _Layout(">")


#: explicit VRs with a 2-byte length (PS3.5 table 6.2-1)
_SHORT_VRS = frozenset((b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS",
                        b"LO", b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL",
                        b"US"))


class _Unsure(Exception):
    """Something :func:`scan_header` leaves to pydicom."""


class _Damaged(_Unsure):
    """The dataset is not whole; the message says where."""


def _where(tag: int, pos: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {pos}"


def _element_header(b: bytes, pos: int, end: int, implicit: bool,
                    layout: _Layout = _LE) -> tuple[int, Any, int, int]:
    """``(tag, VR or None, length, value position)`` of the element (or delimiter) at ``pos``;
    :class:`_Damaged` when its header does not fit or its VR is unknown."""
    if end - pos < 8:
        raise _Damaged(f"dataset ends inside an element header at byte {pos}")
    group, elem, length = layout.tag_len.unpack_from(b, pos)
    tag = group << 16 | elem
    if implicit or group == 0xFFFE:
        return tag, None, length, pos + 8
    vr = b[pos + 4:pos + 6]
    if vr in _LONG_VRS:
        if end - pos < 12:
            raise _Damaged(f"dataset ends inside the header of {_where(tag, pos)}")
        return tag, vr, layout.u32.unpack_from(b, pos + 8)[0], pos + 12
    if vr in _SHORT_VRS:
        return tag, vr, layout.tag_vr_len16.unpack_from(b, pos)[3], pos + 8
    raise _Damaged(f"invalid VR {vr!r} of {_where(tag, pos)}")
