"""The few header values the SCP needs per instance, read straight from the received bytes.

For every instance but the first of a series the SCP needs seven top-level values, all before
(0020,0013): SOP/Study/Series Instance UID, Modality, PatientID, StudyDate, InstanceNumber.
pydicom's ``read_dataset(stop_when=...)`` builds a data element object for every element up to
there and parses every undefined-length sequence into datasets (about 130 elements and half a
millisecond for a Philips MR image); :func:`scan_header` walks the same elements with
``struct`` and keeps only the wanted values.

It handles little-endian datasets (explicit or implicit VR), skips defined-length elements by
their length and undefined-length sequences item by item (as pydicom does, so structural damage
is noticed the same way). Whenever it meets something it does not handle with certainty (big
endian, an undefined length that is not a sequence, a VR field that is not two capital letters,
a value that is multi-valued, not printable ASCII, or not a plain integer for InstanceNumber,
damaged structure) it returns ``None`` and the caller uses pydicom, as before. The values it
returns equal pydicom's for the same bytes (see ``tests/test_headerscan.py``).
"""

from __future__ import annotations

import struct
from typing import Any

from dicom_node.receive.elements import (
    _ITEM,
    _ITEM_END,
    _MAX_DEPTH,
    _SEQ_END,
    _TAG_LEN,
    _UNDEFINED,
    _element_header,
    _Unsure,
)
from dicom_node.receive.structure import MAX_INFLATED, check_structure

__all__ = ["scan_header", "WANTED", "check_structure", "MAX_INFLATED"]

#: keyword -> tag of the values returned by :func:`scan_header`
WANTED = {
    "StudyDate": 0x00080020,
    "SOPInstanceUID": 0x00080018,
    "Modality": 0x00080060,
    "PatientID": 0x00100020,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "InstanceNumber": 0x00200013,
}
_BY_TAG = {tag: kw for kw, tag in WANTED.items()}
_STOP_AFTER = 0x00200013


def _walk(b: bytes, pos: int, end: int, implicit: bool, depth: int,
          found: dict[int, bytes] | None) -> int:
    """Walk the elements of a dataset (``depth`` 0, stops after InstanceNumber) or of an
    undefined-length item (ends at its delimiter); return the position after them."""
    while pos < end:
        tag, vr, length, vpos = _element_header(b, pos, end, implicit)
        if tag == _ITEM_END:
            if depth == 0:
                raise _Unsure
            return vpos
        if depth == 0 and tag > _STOP_AFTER:
            return pos
        if tag >> 16 == 0xFFFE:
            raise _Unsure
        pos = vpos
        if length == _UNDEFINED:
            if not implicit and vr != b"SQ":
                raise _Unsure
            pos = _skip_sequence(b, pos, end, implicit, depth + 1)
            continue
        if length > end - pos:
            raise _Unsure
        if found is not None and tag in _BY_TAG:
            found[tag] = b[pos:pos + length]
        pos += length
    if depth:
        raise _Unsure  # an undefined-length item without its delimiter
    return pos


def _skip_sequence(b: bytes, pos: int, end: int, implicit: bool, depth: int) -> int:
    """Skip the items of an undefined-length sequence; return the position after its end."""
    if depth > _MAX_DEPTH:
        raise _Unsure
    while True:
        if end - pos < 8:
            raise _Unsure
        group, elem, length = _TAG_LEN.unpack_from(b, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise _Unsure
        if length == _UNDEFINED:
            pos = _walk(b, pos, end, implicit, depth, None)
        elif length > end - pos:
            raise _Unsure
        else:
            pos += length


def _text(value: bytes) -> str | None:
    """A single printable-ASCII value without pydicom's trailing padding; None otherwise."""
    if not value.isascii():
        return None
    s = value.decode("ascii").rstrip(" \0")
    if "\\" in s or not s.isprintable():
        return None
    return s


# Image Pixel module attributes giving the size of uncompressed Pixel Data (all before 0028,0101)
_SAMPLES, _FRAMES, _ROWS, _COLUMNS, _BITS = (0x00280002, 0x00280008, 0x00280010, 0x00280011,
                                             0x00280100)
_PIXEL_TAGS = frozenset((_SAMPLES, _FRAMES, _ROWS, _COLUMNS, _BITS))


def scan_header(raw: bytes, implicit_vr: bool, little_endian: bool = True) -> dict[str, Any] | None:
    """``{keyword: value}`` for :data:`WANTED`, as ``pydicom`` would give them, or ``None``.

    Values: the string (UIDs, Modality, PatientID, StudyDate; ``""`` when empty), an ``int``
    for InstanceNumber (``None`` when empty), ``None`` for an absent element. ``None`` for the
    whole result when the caller must ask pydicom (see the module docstring).
    """
    if not little_endian:
        return None
    found: dict[int, bytes] = {}
    try:
        _walk(raw, 0, len(raw), implicit_vr, 0, found)
    except (_Unsure, struct.error, IndexError):
        return None
    out: dict[str, Any] = {kw: None for kw in WANTED}
    for tag, value in found.items():
        s = _text(value)
        if s is None:
            return None
        if tag == 0x00200013:
            s = s.strip()
            if not s:
                out["InstanceNumber"] = None
                continue
            if not (s.isdigit() or (s[0] in "+-" and s[1:].isdigit())):
                return None
            out["InstanceNumber"] = int(s)
        else:
            out[_BY_TAG[tag]] = s
    return out
