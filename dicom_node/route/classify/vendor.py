"""Vendor private tags the classifier reads: GE, Siemens and Philips b-values and sequence names."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from dicom_node.route.classify.values import _num, _str


def _private_value(ds: Dataset, group: int, creator: str, offset: int) -> Any:
    """Value of a private element by creator name (direct tag lookups, no dataset slicing)."""
    for block in range(0x10, 0x100):
        ctag = (group << 16) | block
        if ctag not in ds:
            if block > 0x20:
                break
            continue
        try:
            value = ds[ctag].value
        except Exception:  # noqa: BLE001 - odd private creator encodings
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1", "replace")
        if str(value).strip() == creator:
            tag = (group << 16) | (block << 8) | offset
            if tag in ds:
                try:
                    return ds[tag].value
                except Exception:  # noqa: BLE001
                    return None
            return None
    return None


def _ge_bvalue(ds: Dataset) -> float | None:
    raw = ds.get((0x0043, 0x1039))
    if raw is None:
        return None
    v = raw.value
    if isinstance(v, bytes):
        v = v.decode("latin-1").split("\\")  # latin-1 decodes any bytes
    b = _num(v)
    if b is None:
        return None
    if b >= 1e9:  # GE sets a 10^9 flag on some software versions
        b = b % 1e9
    return b if 0 <= b < 1e5 else None


def _siemens_csa_bvalue(ds: Dataset) -> float | None:
    v = _private_value(ds, 0x0019, "SIEMENS MR HEADER", 0x0C)
    if v is None and (0x0019, 0x100C) in ds:
        v = ds[(0x0019, 0x100C)].value
    if isinstance(v, bytes):
        v = _str(v)
    return _num(v)


def _philips_bvalue(ds: Dataset) -> float | None:
    v = ds.get((0x2001, 0x1003))
    if v is None:
        return None
    val = v.value
    if isinstance(val, bytes) and len(val) == 4:
        import struct

        return struct.unpack("<f", val)[0]
    return _num(val)


def _seq_names(ds: Dataset) -> list[str]:
    names = []
    for kw in ("SequenceName", "PulseSequenceName"):
        s = _str(ds.get(kw))
        if s:
            names.append(s)
    for group, creator, off in (
        (0x0019, "GEMS_ACQU_01", 0x9C),
        (0x0019, "GEMS_ACQU_01", 0x9E),
        (0x2001, "Philips Imaging DD 001", 0x20),
        (0x0021, "SIEMENS MR SDI 02", 0x77),
    ):
        s = _str(_private_value(ds, group, creator, off))
        if s:
            names.append(s)
    # private tags whose creator element was stripped (some anonymisers); never read them when
    # another vendor's creator owns the block
    for tag, creator in (((0x0019, 0x109C), "GEMS_ACQU_01"), ((0x0019, 0x109E), "GEMS_ACQU_01"),
                         ((0x2001, 0x1020), "Philips Imaging DD 001")):
        if tag in ds:
            owner = _str(ds.get((tag[0], 0x0010)).value) if (tag[0], 0x0010) in ds else ""
            if owner and owner != creator:
                continue
            s = _str(ds[tag].value)
            if s and s not in names:
                names.append(s)
    return [n for n in names if n.lower() not in ("dicom2nifti", "none", "unknown")]
