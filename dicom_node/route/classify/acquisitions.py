"""Tell apart the acquisitions that share one SeriesInstanceUID (orientation, TR, TE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.route.classify.values import _first_item, _normal, _num


def _cluster(values: list[float], rel: float = 0.15, abs_tol: float = 0.5) -> list[float]:
    """Cluster numbers that differ by less than ``rel`` (relative) or ``abs_tol``."""
    out: list[float] = []
    for v in sorted(values):
        if out and (abs(v - out[-1]) <= abs_tol or abs(v - out[-1]) <= rel * max(abs(out[-1]), 1e-9)):
            continue
        out.append(v)
    return out


def _bucket(v: float | None, centers: list[float], rel: float = 0.15, abs_tol: float = 0.5) -> int:
    if v is None:
        return -1
    for i, c in enumerate(centers):
        if abs(v - c) <= abs_tol or abs(v - c) <= rel * max(abs(c), 1e-9):
            return i
    return -1


def _normal_key(n: tuple[float, float, float] | None) -> tuple[int, int, int] | None:
    if n is None:
        return None
    # ~6 degree bins
    return (round(n[0] * 10), round(n[1] * 10), round(n[2] * 10))


def _acquisition_key(ds: Dataset) -> tuple[Any, ...]:
    """Key that separates acquisitions sharing one SeriesInstanceUID."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        sfg = _first_item(ds, "SharedFunctionalGroupsSequence")
        po = _first_item(sfg, "PlaneOrientationSequence") if sfg is not None else None
        if po is None:
            pf = _first_item(ds, "PerFrameFunctionalGroupsSequence")
            po = _first_item(pf, "PlaneOrientationSequence") if pf is not None else None
        iop = po.get("ImageOrientationPatient") if po is not None else None
    return (_normal_key(_normal(iop)),)


def split_acquisitions(headers: Sequence[Dataset]) -> list[list[Dataset]]:
    """Split the headers of one SeriesInstanceUID into acquisitions.

    Instances are separated by slice orientation (planes more than ~6 degrees
    apart), then by clearly different TR or TE (more than 15 %). A series that is
    one acquisition comes back as a single group. Multi-echo and multi-b-value
    data of one orientation stay together only when TR/TE agree; they are not
    meant to be stacked into one volume either.

    Parameters
    ----------
    headers : sequence of pydicom.Dataset

    Returns
    -------
    list of list of pydicom.Dataset
        Groups in first-seen order.
    """
    headers = list(headers)
    if len(headers) <= 1:
        return [headers]
    merged = _merge_normals([_acquisition_key(ds)[0] for ds in headers])
    known = [k for k in merged if k is not None]
    if known and len(known) < len(merged):  # an instance without geometry joins the main stack
        main = max(set(known), key=known.count)
        merged = [main if k is None else k for k in merged]
    trs = _cluster([v for v in (_num(ds.get("RepetitionTime")) for ds in headers) if v is not None],
                   rel=0.15, abs_tol=1.0)
    tes = _cluster([v for v in (_num(ds.get("EchoTime")) for ds in headers) if v is not None],
                   rel=0.15, abs_tol=1.0)
    groups: dict[tuple[Any, ...], list[Dataset]] = {}
    for ds, nk in zip(headers, merged, strict=False):
        key = (nk, _bucket(_num(ds.get("RepetitionTime")), trs, abs_tol=1.0),
               _bucket(_num(ds.get("EchoTime")), tes, abs_tol=1.0))
        groups.setdefault(key, []).append(ds)
    return list(groups.values())


def _merge_normals(keys: list[tuple[int, int, int] | None]) -> list[tuple[int, int, int] | None]:
    """Map near-identical orientation bins (neighbouring rounding bins) onto one."""
    reps: list[tuple[int, int, int]] = []
    out: list[tuple[int, int, int] | None] = []
    for k in keys:
        if k is None:
            out.append(None)
            continue
        for r in reps:
            if all(abs(a - b) <= 1 for a, b in zip(k, r, strict=False)):
                out.append(r)
                break
        else:
            reps.append(k)
            out.append(k)
    return out
