"""Lesion post-processing: components, measurements, location classes, study summary.

Location rules (applied per lesion in this order, first match wins; McDonald 2017 brain areas):

1. **infratentorial**: >= 50 % of the voxels of the lesion plus its 1-voxel shell of touching
   neighbours lie in the infratentorial map (brainstem + cerebellum, predicted by the model, holes
   filled);
2. **periventricular**: some lesion voxel is within ``pv_mm`` (default 3 mm, physical distance
   with the true anisotropic spacing) of the lateral-ventricle map (includes lesions touching
   the ventricles);
3. **juxtacortical** (juxtacortical/cortical): the lesion touches or overlaps the cortex map or
   the brain surface (a touching neighbour of a lesion voxel is cortex or outside the brain mask),
   or lies within ``jc_mm`` (default 2 mm, physical distance) of the cortex;
4. **deep_white_matter**: everything else (not a McDonald area).

"Touching" (:func:`contact_structure`) is the 26-neighbourhood, less the neighbours along an axis
whose spacing exceeds :data:`CONTACT_MM` (3 mm): on a 6-8 mm 2D series a lesion does not touch
what lies in the slice above or below, 6-8 mm away. With the 26-neighbourhood on those series,
SAMSEG's cortex made 159 of the 291 manual lesions of the 10 clinical patients juxtacortical
(55 %); with this rule 76 (26 %), with patient19 (1 mm) unchanged (model card, "The contact
rule on thick slices").

Study level: load category from the total lesion volume -- ``none`` (no lesion), ``low``
(< 5 mL), ``moderate`` (5-15 mL), ``high`` (> 15 mL); dissemination in space on brain MRI is met
when >= 2 of the 3 brain McDonald areas (periventricular, juxtacortical/cortical,
infratentorial) hold >= 1 lesion (the 4th area, spinal cord, is out of scope).
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ai.preprocess import bbox
from ai.types import LOCATIONS, THIN_SLICE_GROW, THIN_SLICE_MM, Lesion, StudySummary

DIS_AREAS = ("periventricular", "juxtacortical", "infratentorial")
LOAD_THRESHOLDS_ML = (5.0, 15.0)
STRUCT26 = np.ones((3, 3, 3), bool)
#: the location rules' "touches" (:func:`contact_structure`) reaches the next voxel along an axis
#: only where that axis's spacing is at most this (mm)
CONTACT_MM = 3.0
#: a lesion whose mean probability is below this is reported as low confidence: the least reliable
#: lesions. Cross-patient folds of the shipped stage-16 files: on the 10 clinical 2D patients 25 of
#: the 44 predicted lesions under 0.7 overlap a reference lesion (PPV 0.57) against 221 of 274 at
#: or above (0.81); on patient19 (fold A') 4 of 13 (0.31) against 31 of 45 (0.69). Chosen with
#: stage 13, where fewer than half of those under 0.7 were true (18 of 37; stages 9-12 gave 0.7
#: too, stage 8 0.8); ``crossval`` prints both sides of it (model card, "Confidence")
LOW_CONFIDENCE = 0.7



def size_class(volume_mm3: float) -> str:
    """small < 100 mm3 <= medium < 1000 mm3 <= large."""
    return "small" if volume_mm3 < 100 else ("medium" if volume_mm3 < 1000 else "large")


def load_category(total_mm3: float, count: int) -> str:
    """none / low (< 5 mL) / moderate (5-15 mL) / high (> 15 mL)."""
    if count == 0:
        return "none"
    ml = total_mm3 / 1000.0
    return "low" if ml < LOAD_THRESHOLDS_ML[0] else ("moderate" if ml <= LOAD_THRESHOLDS_ML[1] else "high")


def is_thin_slice(spacing, thin_mm: float = THIN_SLICE_MM) -> bool:
    """Whether every voxel spacing is at most ``thin_mm`` (a 3D acquisition, any orientation)."""
    return max(float(s) for s in spacing) <= thin_mm


def work_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice, slice]:
    """The bounding box of ``mask`` grown by ``margin`` voxels (the whole grid when it is empty).

    The post-processing here and in :mod:`ai.infer` works inside such boxes instead of on the
    whole grid (a head fills a third to a half of the model grid, lesions far less of the source
    grid). Each use takes a margin at least as wide as its own reach, so its result equals the
    result on the whole grid; ``tests/test_ai_postprocess.py`` compares the two, with this
    function made to return the whole grid.
    """
    return bbox(mask, margin)


def lesion_mask(prob: np.ndarray, spacing_zyx, threshold: float = 0.5,
                grow: float | None = THIN_SLICE_GROW) -> np.ndarray:
    """Binary lesion mask: ``prob >= threshold``; on thin-slice grids (:func:`is_thin_slice`)
    every 26-connected component of ``prob >= grow`` that holds a voxel ``>= threshold`` (lesions
    are found at the threshold and drawn to ``grow``). ``grow`` None or >= ``threshold``: the
    plain cut everywhere."""
    seed = prob >= threshold
    if grow is None or grow >= threshold or not is_thin_slice(spacing_zyx) or not seed.any():
        return seed
    grown = prob >= grow
    box = work_box(grown)  # every seed lies in it (threshold > grow)
    lab, n = ndi.label(grown[box], structure=STRUCT26)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[seed[box]])] = True
    keep[0] = False
    out = np.zeros_like(seed)
    out[box] = keep[lab]
    return out


def components(mask: np.ndarray, spacing_zyx, min_voxels: int = 3, min_volume_mm3: float = 10.0):
    """26-connected components of ``mask`` that pass both size limits, relabelled 1..n (uint16)."""
    out = np.zeros(mask.shape, np.uint16)
    box = work_box(mask)  # labels inside it come in the same (raster) order as on the whole grid
    lab, n = ndi.label(mask[box], structure=STRUCT26)
    if n == 0:
        return out, 0
    counts = np.bincount(lab.ravel(), minlength=n + 1)
    vox_mm3 = float(np.prod(spacing_zyx))
    keep = (counts >= min_voxels) & (counts * vox_mm3 >= min_volume_mm3)
    keep[0] = False
    new = np.zeros(n + 1, np.uint16)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint16)
    out[box] = new[lab]
    return out, int(keep.sum())


def contact_structure(spacing_zyx, contact_mm: float | None = None) -> np.ndarray:
    """The neighbours a voxel "touches": the 26-neighbourhood, less the neighbours along an axis
    whose spacing exceeds ``contact_mm`` (default :data:`CONTACT_MM`): on a 6-8 mm 2D series the
    slices above and below are not in contact, on a 1 mm 3D series they are."""
    lim = CONTACT_MM if contact_mm is None else contact_mm
    st = np.zeros((3, 3, 3), bool)
    reach = [slice(0, 3) if float(s) <= lim else slice(1, 2) for s in spacing_zyx]
    st[tuple(reach)] = True
    return st


def classify(comp: np.ndarray, anatomy: dict[str, np.ndarray], spacing_zyx, pv_mm: float = 3.0,
             jc_mm: float = 2.0, contact_mm: float | None = None) -> str:
    """Location class of one lesion (boolean mask of a local crop; anatomy maps on the same crop);
    ``contact_mm``: see :func:`contact_structure`."""
    ring = ndi.binary_dilation(comp, contact_structure(spacing_zyx, contact_mm)) & ~comp
    infra = anatomy.get("infratentorial")
    if infra is not None:
        # judged on the lesion plus its 1-voxel shell: the model tends to leave the lesion itself
        # out of the infratentorial map, the surrounding tissue decides
        both = comp | ring
        if (infra & both).sum() >= 0.5 * both.sum():
            return "infratentorial"
    vent = anatomy.get("ventricles")
    if vent is not None and vent.any():
        if (vent & comp).any():
            return "periventricular"
        d = ndi.distance_transform_edt(~vent, sampling=spacing_zyx)
        if d[comp].min() <= pv_mm:
            return "periventricular"
    cortex = anatomy.get("cortex")
    brain = anatomy.get("brain")
    if cortex is not None and ((cortex & (ring | comp)).any()):
        return "juxtacortical"
    if brain is not None and (ring & ~brain).any():
        return "juxtacortical"
    if cortex is not None and cortex.any():
        d = ndi.distance_transform_edt(~cortex, sampling=spacing_zyx)
        if d[comp].min() <= jc_mm:
            return "juxtacortical"
    return "deep_white_matter"


def analyse(prob: np.ndarray, source: sitk.Image, anatomy: dict[str, np.ndarray], threshold: float = 0.5,
            min_voxels: int = 3, min_volume_mm3: float = 10.0, pv_mm: float = 3.0, jc_mm: float = 2.0,
            mask: np.ndarray | None = None, grow: float | None = THIN_SLICE_GROW,
            contact_mm: float | None = None):
    """Labels, per-lesion measurements and the study summary on the source grid.

    Parameters
    ----------
    prob : ndarray
        Lesion probability (z, y, x) on the source grid.
    source : sitk.Image
        The source FLAIR (spacing and physical frame for volumes and centroids).
    anatomy : dict
        Boolean maps (z, y, x) on the source grid: brain, ventricles, cortex, infratentorial.
    mask : ndarray, optional
        Precomputed binary lesion mask (default :func:`lesion_mask`: ``prob >= threshold``, grown
        to ``grow`` on thin-slice grids).
    grow : float or None
        See :func:`lesion_mask`; None: the plain threshold on every grid.
    contact_mm : float, optional
        How far apart slices may be and still touch (:func:`contact_structure`; default
        :data:`CONTACT_MM`).

    Returns
    -------
    labels : ndarray uint16, lesions : list[Lesion], summary : StudySummary
    """
    sp_xyz = source.GetSpacing()
    sp = (sp_xyz[2], sp_xyz[1], sp_xyz[0])
    seg = lesion_mask(prob, sp, threshold, grow) if mask is None else mask
    # a lesion's mean probability is taken over the voxels found at the threshold (its core):
    # the confidence cut was measured that way, and a 3D lesion's grown rim (< threshold) would
    # otherwise lower it with how far it was drawn, not with how sure the detection is
    core = prob >= threshold if mask is None else None
    labels, n = components(seg, sp, min_voxels, min_volume_mm3)
    vox_mm3 = float(np.prod(sp))
    lesions: list[Lesion] = []
    margin = [int(np.ceil(max(pv_mm, jc_mm) / s)) + 2 for s in sp]
    objs = ndi.find_objects(labels)
    for i, bb in enumerate(objs, start=1):
        if bb is None:
            continue
        big = tuple(slice(max(0, b.start - m), min(sz, b.stop + m))
                    for b, m, sz in zip(bb, margin, labels.shape, strict=True))
        comp = labels[big] == i
        idx = np.argwhere(comp)
        nvox = int(len(idx))
        cz, cy, cx = (idx.mean(0) + [b.start for b in big]).tolist()
        cmm = source.TransformContinuousIndexToPhysicalPoint((cx, cy, cz))
        loc = classify(comp, {k: v[big] for k, v in anatomy.items()}, sp, pv_mm, jc_mm, contact_mm)
        vol = nvox * vox_mm3
        lesions.append(Lesion(
            id=i, voxels=nvox, volume_mm3=round(vol, 3),
            centroid_index=(round(cz, 3), round(cy, 3), round(cx, 3)),
            centroid_mm=(round(float(cmm[0]), 3), round(float(cmm[1]), 3), round(float(cmm[2]), 3)),
            bbox_index=(bb[0].start, bb[1].start, bb[2].start, bb[0].stop, bb[1].stop, bb[2].stop),
            mean_probability=round(_core_mean(prob[bb], labels[bb] == i, None if core is None else core[bb]), 4),
            max_probability=round(float(prob[bb][labels[bb] == i].max()), 4),
            size_class=size_class(vol), location=loc))
    return labels, lesions, summarise(lesions)


def _core_mean(prob: np.ndarray, lesion: np.ndarray, core: np.ndarray | None) -> float:
    """Mean of ``prob`` over ``lesion & core`` (the whole lesion when ``core`` is None or misses it)."""
    if core is not None:
        inner = lesion & core
        if inner.any():
            return float(prob[inner].mean())
    return float(prob[lesion].mean())


def summarise(lesions: list[Lesion], confidence_cut: float = LOW_CONFIDENCE) -> StudySummary:
    """Study-level counts, volumes, load category, dissemination in space, and how many lesions
    have a mean probability below ``confidence_cut`` (low confidence)."""
    counts = {loc: 0 for loc in LOCATIONS}
    vols = {loc: 0.0 for loc in LOCATIONS}
    for les in lesions:
        counts[les.location] += 1
        vols[les.location] += les.volume_mm3
    total = float(sum(vols.values()))
    areas = [a for a in DIS_AREAS if counts[a] > 0]
    return StudySummary(lesion_count=len(lesions), total_volume_mm3=round(total, 3), counts_by_location=counts,
                        volume_by_location_mm3={k: round(v, 3) for k, v in vols.items()},
                        load_category=load_category(total, len(lesions)), dis_areas=areas, dis_met=len(areas) >= 2,
                        low_confidence_count=sum(les.mean_probability < confidence_cut for les in lesions),
                        confidence_cut=confidence_cut)
