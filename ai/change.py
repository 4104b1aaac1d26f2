"""Lesion change between a prior and a follow-up FLAIR of one patient (image maths only).

``python -m ai evaluate-change PAIRS_DIR --json OUT [--plots DIR]``

1. **Comparability** (:func:`comparable`): same orientation class of the slices (axial, sagittal
   or coronal) and slice thicknesses within a factor 2; otherwise no comparison is made.
2. **Registration** (:func:`register`): rigid (Euler 3D), prior onto follow-up, Mattes mutual
   information on 2 mm copies, geometry-centred start. Quality check: the head masks (Otsu
   foreground, holes filled) must overlap with Dice >= :data:`QC_MIN_HEAD_DICE` after
   registration, else the pair counts as not comparable (a failed registration must never turn
   into "new lesions").
3. **Change voxels** (:func:`change_voxels`, on the follow-up grid): both studies are segmented by
   the same model and the prior's lesion probability is carried onto the follow-up (linear). A
   voxel has **grown** where the follow-up's probability is >= :data:`CHANGE_P_HIGH` and the
   prior's < :data:`CHANGE_P_LOW`, and (when the images allow, :func:`intensity_change`) the FLAIR
   got brighter by >= :data:`CHANGE_MIN_CONTRAST` of the follow-up's median brain signal and is
   >= :data:`CHANGE_MIN_SIGNAL` of it now (hyperintense); **lost** is the same with the studies
   swapped. Each keeps its 26-connected pieces of >= :data:`CHANGE_MIN_MM3`. The joint rule asks
   both probability maps to agree (one sure, the other near zero) and the signal itself to
   change, so the boundary wobble of two independent segmentations (24-45 % volume variability of
   small lesions, Arch Neurol 1992) and their intermediate-probability voxels are not change.
   The probability, size and contrast numbers are the best of 72 settings on the two real pairs
   of ``../shared/data/ms/longitudinal`` with the weights 4067fb26 (change-region F1 0.370
   in-sample; chosen leave-one-pair-out, 0.263 on the held-out pair; 0.296 with the shipped
   weights and 0.298 with the ones before them, not tuned on either; see
   ``ai/weights/MODEL_CARD.md``): two pairs are far too few to claim a general figure.
   :data:`CHANGE_MIN_SIGNAL` (a lesion is brighter than the median brain) was fixed beforehand.
4. **Matching** (:func:`compare`): the prior's lesion labels are carried onto the follow-up grid
   (nearest neighbour). A follow-up lesion that touches no prior lesion is **new** when it spans
   >= :data:`NEW_MIN_INPLANE_MM` in-plane, lies wholly inside the prior's field of view, holds >=
   :data:`CHANGE_MIN_MM3` of grown voxels (the signal confirms it) and the prior's probability
   stayed < :data:`NEW_MAX_PRIOR_PROBABILITY` everywhere inside it (and it passes the node's
   minimum volume, as every lesion does); when the model half-saw it in the
   prior it is **enlarging** if it holds >= :data:`CHANGE_MIN_MM3` of grown voxels, else stable.
   A follow-up lesion that touches prior lesions is **enlarging** when it holds >=
   :data:`CHANGE_MIN_MM3` of grown voxels (a growth piece ringing an existing lesion, the SAMSEG
   longitudinal rule); without the prior's probability map the volume rule is added: volume >=
   :data:`ENLARGE_RATIO` x that of the prior lesions AND growth >= :data:`ENLARGE_MIN_MM3`. A prior
   lesion with >= :data:`CHANGE_MIN_MM3` of lost voxels has **vanished** when it touches no
   follow-up lesion, else it is **shrinking** (without the follow-up's probability map only when
   its follow-up volume is <= 1 / :data:`ENLARGE_RATIO` of its own and it lost >=
   :data:`ENLARGE_MIN_MM3`); a prior lesion without lost voxels is stable. The ratio 1.5 sits
   above the volume measurement variability cited above; 15 mm3 is the minimum change piece of
   the SAMSEG rule.

The change map on the follow-up grid: 1 new lesion, 2 enlarging part (the grown voxels of an
enlarging lesion), 3 stable lesion (and the rest of an enlarging one), 4 shrinking or vanished part
(the lost voxels of a shrinking or vanished prior lesion).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ai import preprocess as pp
from ai.types import ChangeReport, LesionChange

log = logging.getLogger(__name__)

ENLARGE_RATIO = 1.5
ENLARGE_MIN_MM3 = 15.0
NEW_MIN_INPLANE_MM = 3.0
QC_MIN_HEAD_DICE = 0.85
NEW_MAX_PRIOR_PROBABILITY = 0.2
CHANGE_P_HIGH = 0.3
CHANGE_P_LOW = 0.1
CHANGE_MIN_MM3 = 10.0
CHANGE_MIN_CONTRAST: float | None = 0.1
CHANGE_MIN_SIGNAL = 1.0
DEEP_MM = 20.0
NEW, ENLARGING, STABLE, SHRINKING = 1, 2, 3, 4


def orientation_class(img: sitk.Image) -> str:
    """axial / coronal / sagittal: the patient axis closest to the slice normal."""
    normal = np.array(img.GetDirection()).reshape(3, 3)[:, 2]
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def comparable(prior: sitk.Image, follow: sitk.Image) -> str | None:
    """None when the two FLAIRs can be compared, else the reason why not."""
    a, b = orientation_class(prior), orientation_class(follow)
    if a != b:
        return f"different slice orientation ({a} prior, {b} follow-up)"
    ta, tb = prior.GetSpacing()[2], follow.GetSpacing()[2]
    if max(ta, tb) > 2.0 * min(ta, tb):
        return f"slice thickness differs by more than a factor 2 ({ta:.1f} vs {tb:.1f} mm)"
    return None


def _head(img: sitk.Image) -> np.ndarray:
    from ai.infer import fill_holes_per_slice

    return fill_holes_per_slice(pp.foreground_mask(sitk.GetArrayFromImage(img)))


@dataclass
class Registration:
    transform: sitk.Transform  #: maps follow-up points to prior points (sitk.Resample convention)
    head_dice: float
    ok: bool
    reason: str = ""


def register(prior: sitk.Image, follow: sitk.Image, iterations: int = 100) -> Registration:
    """Rigid registration of the prior FLAIR onto the follow-up FLAIR, with its quality check."""
    fixed = sitk.Cast(follow, sitk.sitkFloat32)
    moving = sitk.Cast(prior, sitk.sitkFloat32)
    f2, m2 = pp._downsample(fixed, 2.0), pp._downsample(moving, 2.0)
    init = sitk.CenteredTransformInitializer(f2, m2, sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # 10 % random samples: on both real pairs within 0.13 mm (at the brain's corners) of a
    # 300-iteration, 50 % sampling reference run, in about half the time of 20 %
    reg.SetMetricSamplingPercentage(0.1, 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-3, iterations, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SetInitialTransform(init, inPlace=False)
    tx = reg.Execute(f2, m2)
    # the check on the 2 mm copies: as telling as at full resolution, a fraction of the time
    head_f = _head(f2)
    head_m = sitk.GetArrayFromImage(sitk.Resample(_as_image(_head(m2), m2), f2, tx,
                                                  sitk.sitkNearestNeighbor, 0)) > 0
    s = head_f.sum() + head_m.sum()
    d = float(2 * (head_f & head_m).sum() / s) if s else 0.0
    ok = d >= QC_MIN_HEAD_DICE
    return Registration(tx, d, ok, "" if ok else f"registration quality check failed (head Dice {d:.2f} < "
                                                 f"{QC_MIN_HEAD_DICE})")


def _as_image(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.CopyInformation(ref)
    return img


@dataclass
class Change:
    """The comparison on the follow-up grid (arrays (z, y, x) like the follow-up FLAIR)."""

    change_map: np.ndarray  #: uint8, see the module docstring
    follow_status: dict[int, str] = field(default_factory=dict)  #: follow-up lesion id -> status
    prior_status: dict[int, str] = field(default_factory=dict)  #: prior lesion id -> stable/shrinking/vanished
    prior_volume_of: dict[int, float] = field(default_factory=dict)  #: follow-up id -> matched prior mm3
    matches: dict[int, list[int]] = field(default_factory=dict)  #: follow-up id -> prior ids it touches
    continued_by: dict[int, list[int]] = field(default_factory=dict)  #: prior id -> follow-up ids
    n_new: int = 0
    n_enlarging: int = 0
    activity: bool = False  #: new or enlarging lesions


def _on_follow(arr: np.ndarray, prior_img: sitk.Image, follow_img: sitk.Image, transform: sitk.Transform,
               interp) -> np.ndarray:
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(prior_img)
    return sitk.GetArrayFromImage(sitk.Resample(img, follow_img, transform, interp, 0))


def intensity_change(prior_img: sitk.Image, follow_img: sitk.Image, transform: sitk.Transform,
                     prior_on_f: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """FLAIR signal change on the follow-up grid, in units of the follow-up's median brain signal:
    ``(follow, matched prior, follow - matched prior)``.

    The registered prior is mapped onto the follow-up's intensities by quantile matching (2nd to
    98th percentile, 25 points; the ratio of the medians when quantiles tie) over the voxels deep
    in the head (>= :data:`DEEP_MM` in-plane from its surface, mostly brain) that both studies
    cover, which removes scanner gain and contrast differences. None when there is no such region
    (e.g. blank images)."""
    fa = sitk.GetArrayFromImage(follow_img).astype(np.float32)
    pa = prior_on_f if prior_on_f is not None else _on_follow(
        sitk.GetArrayFromImage(prior_img).astype(np.float32), prior_img, follow_img, transform, sitk.sitkLinear)
    cover = _on_follow(np.ones(sitk.GetArrayFromImage(prior_img).shape, np.uint8), prior_img, follow_img,
                       transform, sitk.sitkNearestNeighbor) > 0
    head = _head(follow_img)
    sy, sx = follow_img.GetSpacing()[1], follow_img.GetSpacing()[0]
    deep = np.zeros_like(head)
    for z in np.nonzero(head.any((1, 2)))[0]:
        deep[z] = ndi.distance_transform_edt(head[z], sampling=(sy, sx)) >= DEEP_MM
    region = deep & cover
    if region.sum() < 1000:
        return None
    qs = np.linspace(2.0, 98.0, 25)
    qf, qp = np.percentile(fa[region], qs), np.percentile(pa[region], qs)
    scale = float(np.median(fa[region]))
    if scale <= 0 or qp[12] <= 0:
        return None
    # flat histograms (phantoms) have tied quantiles: then the medians' ratio alone
    pm = np.interp(pa, qp, qf) if np.all(np.diff(qp) > 0) else pa * (scale / float(qp[12]))
    fn, pm = fa / scale, (pm / scale).astype(np.float32)
    return fn, pm, fn - pm


def change_voxels(prior_p: np.ndarray, follow_p: np.ndarray, spacing_zyx, cover: np.ndarray | None = None,
                  signal: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The joint voxel rule on the follow-up grid: (growth, loss) boolean maps.

    Growth: follow-up lesion probability >= :data:`CHANGE_P_HIGH` where the registered prior's is <
    :data:`CHANGE_P_LOW` (and, with ``signal``, FLAIR brighter by >= :data:`CHANGE_MIN_CONTRAST`
    and >= :data:`CHANGE_MIN_SIGNAL` now); loss: the same with the two studies swapped. Each map
    keeps its 26-connected pieces of >= :data:`CHANGE_MIN_MM3` (and 3 voxels)."""
    from ai.lesions import components

    grow = (follow_p >= CHANGE_P_HIGH) & (prior_p < CHANGE_P_LOW)
    loss = (prior_p >= CHANGE_P_HIGH) & (follow_p < CHANGE_P_LOW)
    if cover is not None:
        grow &= cover
        loss &= cover
    if signal is not None and CHANGE_MIN_CONTRAST is not None:
        fn, pm, d = signal
        grow &= (d >= CHANGE_MIN_CONTRAST) & (fn >= CHANGE_MIN_SIGNAL)
        loss &= (d <= -CHANGE_MIN_CONTRAST) & (pm >= CHANGE_MIN_SIGNAL)
    return (components(grow, spacing_zyx, 3, CHANGE_MIN_MM3)[0] > 0,
            components(loss, spacing_zyx, 3, CHANGE_MIN_MM3)[0] > 0)


