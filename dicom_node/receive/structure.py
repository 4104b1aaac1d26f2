"""The whole-dataset structure check of a received dataset, and the header elements kept from it.

:func:`check_structure` walks every element of a dataset as received (undefined-length
sequences and items to their delimiters, encapsulated Pixel Data fragment by fragment) and says
why it does not parse whole, or None; the SCP answers such a dataset with an error instead of
storing it. :func:`walk_dataset` does the same walk and also returns the top-level elements
whose tags ``keep`` holds, as their encoded bytes (header and value, in the transfer
syntax walked): the SCP keeps the elements that classification and routing read
(:data:`dicom_node.store.records.KEPT_TAGS`) so that nothing has to read the spooled file
again when the series completes. Element headers are read by :mod:`dicom_node.receive.elements`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Container
from typing import Any

from dicom_node.receive.elements import (
    _BE,
    _ITEM,
    _ITEM_END,
    _LE,
    _MAX_DEPTH,
    _SEQ_END,
    _U32,
    _UNDEFINED,
    _Damaged,
    _element_header,
    _Layout,
    _where,
)

__all__ = ["check_structure", "walk_dataset", "MAX_INFLATED"]

#: Largest dataset a Deflated Explicit VR Little Endian stream may inflate to for the check.
MAX_INFLATED = 2**30

# Image Pixel module attributes giving the size of uncompressed Pixel Data (all before 0028,0101)
_SAMPLES, _FRAMES, _ROWS, _COLUMNS, _BITS = (0x00280002, 0x00280008, 0x00280010, 0x00280011,
                                             0x00280100)
_PIXEL_TAGS = frozenset((_SAMPLES, _FRAMES, _ROWS, _COLUMNS, _BITS))
_PIXEL_DATA = 0x7FE00010
_JPEG_FAMILY = ("1.2.840.10008.1.2.4.5", "1.2.840.10008.1.2.4.6", "1.2.840.10008.1.2.4.70",
                "1.2.840.10008.1.2.4.8")
_J2K_FAMILY = ("1.2.840.10008.1.2.4.9", "1.2.840.10008.1.2.4.20")
_RLE = "1.2.840.10008.1.2.5"


def check_structure(raw: bytes, transfer_syntax: Any) -> str | None:
    """Why ``raw`` (a dataset as received, in ``transfer_syntax``) does not parse whole, or None
    (:func:`walk_dataset` without kept elements).
    """
    return walk_dataset(raw, transfer_syntax)[0]


def walk_dataset(raw: bytes, transfer_syntax: Any, keep: Container[int] | None = None
                 ) -> tuple[str | None, bytes | None]:
    """``(why raw does not parse whole or None, kept elements)`` of a dataset as received.

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

    With ``keep`` (tags), the top-level elements whose tag it holds are returned as the bytes
    walked (element header and value, in order): a dataset fragment in ``transfer_syntax``, or
    in Explicit VR Little Endian for a deflated one. Without ``keep``, or when the dataset
    does not parse whole, None.
    """
    ts = str(transfer_syntax)
    if transfer_syntax.is_deflated:
        try:
            raw = _inflate(raw)
        except _Damaged as exc:
            return str(exc), None
    implicit = transfer_syntax.is_implicit_VR
    layout = _LE if transfer_syntax.is_little_endian else _BE
    found: dict[int, bytes] = {}
    pixel: list[tuple[int, int, int]] = []  # (value position, length, first fragment position)
    spans: list[tuple[int, int]] | None = [] if keep is not None else None
    try:
        _walk_whole(raw, 0, len(raw), implicit, 0, found, pixel, layout, spans, keep or ())
    except _Damaged as exc:
        return str(exc), None
    except (struct.error, IndexError):
        return "dataset ends inside an element header", None
    why = _pixel_data_problem(raw, ts, transfer_syntax, found, pixel, layout)
    if why is not None or spans is None:
        return why, None
    return None, b"".join(raw[a:b] for a, b in spans)


def _pixel_data_problem(raw: bytes, ts: str, transfer_syntax: Any, found: dict[int, bytes],
                        pixel: list[tuple[int, int, int]], layout: _Layout) -> str | None:
    """Why the Pixel Data the walk found does not match ``transfer_syntax``, or None."""
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
                found: dict[int, bytes] | None, pixel: list, layout: _Layout = _LE,
                spans: list[tuple[int, int]] | None = None,
                keep: Container[int] = frozenset()) -> int:
    """Walk a dataset (depth 0: to ``end`` exactly) or an undefined-length item (to its
    delimiter); raise :class:`_Damaged` when an element does not fit. ``spans`` (depth 0)
    receives ``(start, end)`` of each element whose tag ``keep`` holds."""
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
            if spans is not None and tag in keep:
                spans.append((start, pos))
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
        if spans is not None and tag in keep:
            spans.append((start, pos))
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
