"""Per-frame geometry and pixel scaling of classic single-frame and Enhanced multi-frame MR
objects, for :mod:`dicom_node.run.volume` (which stacks the frames into one volume)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

__all__ = ["VolumeError"]


class VolumeError(ValueError):
    """The instances do not form one regular 3D volume; ``str(err)`` says why."""


@dataclass
class _Frame:
    sop_uid: str
    frame: int | None  # 1-based, None for single-frame instances
    ds_index: int
    position: np.ndarray
    orientation: np.ndarray
    spacing: tuple[float, float]  # (row spacing, column spacing) = PixelSpacing
    slope: float
    intercept: float
    rows: int
    cols: int


def _floats(value, n: int, what: str, where: str) -> np.ndarray:
    try:
        arr = np.array([float(v) for v in value], dtype=float)
    except Exception as exc:
        raise VolumeError(f"{where}: unreadable {what} ({exc})") from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise VolumeError(f"{where}: {what} must have {n} finite values, got {list(value)}")
    return arr


def _first_item(ds: Dataset, seq_kw: str) -> Dataset | None:
    seq = ds.get(seq_kw)
    if seq and len(seq) > 0:
        return seq[0]
    return None


def _fg_lookup(per_frame: Dataset | None, shared: Dataset | None, seq_kw: str) -> Dataset | None:
    """Item of a functional-group macro, per-frame first, then shared."""
    for grp in (per_frame, shared):
        if grp is not None:
            item = _first_item(grp, seq_kw)
            if item is not None:
                return item
    return None


def _frame(sop_uid: str, frame: int | None, ds_index: int, rows: int, cols: int, where: str,
           position: Dataset, orientation: Dataset, measures: Dataset, values: Dataset) -> _Frame:
    """One slice's geometry and rescale: Image Position/Orientation (Patient) and Pixel Spacing
    from the datasets or functional group items that hold them, the rescale from ``values``."""
    ps = _floats(measures.PixelSpacing, 2, "PixelSpacing", where)
    return _Frame(
        sop_uid=sop_uid,
        frame=frame,
        ds_index=ds_index,
        position=_floats(position.ImagePositionPatient, 3, "ImagePositionPatient", where),
        orientation=_floats(orientation.ImageOrientationPatient, 6, "ImageOrientationPatient", where),
        spacing=(float(ps[0]), float(ps[1])),
        slope=float(values.get("RescaleSlope", 1.0) or 1.0),
        intercept=float(values.get("RescaleIntercept", 0.0) or 0.0),
        rows=rows,
        cols=cols,
    )


def _describe(ds: Dataset, path: str) -> str:
    return f"{Path(path).name} (SOPInstanceUID {ds.get('SOPInstanceUID', '?')})"


def _frames_of(ds: Dataset, ds_index: int, where: str) -> list[_Frame]:
    """Geometry and rescale of every frame of one instance."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    sop_uid = str(ds.SOPInstanceUID)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    is_enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    if not is_enhanced:
        if n_frames != 1:
            raise VolumeError(
                f"{where}: multi-frame object ({n_frames} frames) without functional groups: "
                "no per-frame geometry"
            )
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise VolumeError(f"{where}: missing geometry (ImagePositionPatient/ImageOrientationPatient)")
        if "PixelSpacing" not in ds:
            raise VolumeError(f"{where}: missing geometry (PixelSpacing)")
        return [_frame(sop_uid, None, ds_index, rows, cols, where, ds, ds, ds, ds)]

    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame_seq = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame_seq) not in (0, n_frames):
        raise VolumeError(
            f"{where}: {len(per_frame_seq)} per-frame functional group items for {n_frames} frames"
        )
    frames: list[_Frame] = []
    for i in range(n_frames):
        pf = per_frame_seq[i] if per_frame_seq else None
        fwhere = f"{where} frame {i + 1}"
        pos_item = _fg_lookup(pf, shared, "PlanePositionSequence")
        ori_item = _fg_lookup(pf, shared, "PlaneOrientationSequence")
        meas_item = _fg_lookup(pf, shared, "PixelMeasuresSequence")
        if pos_item is None or "ImagePositionPatient" not in pos_item:
            raise VolumeError(f"{fwhere}: missing geometry (PlanePositionSequence)")
        if ori_item is None or "ImageOrientationPatient" not in ori_item:
            raise VolumeError(f"{fwhere}: missing geometry (PlaneOrientationSequence)")
        if meas_item is None or "PixelSpacing" not in meas_item:
            raise VolumeError(f"{fwhere}: missing geometry (PixelMeasuresSequence/PixelSpacing)")
        pvt = _fg_lookup(pf, shared, "PixelValueTransformationSequence")
        frames.append(_frame(sop_uid, i + 1, ds_index, rows, cols, fwhere, pos_item, ori_item,
                             meas_item, pvt if pvt is not None else ds))
    return frames