def compare(prior_labels: np.ndarray, prior_img: sitk.Image, follow_labels: np.ndarray, follow_img: sitk.Image,
            transform: sitk.Transform, prior_probability: np.ndarray | None = None, *,
            follow_probability: np.ndarray | None = None, use_signal: bool = True) -> Change:
    """Match the lesions of two labelled studies (labels and probabilities on each study's own grid).

    Without ``prior_probability`` / ``follow_probability`` the lesion labels stand in for them
    (probability 1 inside a lesion, 0 outside). ``use_signal``: confirm the voxel change by the
    FLAIR signal change (:func:`intensity_change`); skipped when the images give no brain region.
    See the module docstring for the rules."""
    pv = float(np.prod(prior_img.GetSpacing()))
    fv = float(np.prod(follow_img.GetSpacing()))
    sp_zyx = follow_img.GetSpacing()[::-1]
    prior_on_f = _on_follow(prior_labels.astype(np.uint32), prior_img, follow_img, transform,
                            sitk.sitkNearestNeighbor).astype(np.int64)
    cover = _on_follow(np.ones(prior_labels.shape, np.uint8), prior_img, follow_img, transform,
                       sitk.sitkNearestNeighbor) > 0
    if prior_probability is not None:
        prior_p = _on_follow(prior_probability.astype(np.float32), prior_img, follow_img, transform, sitk.sitkLinear)
    else:
        prior_p = (prior_on_f > 0).astype(np.float32)
    follow_p = (follow_probability.astype(np.float32, copy=False) if follow_probability is not None
                else (follow_labels > 0).astype(np.float32))
    signal = intensity_change(prior_img, follow_img, transform) if use_signal else None
    grow, loss = change_voxels(prior_p, follow_p, sp_zyx, cover, signal)
    prior_vol = np.bincount(prior_labels.ravel().astype(np.int64)) * pv
    follow_vol = np.bincount(follow_labels.ravel().astype(np.int64)) * fv
    sy, sx = follow_img.GetSpacing()[1], follow_img.GetSpacing()[0]
    out = Change(np.zeros(follow_labels.shape, np.uint8))
    touched_prior: dict[int, list[int]] = {}
    for j, bb in enumerate(ndi.find_objects(follow_labels.astype(np.int64)), start=1):
        if bb is None:
            continue
        m = follow_labels[bb] == j
        hits = [int(h) for h in np.unique(prior_on_f[bb][m]) if h > 0]
        grown = m & grow[bb]
        now = float(follow_vol[j])
        if not hits:
            extent = max((bb[1].stop - bb[1].start) * sy, (bb[2].stop - bb[2].start) * sx)
            seen_before = float(prior_p[bb][m].max()) >= NEW_MAX_PRIOR_PROBABILITY
            if (extent >= NEW_MIN_INPLANE_MM and not seen_before and cover[bb][m].all()
                    and grown.sum() * fv >= CHANGE_MIN_MM3):
                status = "new"
            elif seen_before and grown.sum() * fv >= CHANGE_MIN_MM3:
                status = "enlarging"  # grew out of a lesion the model only half-saw in the prior
            else:
                status = "stable"
        else:
            before = float(sum(prior_vol[h] for h in hits if h < len(prior_vol)))
            out.prior_volume_of[j] = before
            out.matches[j] = hits
            status = ("enlarging" if grown.sum() * fv >= CHANGE_MIN_MM3 and (prior_probability is not None or (
                now >= ENLARGE_RATIO * before and now - before >= ENLARGE_MIN_MM3)) else "stable")
            for h in hits:
                touched_prior.setdefault(h, []).append(j)
        out.follow_status[j] = status
        region = out.change_map[bb]
        if status == "new":
            region[m] = NEW
        elif status == "enlarging":
            region[grown] = ENLARGING
            region[m & ~grown] = STABLE
        else:
            region[m] = STABLE
    boxes = ndi.find_objects(prior_on_f)
    for i in range(1, len(prior_vol)):
        if prior_vol[i] == 0:
            continue
        bb = boxes[i - 1] if i <= len(boxes) else None
        if bb is None:  # outside the follow-up's field of view
            out.prior_status[i] = "stable"
            continue
        mi = prior_on_f[bb] == i
        lost = mi & loss[bb]
        js = touched_prior.get(i)
        now = float(sum(follow_vol[j] for j in js)) if js else 0.0
        if lost.sum() * fv < CHANGE_MIN_MM3:
            status = "stable"  # no loss piece: boundary wobble, or still faintly seen
        elif not js:
            status = "vanished"
        else:
            status = ("shrinking" if follow_probability is not None or (
                now <= prior_vol[i] / ENLARGE_RATIO and prior_vol[i] - now >= ENLARGE_MIN_MM3) else "stable")
        out.prior_status[i] = status
        if status != "stable":
            out.change_map[bb][lost & (out.change_map[bb] == 0)] = SHRINKING
    out.continued_by = touched_prior
    out.n_new = sum(s == "new" for s in out.follow_status.values())
    out.n_enlarging = sum(s == "enlarging" for s in out.follow_status.values())
    out.activity = bool(out.n_new or out.n_enlarging)
    return out


