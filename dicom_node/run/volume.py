"""Build a 3D volume from the DICOM instances of one series.

Supports classic single-frame series (MR, CT, ... Image Storage) and Enhanced multi-frame
objects (one or several objects), in any transfer syntax that pydicom can decode with the
installed pylibjpeg plug-ins (JPEG lossless/baseline, JPEG-LS, JPEG 2000, RLE, deflate).

Slices are ordered by geometry: the projection of ImagePositionPatient on the slice normal
(row cosine x column cosine), never by InstanceNumber. Anything that is not clearly one regular
3D stack is refused with a :class:`VolumeError` whose message says why (mixed orientations or
matrix sizes, missing geometry, gaps or irregular spacing, repeated positions from several
echoes/time points, too few slices, non-image objects, undecodable pixels).

Research use only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset

from dicom_node.run.frames import VolumeError, _describe, _Frame, _frames_of

log = logging.getLogger(__name__)

__all__ = ["Volume", "VolumeError", "load_series", "load_datasets"]

#: Cosines of two slices may differ by this much and still count as the same orientation.
ORIENTATION_TOLERANCE = 1e-3


@dataclass
class Volume:
    """A 3D image built from one series, plus what the encoders need to reference it.

    Attributes
    ----------
    image
        float32 SimpleITK image (rescale slope/intercept applied); array index ``(z, y, x)``
        with slice ``z = k`` the k-th slice in geometric order along the slice normal.
    datasets
        The unique source instances (headers and pixels). For a single-frame series they are
        in slice order (``datasets[k]`` is slice ``k``); for multi-frame objects, in the order
        of their first slice.
    slice_refs
        Per slice ``k``: ``(SOPInstanceUID, frame number)``; frame number is 1-based for a
        multi-frame object and ``None`` for a single-frame instance.
    """

    image: sitk.Image
    datasets: list[Dataset]
    slice_refs: list[tuple[str, int | None]]
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str = ""
    modality: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        """Number of slices (size of the z axis)."""
        return int(self.image.GetSize()[2])

    @property
    def is_multiframe(self) -> bool:
        """True when the slices come from Enhanced multi-frame object(s)."""
        return any(ref[1] is not None for ref in self.slice_refs)

    def slice_through(self, z: float) -> int:
        """The slice through the continuous z index ``z`` (e.g. a lesion's centroid): the
        nearest one, clipped to the volume."""
        return min(max(int(round(z)), 0), self.n_slices - 1)

    def slice_reference(self, k: int) -> Dataset:
        """A source image reference to slice ``k`` (Referenced SOP Class/Instance UID and, for
        a multi-frame source, Referenced Frame Number), for derived objects' Source Image
        Sequences."""
        uid, frame = self.slice_refs[k]
        sop_class = next(ds.SOPClassUID for ds in self.datasets if str(ds.SOPInstanceUID) == uid)
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = uid
        if frame is not None:
            ref.ReferencedFrameNumber = frame
        return ref

    def slice_positions(self) -> np.ndarray:
        """Physical LPS position (mm) of the first pixel of every slice, shape ``(n, 3)``."""
        im = self.image
        return np.array(
            [im.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(self.n_slices)]
        )


def _read(paths: Sequence[Path | str]) -> list[tuple[str, Dataset]]:
    out: list[tuple[str, Dataset]] = []
    for p in paths:
        try:
            ds = pydicom.dcmread(str(p), force=False)
        except Exception as exc:
            raise VolumeError(f"{Path(p).name}: not a readable DICOM file ({exc})") from exc
        out.append((str(p), ds))
    return out


def load_series(
    paths: Iterable[Path | str],
    *,
    min_slices: int = 3,
    spacing_rtol: float = 0.02,
    spacing_atol_mm: float = 0.01,
) -> Volume:
    """Read the files of one series and build its volume.

    Parameters
    ----------
    paths
        Files of the series (order does not matter).
    min_slices
        Fewer slices than this is refused.
    spacing_rtol, spacing_atol_mm
        Slice-to-slice distances may deviate from their median by
        ``spacing_atol_mm + spacing_rtol * median`` before the stack counts as irregular.

    Returns
    -------
    Volume

    Raises
    ------
    VolumeError
        With a human-readable reason when the files are not one regular 3D stack.
    """
    paths = list(paths)
    if not paths:
        raise VolumeError("no files given")
    return load_datasets(
        _read(paths),
        min_slices=min_slices,
        spacing_rtol=spacing_rtol,
        spacing_atol_mm=spacing_atol_mm,
    )


def load_datasets(
    items: Sequence[tuple[str, Dataset] | Dataset],
    *,
    min_slices: int = 3,
    spacing_rtol: float = 0.02,
    spacing_atol_mm: float = 0.01,
) -> Volume:
    """Like :func:`load_series` for datasets already in memory (with pixel data).

    ``items`` is a list of datasets or of ``(name, dataset)`` pairs (the name is used in
    error messages).
    """
    pairs: list[tuple[str, Dataset]] = []
    for i, it in enumerate(items):
        pairs.append(it if isinstance(it, tuple) else (str(it.get("SOPInstanceUID", f"#{i}")), it))
    if not pairs:
        raise VolumeError("no instances given")

    # --- unique instances, one series, images only -----------------------------------------
    unique: list[tuple[str, Dataset]] = []
    seen: set[str] = set()
    for name, ds in pairs:
        uid = str(ds.get("SOPInstanceUID", ""))
        if not uid:
            raise VolumeError(f"{Path(name).name}: no SOPInstanceUID")
        if uid in seen:  # the same instance twice (e.g. in two transfer syntaxes): keep one
            continue
        seen.add(uid)
        unique.append((name, ds))
    non_image = [_describe(ds, n) for n, ds in unique if "PixelData" not in ds
                 and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds]
    objects = [(n, ds) for n, ds in unique if "Rows" not in ds and "PixelData" not in ds]
    if objects and len(objects) < len(unique):
        # objects that are no image at all (no Rows, no pixels), e.g. a Raw Data object beside
        # the Enhanced MR image: the volume is the images (an image without pixels is refused)
        log.info("%d non-image object(s) of the series left out of the volume, e.g. %s",
                 len(objects), _describe(objects[0][1], objects[0][0]))
        unique = [(n, ds) for n, ds in unique if "Rows" in ds or "PixelData" in ds]
        non_image = [_describe(ds, n) for n, ds in unique if "PixelData" not in ds
                     and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds]
    if non_image:
        raise VolumeError(
            f"{len(non_image)} non-image object(s) in the series (no pixel data), e.g. {non_image[0]}"
        )
    float_pix = [_describe(ds, n) for n, ds in unique if "PixelData" not in ds]
    if float_pix:
        raise VolumeError(f"float pixel data is not supported: {float_pix[0]}")
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in unique}
    if len(series) != 1:
        raise VolumeError(f"instances belong to {len(series)} different series")
    colour = [_describe(ds, n) for n, ds in unique if int(ds.get("SamplesPerPixel", 1)) != 1]
    if colour:
        raise VolumeError(f"colour images are not supported (SamplesPerPixel != 1): {colour[0]}")
    mosaic = [_describe(ds, n) for n, ds in unique if "MOSAIC" in [str(v).upper() for v in ds.get("ImageType", [])]]
    if mosaic:
        raise VolumeError(f"Siemens mosaic images are not supported: {mosaic[0]}")

    # --- geometry of every frame --------------------------------------------------------------
    frames: list[_Frame] = []
    for i, (name, ds) in enumerate(unique):
        frames.extend(_frames_of(ds, i, _describe(ds, name)))

    sizes = {(f.rows, f.cols) for f in frames}
    if len(sizes) > 1:
        raise VolumeError(
            "mixed matrix sizes in one series: "
            + ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        )
    ori0 = frames[0].orientation
    bad_ori = [f for f in frames if np.max(np.abs(f.orientation - ori0)) > ORIENTATION_TOLERANCE]
    if bad_ori:
        raise VolumeError(
            f"mixed orientations in one series: {len(bad_ori)} of {len(frames)} slices have an "
            f"ImageOrientationPatient other than {np.round(ori0, 4).tolist()} "
            f"(e.g. {np.round(bad_ori[0].orientation, 4).tolist()})"
        )
    sp0 = np.array(frames[0].spacing)
    if any(np.max(np.abs(np.array(f.spacing) - sp0)) > 1e-3 * max(1.0, sp0.max()) for f in frames):
        raise VolumeError("mixed pixel spacings in one series")
    row_cos, col_cos = ori0[:3].copy(), ori0[3:].copy()
    if abs(np.linalg.norm(row_cos) - 1) > 0.01 or abs(np.linalg.norm(col_cos) - 1) > 0.01 \
            or abs(np.dot(row_cos, col_cos)) > 0.01:
        raise VolumeError(f"invalid ImageOrientationPatient {ori0.tolist()} (not orthonormal)")
    row_cos /= np.linalg.norm(row_cos)
    col_cos -= np.dot(col_cos, row_cos) * row_cos
    col_cos /= np.linalg.norm(col_cos)
    normal = np.cross(row_cos, col_cos)

    if len(frames) < min_slices:
        raise VolumeError(f"too few slices: {len(frames)} (need at least {min_slices})")

    dist = np.array([float(np.dot(f.position, normal)) for f in frames])
    order = np.argsort(dist, kind="stable")
    frames = [frames[i] for i in order]
    dist = dist[order]
    diffs = np.diff(dist)

    dup = int(np.sum(diffs < max(spacing_atol_mm, 1e-3)))
    if dup:
        n_pos = len(frames) - dup
        hint = ""
        echoes = {str(unique[f.ds_index][1].get("EchoNumbers", "")) for f in frames}
        if len(echoes) > 1:
            hint = f"; EchoNumbers {sorted(echoes)}"
        raise VolumeError(
            f"{len(frames)} slices share {n_pos} positions: several echoes, time points or "
            f"acquisitions in one series{hint}; not one volume"
        )

    median = float(np.median(diffs))
    tol = spacing_atol_mm + spacing_rtol * median
    off = np.flatnonzero(np.abs(diffs - median) > tol)
    if off.size:
        i = int(off[0])
        kind = "gap" if diffs[i] > median else "irregular spacing"
        raise VolumeError(
            f"{kind}: slices {i} and {i + 1} (in position order) are {diffs[i]:.3f} mm apart, "
            f"median spacing {median:.3f} mm ({off.size} irregular step(s); missing slices?)"
        )

    # slices must lie on a line along the normal (no gantry tilt / shear)
    pos = np.array([f.position for f in frames])
    lateral = pos - pos[0] - np.outer(dist - dist[0], normal)
    max_lat = float(np.max(np.linalg.norm(lateral, axis=1)))
    if max_lat > max(0.05, 0.05 * min(sp0)):
        raise VolumeError(
            f"slices are not stacked along the slice normal (in-plane shift up to {max_lat:.2f} mm: "
            "gantry tilt or sheared stack)"
        )

    # --- pixels --------------------------------------------------------------------------------
    rows, cols = frames[0].rows, frames[0].cols
    arr = np.empty((len(frames), rows, cols), dtype=np.float32)
    cache: dict[int, np.ndarray] = {}
    for k, f in enumerate(frames):
        if f.ds_index not in cache:
            name, ds = unique[f.ds_index]
            try:
                px = ds.pixel_array
            except Exception as exc:
                ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
                ts_name = getattr(ts, "name", str(ts))
                raise VolumeError(
                    f"{_describe(ds, name)}: cannot decode pixel data ({ts_name}): {exc}"
                ) from exc
            n_frames = int(ds.get("NumberOfFrames", 1) or 1)
            if n_frames == 1 and px.ndim == 2:
                px = px[None]
            if px.shape != (n_frames, rows, cols):
                raise VolumeError(
                    f"{_describe(ds, name)}: decoded pixel array has shape {px.shape}, "
                    f"expected {(n_frames, rows, cols)}"
                )
            cache[f.ds_index] = px
        px = cache[f.ds_index]
        plane = px[(f.frame or 1) - 1].astype(np.float32)
        if f.slope != 1.0 or f.intercept != 0.0:
            plane = plane * np.float32(f.slope) + np.float32(f.intercept)
        arr[k] = plane

    image = sitk.GetImageFromArray(arr)
    image.SetOrigin(tuple(float(v) for v in frames[0].position))
    # ITK spacing is (x = along a row = column spacing, y = row spacing, z)
    image.SetSpacing((frames[0].spacing[1], frames[0].spacing[0], median))
    direction = np.column_stack([row_cos, col_cos, normal])
    image.SetDirection(tuple(float(v) for v in direction.ravel()))

    # datasets in order of their first slice
    ds_order: list[int] = []
    for f in frames:
        if f.ds_index not in ds_order:
            ds_order.append(f.ds_index)
    datasets = [unique[i][1] for i in ds_order]
    first = datasets[0]
    for_uid = str(first.get("FrameOfReferenceUID", ""))
    warnings = []
    if not for_uid:
        warnings.append("no FrameOfReferenceUID")
    if len({str(ds.get("FrameOfReferenceUID", "")) for ds in datasets}) > 1:
        raise VolumeError("instances have different FrameOfReferenceUIDs")
    vol = Volume(
        image=image,
        datasets=datasets,
        slice_refs=[(f.sop_uid, f.frame) for f in frames],
        series_uid=str(first.SeriesInstanceUID),
        study_uid=str(first.get("StudyInstanceUID", "")),
        frame_of_reference_uid=for_uid,
        sop_class_uid=str(first.get("SOPClassUID", "")),
        modality=str(first.get("Modality", "")),
        warnings=warnings,
    )
    log.debug(
        "loaded series %s: %d slices %dx%d spacing %s", vol.series_uid, len(frames), cols, rows,
        image.GetSpacing(),
    )
    return vol
