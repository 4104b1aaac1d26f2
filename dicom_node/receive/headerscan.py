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
import zlib
from typing import Any

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
_UIDS = {0x00080018, 0x0020000D, 0x0020000E}
_STOP_AFTER = 0x00200013

_TAG_LEN = struct.Struct("<HHI")
_TAG_VR_LEN16 = struct.Struct("<HH2sH")
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
#: Largest dataset a Deflated Explicit VR Little Endian stream may inflate to for the check.
MAX_INFLATED = 2**30


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


# -- whole-dataset structure check ----------------------------------------------------------
_PIXEL_DATA = 0x7FE00010
_JPEG_FAMILY = ("1.2.840.10008.1.2.4.5", "1.2.840.10008.1.2.4.6", "1.2.840.10008.1.2.4.70",
                "1.2.840.10008.1.2.4.8")
_J2K_FAMILY = ("1.2.840.10008.1.2.4.9", "1.2.840.10008.1.2.4.20")
_RLE = "1.2.840.10008.1.2.5"


def check_structure(raw: bytes, transfer_syntax: Any) -> str | None:
    """Why ``raw`` (a dataset as received, in ``transfer_syntax``) does not parse whole, or None.

    Every element is walked by its declared length (undefined-length sequences and items to
    their delimiters, encapsulated Pixel Data fragment by fragment); the walk must end exactly
    at the last byte. Pixel Data must match ``transfer_syntax``: native (defined length, at
    least as long as Rows x Columns x Samples x Frames x Bits Allocated say) for an
    uncompressed syntax, encapsulated (undefined length, fragments) for a compressed one, whose
    first fragment starts like that codec's stream (JPEG SOI, JPEG 2000 SOC or JP2 signature,
    RLE header). Explicit VR Big Endian is walked the same way with big-endian headers and
    values. A deflated dataset must be one whole deflate stream inflating to at most
    :data:`MAX_INFLATED` bytes, which are then walked as Explicit VR Little Endian; after the
    stream only a NUL pad byte (PS3.5 A.5) and a gzip-style trailer (CRC-32 and size of the
    inflated bytes, as some writers add, pydicom's test file among them) are accepted.
    """
    ts = str(transfer_syntax)
    if transfer_syntax.is_deflated:
        try:
            raw = _inflate(raw)
        except _Damaged as exc:
            return str(exc)
    implicit = transfer_syntax.is_implicit_VR
    layout = _LE if transfer_syntax.is_little_endian else _BE
    found: dict[int, bytes] = {}
    pixel: list[tuple[int, int, int]] = []  # (value position, length, first fragment position)
    try:
        _walk_whole(raw, 0, len(raw), implicit, 0, found, pixel, layout)
    except _Damaged as exc:
        return str(exc)
    except (struct.error, IndexError):
        return "dataset ends inside an element header"
    if not pixel:
        return None
    pos, length, first = pixel[0]
    encapsulated = transfer_syntax.is_encapsulated
    if length != _UNDEFINED:
        if encapsulated:
            return f"native Pixel Data ({length} bytes) on the encapsulated transfer syntax {ts}"
        expected = _pixel_data_length_of(found, layout)
        if expected is not None and length < expected - 1:
            return (f"Pixel Data holds {length} bytes, Rows x Columns x Samples x Frames x "
                    f"Bits Allocated need {expected}")
        return None
    if not encapsulated:
        return f"encapsulated Pixel Data on the native transfer syntax {ts}"
    if first < 0:
        return "encapsulated Pixel Data without a fragment"
    head = raw[first:first + 8]
    if ts.startswith(_JPEG_FAMILY) and not head.startswith(b"\xff\xd8"):
        return f"first Pixel Data fragment is not a JPEG stream (starts {head[:4].hex()})"
    if ts.startswith(_J2K_FAMILY) and not (head.startswith(b"\xff\x4f\xff\x51")
                                           or head == b"\x00\x00\x00\x0cjP  "):
        return f"first Pixel Data fragment is not a JPEG 2000 stream (starts {head[:4].hex()})"
    if ts == _RLE and not (len(head) >= 4 and 1 <= _U32.unpack_from(head)[0] <= 15):
        return "first Pixel Data fragment is not an RLE header"
    return None


def _inflate(raw: bytes) -> bytes:
    """The dataset of a Deflated Explicit VR Little Endian stream; :class:`_Damaged` when the
    stream is cut, corrupt, followed by more than its pad byte or inflates too far."""
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, MAX_INFLATED)
    except zlib.error as exc:
        raise _Damaged(f"deflated dataset does not inflate ({exc})") from None
    if d.unconsumed_tail:
        raise _Damaged(f"deflated dataset inflates to more than {MAX_INFLATED} bytes")
    if not d.eof:
        raise _Damaged(f"deflated dataset ends inside its deflate stream ({len(raw)} bytes "
                       f"received, {len(out)} inflated)")
    tail = d.unused_data
    if len(tail) % 2 and tail.endswith(b"\0"):
        tail = tail[:-1]  # the pad byte of an odd-length stream
    if tail and tail != struct.pack("<II", zlib.crc32(out), len(out) & 0xFFFFFFFF):
        raise _Damaged(f"{len(d.unused_data)} bytes after the end of the deflate stream")
    return out