def change_report(ch: Change, follow_lesions: list, prior_lesions: list, *,
                  prior_tracking: dict[int, tuple[str, str]] | None = None,
                  prior_study_uid: str = "", prior_study_date: str = "", follow_study_date: str = "",
                  prior_accession: str = "", head_dice: float | None = None,
                  prior_reused: bool = False) -> ChangeReport:
    """The comparison as the encoders' :class:`ai.types.ChangeReport`.

    ``follow_lesions`` / ``prior_lesions``: :class:`ai.types.Lesion` lists of the two results
    (ids = label values); ``prior_tracking``: prior lesion id -> (tracking UID, identifier) of
    the prior's report. A continuing follow-up lesion takes the tracking UID of the largest prior
    lesion it touches."""
    prior_tracking = prior_tracking or {}
    pvol = {les.id: float(les.volume_mm3) for les in prior_lesions}
    fvol = {les.id: float(les.volume_mm3) for les in follow_lesions}
    out: list[LesionChange] = []
    for les in sorted(follow_lesions, key=lambda x: x.id):
        status = ch.follow_status.get(les.id, "stable")
        hits = ch.matches.get(les.id, [])
        uid, ident = None, None
        if hits:
            main = max(hits, key=lambda h: pvol.get(h, 0.0))
            uid, ident = prior_tracking.get(main, (None, None))
        out.append(LesionChange(les.id, "follow-up", status, round(fvol[les.id], 3),
                                round(ch.prior_volume_of[les.id], 3) if les.id in ch.prior_volume_of
                                else None, uid, ident))
    for pid, status in sorted(ch.prior_status.items()):
        if status == "stable":
            continue
        now = sum(fvol.get(j, 0.0) for j in ch.continued_by.get(pid, []))
        uid, ident = prior_tracking.get(pid, (None, None))
        out.append(LesionChange(pid, "prior", status, round(now, 3), round(pvol.get(pid, 0.0), 3),
                                uid, ident))
    a, b = _as_date(prior_study_date), _as_date(follow_study_date)
    return ChangeReport(
        comparable=True, prior_study_uid=prior_study_uid, prior_study_date=prior_study_date,
        prior_accession=prior_accession, interval_days=(b - a).days if a and b else None,
        n_new=ch.n_new, n_enlarging=ch.n_enlarging,
        n_shrinking=sum(s == "shrinking" for s in ch.prior_status.values()),
        n_vanished=sum(s == "vanished" for s in ch.prior_status.values()),
        total_volume_prior_mm3=round(sum(pvol.values()), 3),
        total_volume_now_mm3=round(sum(fvol.values()), 3), activity=ch.activity,
        registration_head_dice=None if head_dice is None else round(float(head_dice), 4),
        prior_reused=prior_reused, lesions=out, change_map=ch.change_map)


