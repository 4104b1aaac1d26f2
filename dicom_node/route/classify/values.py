"""Read DICOM header values robustly: numbers, string tokens, first sequence items, plane normals."""

from __future__ import annotations

import math
from typing import Any

from pydicom.dataset import Dataset

# --------------------------------------------------------------------------------------------
# small helpers


def _num(value: Any) -> float | None:
    """First numeric value of a DICOM value, or None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes))):
        for v in value:
            n = _num(v)
            if n is not None:
                return n
        return None
    if isinstance(value, bytes):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        try:
            f = float(str(value).strip().split("\\")[0])
        except (TypeError, ValueError):
            return None
    if math.isnan(f) or math.isinf(f):
        return None
    return f


def _tokens(value: Any) -> list[str]:
    """Upper-case string tokens of a (possibly multi-valued) string attribute."""
    if value is None:
        return []
    if isinstance(value, str):
        items = value.split("\\")
    elif isinstance(value, bytes):
        return []
    else:
        try:
            items = [str(v) for v in value]
        except TypeError:
            items = [str(value)]
    return [t.strip().upper() for t in items if t is not None and str(t).strip()]


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    if seq is None:
        return None
    try:
        return seq[0] if len(seq) else None
    except (TypeError, IndexError):
        return None


def _str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").strip("\x00 ").strip()  # latin-1 decodes any bytes
    return str(value).strip()


def _fmt(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"



def _normal(iop: Any) -> tuple[float, float, float] | None:
    try:
        v = [float(x) for x in iop]
    except (TypeError, ValueError):
        return None
    if len(v) != 6:
        return None
    r, c = v[:3], v[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    norm = math.sqrt(sum(x * x for x in n))
    if norm < 1e-6:
        return None
    unit = (n[0] / norm, n[1] / norm, n[2] / norm)
    # sign-normalise so that parallel planes compare equal
    k = max(range(3), key=lambda i: abs(unit[i]))
    if unit[k] < 0:
        unit = (-unit[0], -unit[1], -unit[2])
    return unit

# --------------------------------------------------------------------------------------------
# geometry


def _orientation_label(n: tuple[float, float, float] | None) -> str:
    if n is None:
        return ""
    ax = [abs(n[0]), abs(n[1]), abs(n[2])]
    k = max(range(3), key=lambda i: ax[i])
    if ax[k] < 0.8:
        return "OBL"
    return ("SAG", "COR", "AX")[k]