def _pixel_data_length_of(found: dict[int, bytes], layout: _Layout = _LE) -> int | None:
    try:
        us = {t: layout.us.unpack(v)[0] for t, v in found.items()
              if t != _FRAMES and len(v) == 2}
        rows, cols, bits = us[_ROWS], us[_COLUMNS], us[_BITS]
        frames = 1
        if _FRAMES in found:
            text = found[_FRAMES].decode("ascii").strip(" \0")
            frames = int(text) if text else 1
    except (KeyError, ValueError, UnicodeDecodeError, struct.error):
        return None
    n = rows * cols * us.get(_SAMPLES, 1) * frames
    if not n or bits not in (1, 8, 16, 32, 64):
        return None
    length = (n + 7) // 8 if bits == 1 else n * bits // 8
    return length + (length & 1)


def _walk_whole(b: bytes, pos: int, end: int, implicit: bool, depth: int,
                found: dict[int, bytes] | None, pixel: list, layout: _Layout = _LE) -> int:
    """Walk a dataset (depth 0: to ``end`` exactly) or an undefined-length item (to its
    delimiter); raise :class:`_Damaged` when an element does not fit."""
    while pos < end:
        start = pos
        tag, vr, length, pos = _element_header(b, pos, end, implicit, layout)
        if tag == _ITEM_END:
            if depth == 0:
                raise _Damaged(f"item delimiter outside an item at byte {start}")
            return pos
        if tag >> 16 == 0xFFFE:
            raise _Damaged(f"unexpected delimiter {_where(tag, start)}")
        if length == _UNDEFINED:
            if tag == _PIXEL_DATA and depth == 0:
                pixel.append((pos, length, pos + 8 if end - pos >= 8 else -1))
                pos = _walk_fragments(b, pos, end, pixel, layout)
            elif implicit or vr in (b"SQ", b"UN"):
                pos = _walk_items(b, pos, end, implicit or vr == b"UN", depth + 1, pixel,
                                  layout)
            else:
                raise _Damaged(f"undefined length of {_where(tag, start)} (VR {vr!r})")
            continue
        if length > end - pos:
            raise _Damaged(f"{_where(tag, start)} declares {length} bytes, "
                           f"{end - pos} remain")
        if depth == 0:
            if tag == _PIXEL_DATA:
                pixel.append((pos, length, -1))
            elif found is not None and tag in _PIXEL_TAGS:
                found[tag] = b[pos:pos + length]
        pos += length
    if depth:
        raise _Damaged("dataset ends inside an undefined-length item")
    return pos


def _item_header(b: bytes, pos: int, end: int, inside: str,
                 layout: _Layout = _LE) -> tuple[int, int]:
    """``(tag, length)`` of the item or delimiter at ``pos`` (``inside``: for the message)."""
    if end - pos < 8:
        raise _Damaged(f"dataset ends inside {inside} at byte {pos}")
    group, elem, length = layout.tag_len.unpack_from(b, pos)
    return group << 16 | elem, length


def _walk_items(b: bytes, pos: int, end: int, implicit: bool, depth: int, pixel: list,
                layout: _Layout = _LE) -> int:
    if depth > _MAX_DEPTH:
        raise _Damaged(f"sequences nested deeper than {_MAX_DEPTH}")
    while True:
        tag, length = _item_header(b, pos, end, "an undefined-length sequence", layout)
        if tag == _SEQ_END:
            return pos + 8
        if tag != _ITEM:
            raise _Damaged(f"{_where(tag, pos)} where a sequence item was expected")
        pos += 8
        if length == _UNDEFINED:
            pos = _walk_whole(b, pos, end, implicit, depth, None, pixel, layout)
        elif length > end - pos:
            raise _Damaged(f"sequence item at byte {pos - 8} declares {length} bytes, "
                           f"{end - pos} remain")
        else:
            pos += length


def _walk_fragments(b: bytes, pos: int, end: int, pixel: list, layout: _Layout = _LE) -> int:
    """Encapsulated Pixel Data: the offset table and fragments (items), then the delimiter."""
    n = 0
    while True:
        tag, length = _item_header(b, pos, end, "encapsulated Pixel Data", layout)
        if tag == _SEQ_END:
            if n < 2:  # the (possibly empty) offset table and at least one fragment
                pixel[-1] = pixel[-1][:2] + (-1,)
            return pos + 8
        if tag != _ITEM or length == _UNDEFINED:
            raise _Damaged(f"{_where(tag, pos)} inside encapsulated Pixel Data")
        if length > end - pos - 8:
            raise _Damaged(f"Pixel Data fragment at byte {pos} declares {length} bytes, "
                           f"{end - pos - 8} remain")
        if n == 1:
            pixel[-1] = pixel[-1][:2] + (pos + 8,)
        n += 1
        pos += 8 + length