def _as_date(text: str):
    import datetime as dt

    try:
        return dt.datetime.strptime((text or "")[:8], "%Y%m%d").date()
    except ValueError:
        return None


def change_on_flair(patient: Path, study: str, flair: sitk.Image) -> np.ndarray:
    """The dataset's expert change mask (common space) resampled onto one study's FLAIR grid."""
    cm = sitk.ReadImage(str(patient / "change_mask.nii.gz"))
    to_common = sitk.ReadTransform(str(patient / f"{study}_FLAIR_to_common_space.txt"))
    return sitk.GetArrayFromImage(sitk.Resample(cm, flair, to_common.GetInverse(), sitk.sitkNearestNeighbor, 0)) > 0


def moved_copy(img: sitk.Image, degrees: float = 3.0, shift_mm=(2.0, -1.5, 1.0)) -> sitk.Image:
    """The same image rigidly moved (a rotation about the slice axis and a shift) and resampled
    onto its own grid: a pair of it with the original must give no new lesions."""
    c = img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in img.GetSize()])
    tx = sitk.Euler3DTransform(c, 0.0, 0.0, np.deg2rad(degrees), shift_mm)
    return sitk.Resample(img, img, tx, sitk.sitkLinear, 0.0)


def _detection(pred: np.ndarray, ref: np.ndarray, spacing_zyx) -> dict:
    """Change-region detection: a reference region is found when a predicted change region
    overlaps it, and a predicted region is true when it overlaps a reference region (both:
    26-connected components >= 10 mm3)."""
    from ai.evaluate import lesion_match
    from ai.lesions import components

    pl, npred = components(pred, spacing_zyx)
    rl, nref = components(ref, spacing_zyx)
    return lesion_match(pl, npred, rl, nref)


