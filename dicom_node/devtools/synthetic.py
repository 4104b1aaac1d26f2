"""Build :class:`ai.types.SegmentationResult` objects without the model (tests, demos, benches).

``result_from_labels`` measures the lesions of a label array on a FLAIR grid exactly like the
encoders expect (volume = voxels x voxel volume, centroid, bounding box), so encoder tests do
not depend on the AI engine. Lesion load thresholds here are simple placeholders; the real ones
live in ``ai.lesions``.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ai.lesions import summarise
from ai.types import LOCATIONS, Lesion, SegmentationResult

__all__ = ["result_from_labels", "blob_labels"]

def blob_labels(shape: tuple[int, int, int], centres_radii: list[tuple[tuple[int, int, int], float]]) -> np.ndarray:
    """uint16 label array with one ball per ``((z, y, x), radius_voxels)``, labels 1..n."""
    zz, yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.uint16)
    for i, ((cz, cy, cx), r) in enumerate(centres_radii, start=1):
        ball = (zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        labels[ball & (labels == 0)] = i
    return labels


def result_from_labels(
    labels: np.ndarray,
    image: sitk.Image,
    locations: dict[int, str] | list[str] | None = None,
    *,
    probability: np.ndarray | None = None,
    model_name: str = "synthetic-test-model",
    model_version: str = "0" * 64,
) -> SegmentationResult:
    """Measure every label of ``labels`` (``(z, y, x)`` on ``image``'s grid).

    Parameters
    ----------
    labels
        0 = background, k = lesion k.
    locations
        Location class per label (dict label -> class, or list in label order); default: cycle
        through :data:`ai.types.LOCATIONS`.
    probability
        Default: 0.9 inside lesions, 0.05 elsewhere.
    """
    labels = np.asarray(labels).astype(np.uint16)
    if labels.shape != sitk.GetArrayViewFromImage(image).shape:
        raise ValueError(f"labels {labels.shape} do not match image {image.GetSize()[::-1]}")
    ids = [int(i) for i in np.unique(labels) if i != 0]
    if locations is None:
        loc_of = {i: LOCATIONS[(n) % len(LOCATIONS)] for n, i in enumerate(ids)}
    elif isinstance(locations, dict):
        loc_of = dict(locations)
    else:
        loc_of = {i: locations[n] for n, i in enumerate(ids)}
    if probability is None:
        probability = np.where(labels > 0, 0.9, 0.05).astype(np.float32)
    sx, sy, sz = image.GetSpacing()
    voxel_mm3 = sx * sy * sz
    lesions: list[Lesion] = []
    for i in ids:
        idx = np.argwhere(labels == i)
        n = len(idx)
        c = idx.mean(axis=0)
        z0, y0, x0 = idx.min(axis=0)
        z1, y1, x1 = idx.max(axis=0) + 1
        vol = n * voxel_mm3
        centre_mm = image.TransformContinuousIndexToPhysicalPoint((float(c[2]), float(c[1]), float(c[0])))
        lesions.append(Lesion(
            id=i, voxels=n, volume_mm3=float(vol),
            centroid_index=(float(c[0]), float(c[1]), float(c[2])),
            centroid_mm=(float(centre_mm[0]), float(centre_mm[1]), float(centre_mm[2])),
            bbox_index=(int(z0), int(y0), int(x0), int(z1), int(y1), int(x1)),
            mean_probability=float(probability[labels == i].mean()),
            max_probability=float(probability[labels == i].max()),
            size_class="small" if vol < 100 else "medium" if vol < 1000 else "large",
            location=loc_of[i],
        ))
    summary = summarise(lesions)
    return SegmentationResult(
        labels=labels, probability=probability.astype(np.float32), lesions=lesions,
        summary=summary, model_name=model_name, model_version=model_version,
        spacing_mm=(sx, sy, sz),
    )


def split_enhanced(ds, sizes: list[int]) -> list:
    """Split an uncompressed Enhanced multi-frame dataset into several objects (tests only).

    Each part gets ``sizes[i]`` consecutive frames, its own SOP Instance UID (the original UID
    with ``.1``, ``.2``, ... appended) and the matching per-frame functional groups.
    """
    import copy

    import numpy as np
    from pydicom.sequence import Sequence

    if sum(sizes) != int(ds.NumberOfFrames):
        raise ValueError("sizes must add up to NumberOfFrames")
    px = ds.pixel_array
    parts, start = [], 0
    for i, n in enumerate(sizes, start=1):
        d = copy.deepcopy(ds)
        d.SOPInstanceUID = f"{ds.SOPInstanceUID}.{i}"
        d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
        d.NumberOfFrames = n
        d.PerFrameFunctionalGroupsSequence = Sequence(
            list(ds.PerFrameFunctionalGroupsSequence[start:start + n]))
        d.PixelData = np.ascontiguousarray(px[start:start + n]).tobytes()
        parts.append(d)
        start += n
    return parts