def evaluate_pairs(pairs_dir: Path, weights=None, device: str = "auto", tta: bool = True, bf16: bool | None = None,
                   self_pairs: bool = True, plots: Path | None = None) -> dict:
    """Run the comparison on every ``PAIRS_DIR/<patient>/`` holding ``study1_FLAIR.nii.gz`` (prior),
    ``study2_FLAIR.nii.gz`` (follow-up), optional ``studyK_T1W.nii.gz``, ``change_mask.nii.gz`` and
    ``studyK_FLAIR_to_common_space.txt`` (the layout of ``../shared/data/ms/longitudinal``).

    Per pair: detection sensitivity / PPV / F1 of the expert change regions by the predicted change
    (new, enlarging parts, shrinking or vanished parts; the expert masks mark change in both
    directions), the number of new lesions and of false new lesions (overlapping no change
    region); with ``self_pairs``, the new lesions found between the follow-up and itself and
    between it and a rigidly moved copy of itself (zero is the only right answer).
    """
    from ai.infer import Segmenter

    seg = Segmenter(weights, device=device, tta=tta, bf16=bf16)
    pairs = sorted(p for p in Path(pairs_dir).iterdir() if (p / "study1_FLAIR.nii.gz").exists()
                   and (p / "study2_FLAIR.nii.gz").exists() and (p / "change_mask.nii.gz").exists())
    if not pairs:
        raise SystemExit(f"no pairs (study1_FLAIR, study2_FLAIR, change_mask) under {pairs_dir}")
    res: dict = {}
    for p in pairs:
        img = {k: sitk.ReadImage(str(p / f"{k}_FLAIR.nii.gz"), sitk.sitkFloat32) for k in ("study1", "study2")}
        t1 = {k: sitk.ReadImage(str(p / f"{k}_T1W.nii.gz"), sitk.sitkFloat32)
              if (p / f"{k}_T1W.nii.gz").exists() else None for k in ("study1", "study2")}
        prior, follow = img["study1"], img["study2"]
        m: dict = {"comparable": True}
        why = comparable(prior, follow)
        reg = register(prior, follow) if why is None else None
        if why is None and reg is not None and not reg.ok:
            why = reg.reason
        sp = follow.GetSpacing()[::-1]
        rf = seg.segment(follow, t1["study2"])
        if why is not None:
            m.update(comparable=False, reason=why)
            res[p.name] = m
            log.info("%s: no comparable prior: %s", p.name, why)
            continue
        assert reg is not None  # comparable pairs were registered above
        rp = seg.segment(prior, t1["study1"])
        ch = compare(rp.labels, prior, rf.labels, follow, reg.transform, rp.probability,
                     follow_probability=rf.probability)
        ref = change_on_flair(p, "study2", follow)
        pred = np.isin(ch.change_map, (NEW, ENLARGING, SHRINKING))
        m.update(_detection(pred, ref, sp))
        # as dicom_node calls it today (follow-up labels standing in for its probability map)
        ch_l = compare(rp.labels, prior, rf.labels, follow, reg.transform, rp.probability)
        m["labels_only_follow"] = _detection(np.isin(ch_l.change_map, (NEW, ENLARGING, SHRINKING)), ref, sp)
        new_ids = [j for j, s in ch.follow_status.items() if s == "new"]
        m["head_dice"] = reg.head_dice
        m["n_new"], m["n_enlarging"] = ch.n_new, ch.n_enlarging
        m["n_shrinking_or_vanished"] = sum(s != "stable" for s in ch.prior_status.values())
        m["false_new"] = int(sum(not (ref & (rf.labels == j)).any() for j in new_ids))
        if self_pairs:
            same = compare(rf.labels, follow, rf.labels, follow, sitk.Transform(3, sitk.sitkIdentity), rf.probability,
                           follow_probability=rf.probability)
            moved = moved_copy(follow)
            rm = seg.segment(moved, None)
            reg_m = register(moved, follow)
            moved_ch = compare(rm.labels, moved, rf.labels, follow, reg_m.transform, rm.probability,
                               follow_probability=rf.probability)
            m["self_pair_new"] = same.n_new
            m["moved_pair_new"] = moved_ch.n_new
            m["moved_pair_enlarging"] = moved_ch.n_enlarging
        res[p.name] = m
        if plots:
            _plot(Path(plots) / f"change_{p.name}.png", sitk.GetArrayFromImage(follow), ref, ch.change_map, p.name)
        log.info("%s: change F1 %.3f, %d new (%d false), %d enlarging", p.name, m["lesion_f1"], ch.n_new,
                 m["false_new"], ch.n_enlarging)
    done = [c for c in res if res[c]["comparable"]]
    pooled = {k: int(sum(res[c][k] for c in done)) for k in ("n_ref", "n_pred", "tp_ref", "tp_pred", "false_new")}
    s = pooled["tp_ref"] / pooled["n_ref"] if pooled["n_ref"] else 1.0
    q = pooled["tp_pred"] / pooled["n_pred"] if pooled["n_pred"] else 0.0
    overall = {"n_pairs": len(done), "pooled": pooled, "sensitivity": s, "ppv": q,
               "f1": 2 * s * q / (s + q) if s + q else 0.0,
               "mean_f1": float(np.mean([res[c]["lesion_f1"] for c in done])) if done else None}
    if self_pairs and done:
        overall["self_pair_new"] = int(sum(res[c]["self_pair_new"] for c in done))
        overall["moved_pair_new"] = int(sum(res[c]["moved_pair_new"] for c in done))
    return {"overall": overall, "pairs": res, "model_version": seg.model_version,
            "rules": {"enlarge_ratio": ENLARGE_RATIO, "enlarge_min_mm3": ENLARGE_MIN_MM3,
                      "new_min_inplane_mm": NEW_MIN_INPLANE_MM, "qc_min_head_dice": QC_MIN_HEAD_DICE,
                      "change_p_high": CHANGE_P_HIGH, "change_p_low": CHANGE_P_LOW,
                      "change_min_mm3": CHANGE_MIN_MM3, "change_min_contrast": CHANGE_MIN_CONTRAST,
                      "change_min_signal": CHANGE_MIN_SIGNAL}}


def _plot(path: Path, img: np.ndarray, ref: np.ndarray, cmap: np.ndarray, name: str) -> None:
    """Four follow-up slices with the most change: expert change (green), new (red), enlarging
    parts (orange), shrinking or vanished parts (blue)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    order = np.argsort((ref | (cmap > 0)).sum((1, 2)))[::-1][:4]
    fig, ax = plt.subplots(1, len(order), figsize=(4.2 * len(order), 4.6))
    for a, z in zip(np.atleast_1d(ax), sorted(order), strict=False):
        a.imshow(img[z], cmap="gray", vmax=np.percentile(img, 99.5))
        for mask, c in ((ref, "lime"), (cmap == NEW, "red"), (cmap == ENLARGING, "orange"),
                        (cmap == SHRINKING, "deepskyblue")):
            if mask[z].any():
                a.contour(mask[z].astype(float), [0.5], colors=c, linewidths=0.8)
        a.set_title(f"{name} slice {z}", fontsize=9)
        a.axis("off")
    fig.suptitle("green: expert change; red: new, orange: enlarging part, blue: shrinking/vanished part", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
