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

   **Subtraction channel** (:func:`subtraction_voxels`; ``compare(..., rule="subtraction")``,
   ``evaluate-change --rule subtraction``; measured, **not the default**: :data:`RULE` is
   ``"joint"``, see the end of this paragraph): for change the model segments at neither time
   point (most expert change regions). On the follow-up
   grid the follow-up FLAIR is carried to the prior's grid and back (linear both ways: blurred by
   the same resampling as the registered prior, so that interpolation alone makes no difference at
   sharp edges) and the prior is quantile-matched as above but not clamped beyond the end
   quantiles (the clamp makes every voxel of a study brighter than its 98th percentile, i.e. its
   lesions, look brightened against itself). Inside the matched region (deep in the head, the
   coverage eroded by one voxel) a voxel has grown where the difference is >= max(:data:`SUB_K`
   robust SDs of it there (1.4826 x median absolute deviation), :data:`SUB_MIN_CONTRAST`), the
   follow-up is >= :data:`SUB_MIN_SIGNAL` and its lesion probability >= :data:`SUB_P_MIN`; lost
   the other way round; pieces >= :data:`SUB_MIN_MM3`. The pieces join the change map (growth as
   enlarging part, loss as shrinking part) only where no lesion is (change map 0) and change no
   lesion status: the new and enlarging counts stay the joint rule's. Measured with the shipped
   weights 0aee82a3 on the two real pairs (selection rule written down before any setting was
   scored): joint rule alone patient01 2/12 expert change regions found, 2/3 predicted regions
   true (F1 0.267), patient12 8/41, 9/13 (0.304), pooled sensitivity 0.189, PPV 0.688, F1 0.296;
   with the channel patient01 3/12, 3/4 (0.375), patient12 9/41, 9/13 (0.333), pooled 12/53,
   12/17: sensitivity 0.226, PPV 0.706, F1 0.343 (in-sample: the best pooled of 72 settings,
   k 6/5/4/3, probability 0.2/0.1/0.05, pieces 40/20/10 mm3, signal 1.2/1.0, ties to the more
   conservative). Leave-one-pair-out (each pair scored with the setting best on the other):
   patient01 2/12, 2/3 (0.267), patient12 8/41, 8/12 (0.302), pooled held-out 10/53, 10/15:
   0.189 / 0.667 / 0.294 (the joint rule's own leave-one-pair-out figure, on the stage-8 maps:
   0.263). Both rules: 4 new lesions, none false; self-pairs 0 new lesions and 0 change regions;
   moved self-pairs 0 new lesions, 0 and 2 change regions (the channel adds none). Rejected on
   the self-pair checks before this one: the difference against the follow-up as it is (not
   carried back and forth) with the clamped match (false change regions on both self-pairs) and
   with the unclamped one (on the moved self-pairs, and on a moved phantom). The gain is 2 of 53
   regions; two pairs are far too few to call it general. Not made the default, for two reasons:
   held out (leave-one-pair-out, 0.294) it does no better than the joint rule does on weights its
   numbers were not chosen on (0.296 with 0aee82a3, 0.298 with 31c55493), so nothing shows a gain
   beyond these two pairs; and its pieces are change with no lesion behind them: the node's
   change SEG and overlay would show enlarging or shrinking voxels that no lesion of the SR
   accounts for (the new and enlarging counts, and "new disease activity", ignore them).
   With the shipped weights 915d981d (the channel's numbers not chosen on them): joint rule
   patient01 2/12, 2/3 (0.267), patient12 9/41, 12/16 (0.340), pooled 0.208 / 0.737 / 0.324;
   with the channel patient01 3/12, 3/4 (0.375), patient12 9/41, 9/13 (0.333), pooled 0.226 /
   0.706 / 0.343; 0 false new lesions either way; with the channel the moved patient12 copy has 3
   change regions (no new lesion).

   **Change net** (:func:`net_voxels`; ``compare(..., rule="net", change_net=...)``,
   ``evaluate-change --rule net``; measured, **not the default**): a 2D UNet that sees the
   follow-up and the matched prior (:mod:`ai.change_net`, trained on the synthetic pairs of
   :mod:`ai.change_synth`) gives growth and loss probabilities; its pieces (>= :data:`NET_P`,
   >= :data:`NET_INNER_MM` inside the head) join the joint rule's growth and loss in the lesion
   statuses and enter the change map where no lesion is. On the two real pairs, joint rule + net
   F1 0.361 / 0.370 (two trainings) against 0.363 for the joint rule, with false change regions on
   the moved self-pairs (``ai/weights/MODEL_CARD.md``, "Change net").

   **Halfway space** (``compare(..., space="halfway")``, ``evaluate-change --space halfway``):
   the voxel rule, signal confirmation included, runs between the two studies instead of on the
   follow-up grid. From the registration T (follow-up point -> prior point) comes its square root
   H (:func:`halfway_transform`: half the angle about the same axis, the translation solved so
   that H(H(x)) = T(x)); the grid (:func:`halfway_grid`) is the follow-up's own lattice (its
   direction, spacing and voxel phase) grown by whole voxels to hold the follow-up's field of view
   moved half way; the follow-up is resampled onto it through H^-1 and the prior through H (each
   once, linear for probabilities and FLAIR, nearest for coverage), and the growth and loss maps
   go back to the follow-up grid (nearest, through H), where matching and the change map stay.
   The follow-up's spacing, not an isotropic one: the 3 mm slices of the real pairs hold no
   through-plane detail to gain, 1 mm would coarsen their 0.72 mm in-plane voxels, and the rule's
   numbers were chosen at the follow-up's voxel size. Measured on the two real pairs with the
   stage-9 weights 31c55493 and the rule's numbers unchanged (not retuned): follow-up grid patient01 2/12
   expert change regions found, 2/3 predicted regions true (F1 0.267), patient12 8/41, 10/14
   (0.307), pooled sensitivity 0.189, PPV 0.706, F1 0.298; halfway patient01 2/12, 2/2 (0.286),
   patient12 7/41, 7/9 (0.280), pooled 0.170 / 0.818 / 0.281. Both: 4 new lesions, none false;
   self-pair and moved self-pair 0 new. The halfway space is worse pooled and on patient12, so the
   follow-up grid stays the default (:data:`SPACE`); a choice made on these two pairs only. (These
   are the joint rule's figures; with ``space="halfway"`` the subtraction channel still runs on
   the follow-up grid, a combination not measured.)
4. **Matching** (:func:`compare`): the prior's lesion labels are carried onto the follow-up grid
   (nearest neighbour). A follow-up lesion that touches no prior lesion is **new** when it spans
   >= :data:`NEW_MIN_INPLANE_MM` in-plane, lies wholly inside the prior's field of view, holds >=
   :data:`CHANGE_MIN_MM3` of grown voxels (the signal confirms it) and the prior's probability
   stayed < :data:`NEW_MAX_PRIOR_PROBABILITY` everywhere inside it and, on thick-slice grids (the
   coarsest spacing >= 1.5 x the finest), on the follow-up slices next to it (and it passes the
   node's minimum volume, as every lesion does). The slices next to it count because a small
   lesion of a 3-4 mm slice acquisition can sit on one slice: a repositioned head moves its
   partial volume between slices, and the registered prior's probability may peak one slice away.
   A rigidly moved copy of patient12's follow-up (its T1 moved with it) made such a one-slice
   lesion (22 mm3) "new" with the stage-11 weights: prior probability 0.18 inside, 0.41 on the
   next slice. When the model half-saw it in the
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
enlarging lesion, or a growth piece of the subtraction channel where no lesion is segmented), 3
stable lesion (and the rest of an enlarging one), 4 shrinking or vanished part (the lost voxels of a
shrinking or vanished prior lesion, or a loss piece of the subtraction channel).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ai.registration import (
    QC_MIN_HEAD_DICE,
    Registration,
    as_float_image,
    comparable,
    halfway_grid,
    halfway_transform,
    head_mask,
    moved_copy,
    orientation_class,
    register,
    resample,
)
from ai.types import ChangeReport, LesionChange

log = logging.getLogger(__name__)

#: the comparison's names; the alignment ones come from :mod:`ai.registration`, the scoring
#: (``evaluate-change``) lives in :mod:`ai.change_eval`
__all__ = ["CHANGE_MIN_CONTRAST", "CHANGE_MIN_MM3", "CHANGE_MIN_SIGNAL", "CHANGE_P_HIGH", "CHANGE_P_LOW",
           "ENLARGE_MIN_MM3", "ENLARGE_RATIO", "ENLARGING", "NET_INNER_MM", "NET_P", "NEW",
           "NEW_MAX_PRIOR_PROBABILITY", "NEW_MIN_INPLANE_MM", "QC_MIN_HEAD_DICE", "RULE", "RULES", "SHRINKING",
           "SPACE", "SPACES", "STABLE", "SUB_K", "SUB_MIN_CONTRAST", "SUB_MIN_MM3", "SUB_MIN_SIGNAL", "SUB_P_MIN",
           "THICK_SLICE_RATIO", "Change", "Registration", "as_float_image", "change_report", "change_voxels",
           "comparable", "compare", "deep_in_head", "halfway_grid", "halfway_transform", "head_mask",
           "intensity_change", "match_intensities", "moved_copy", "net_voxels", "orientation_class", "register",
           "resample", "subtraction_voxels"]

ENLARGE_RATIO = 1.5
ENLARGE_MIN_MM3 = 15.0
NEW_MIN_INPLANE_MM = 3.0
NEW_MAX_PRIOR_PROBABILITY = 0.2
#: thick-slice grids: coarsest spacing >= this x the finest (then "seen before" reaches one slice)
THICK_SLICE_RATIO = 1.5
CHANGE_P_HIGH = 0.3
CHANGE_P_LOW = 0.1
CHANGE_MIN_MM3 = 10.0
CHANGE_MIN_CONTRAST: float | None = 0.1
CHANGE_MIN_SIGNAL = 1.0
DEEP_MM = 20.0
SUB_K = 4.0
SUB_MIN_CONTRAST = 0.1
SUB_P_MIN = 0.1
SUB_MIN_SIGNAL = 1.2
SUB_MIN_MM3 = 10.0
NET_P = 0.5  #: the change net's growth / loss probability that counts (fixed before scoring)
NET_INNER_MM = 10.0  #: the change net looks this far (in-plane) inside the head and no nearer its surface
RULES = ("joint", "subtraction", "net")
RULE = "joint"  #: the voxel rule :func:`compare` uses by default (see the module docstring)
SPACES = ("follow", "halfway")
SPACE = "follow"  #: where :func:`compare` applies the voxel rule by default (see the module docstring)
NEW, ENLARGING, STABLE, SHRINKING = 1, 2, 3, 4


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
    #: the prior's lesion probability carried onto the follow-up grid (its labels when no
    #: probability was given), as the rules read it
    prior_probability: np.ndarray | None = None


def _frames(prior_img: sitk.Image, follow_img: sitk.Image, transform: sitk.Transform, space: str
            ) -> tuple[sitk.Image, sitk.Transform, sitk.Transform | None]:
    """(grid, prior -> grid transform, follow-up -> grid transform or None when the grid is the
    follow-up's own) of a comparison space, in sitk.Resample's convention."""
    if space == "follow":
        return follow_img, transform, None
    if space != "halfway":
        raise ValueError(f"unknown comparison space {space!r} (one of {SPACES})")
    h = halfway_transform(transform)
    return halfway_grid(follow_img, h), h, h.GetInverse()


def _in_space(arr: np.ndarray, src: sitk.Image, grid: sitk.Image, transform: sitk.Transform | None,
              interp) -> np.ndarray:
    return arr if transform is None else resample(arr, src, grid, transform, interp)


def intensity_change(prior_img: sitk.Image, follow_img: sitk.Image, transform: sitk.Transform,
                     prior_on_f: np.ndarray | None = None, *, space: str = "follow"
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """FLAIR signal change on the follow-up grid (``space="halfway"``: on :func:`halfway_grid`, both
    images resampled there once), in units of the follow-up's median brain signal:
    ``(follow, matched prior, follow - matched prior)``.

    The registered prior is mapped onto the follow-up's intensities by quantile matching (2nd to
    98th percentile, 25 points; the ratio of the medians when quantiles tie) over the voxels deep
    in the head (>= :data:`DEEP_MM` in-plane from its surface, mostly brain) that both studies
    cover, which removes scanner gain and contrast differences. None when there is no such region
    (e.g. blank images). ``prior_on_f``: the prior FLAIR already on the grid of ``space``."""
    sig = _signal(prior_img, follow_img, transform, prior_on_f, space)
    return None if sig is None else _joint_signal(sig)


def _joint_signal(sig: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(follow, matched prior, follow - matched prior)`` of :func:`_signal`'s result: the
    signal of :func:`intensity_change` and of the joint rule."""
    return sig[0], sig[1], sig[0] - sig[1]


def _cover(prior_img: sitk.Image, follow_img: sitk.Image, grid: sitk.Image, to_prior: sitk.Transform,
           to_follow: sitk.Transform | None) -> np.ndarray:
    """The voxels of ``grid`` that both studies cover (nearest-neighbour resampled field of view)."""
    cover = resample(np.ones(prior_img.GetSize()[::-1], np.uint8), prior_img, grid, to_prior,
                     sitk.sitkNearestNeighbor) > 0
    if to_follow is not None:
        cover &= resample(np.ones(follow_img.GetSize()[::-1], np.uint8), follow_img, grid, to_follow,
                          sitk.sitkNearestNeighbor) > 0
    return cover


def _signal(prior_img: sitk.Image, follow_img: sitk.Image, transform: sitk.Transform,
            prior_on_f: np.ndarray | None, space: str, *,
            frames: tuple[sitk.Image, sitk.Transform, sitk.Transform | None] | None = None,
            cover: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(follow, matched prior, matched prior not clamped beyond the end quantiles, region): the
    signals of :func:`intensity_change` and of :func:`subtraction_voxels` and the region the
    intensities were matched on (deep in the head, covered by both studies). ``frames`` and
    ``cover``: :func:`_frames` and :func:`_cover` of ``space`` when the caller has them already."""
    grid, to_prior, to_follow = frames or _frames(prior_img, follow_img, transform, space)
    fa = _in_space(sitk.GetArrayFromImage(follow_img).astype(np.float32), follow_img, grid, to_follow,
                   sitk.sitkLinear)
    pa = prior_on_f if prior_on_f is not None else resample(
        sitk.GetArrayFromImage(prior_img).astype(np.float32), prior_img, grid, to_prior, sitk.sitkLinear)
    if cover is None:
        cover = _cover(prior_img, follow_img, grid, to_prior, to_follow)
    head = head_mask(follow_img) if to_follow is None else head_mask(as_float_image(fa, grid))
    region = deep_in_head(head, (grid.GetSpacing()[1], grid.GetSpacing()[0])) & cover
    m = match_intensities(fa, pa, region)
    return None if m is None else (*m, region)


def deep_in_head(head: np.ndarray, spacing_yx, mm: float = DEEP_MM) -> np.ndarray:
    """The voxels of ``head`` (z, y, x) >= ``mm`` in-plane from its surface (mostly brain)."""
    deep = np.zeros_like(head)
    for z in np.nonzero(head.any((1, 2)))[0]:
        deep[z] = ndi.distance_transform_edt(head[z], sampling=tuple(spacing_yx)) >= mm
    return deep


def match_intensities(fa: np.ndarray, pa: np.ndarray, region: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(follow, matched prior, matched prior not clamped beyond the end quantiles)`` in units of
    the follow-up's median over ``region``: the prior ``pa`` (on the follow-up grid) mapped onto
    the follow-up ``fa``'s intensities by quantile matching over ``region`` (2nd to 98th
    percentile, 25 points; the ratio of the medians when quantiles tie). None when ``region`` is
    too small (< 1000 voxels) or dark."""
    if region.sum() < 1000:
        return None
    qs = np.linspace(2.0, 98.0, 25)
    qf, qp = np.percentile(fa[region], qs), np.percentile(pa[region], qs)
    scale = float(np.median(fa[region]))
    if scale <= 0 or qp[12] <= 0:
        return None
    # flat histograms (phantoms) have tied quantiles: then the medians' ratio alone
    if np.all(np.diff(qp) > 0):
        pm = np.interp(pa, qp, qf)  # clamped beyond the end quantiles (the joint rule's signal)
        # beyond the end quantiles by their ratio instead (the subtraction channel's): the clamp
        # makes every voxel brighter than the 98th percentile (lesions) look brightened against
        # an identical prior
        pm_free = np.where(pa > qp[-1], pa * (qf[-1] / qp[-1]), pm)
        if qp[0] > 0:
            pm_free = np.where(pa < qp[0], pa * (qf[0] / qp[0]), pm_free)
    else:
        pm = pm_free = pa * (scale / float(qp[12]))
    fn = fa / scale
    return fn, (pm / scale).astype(np.float32), (pm_free / scale).astype(np.float32)


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


def net_voxels(change_net, signal: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], cover: np.ndarray,
               follow_img: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The change net's (growth, loss) maps on the follow-up grid (:mod:`ai.change_net`).

    The net sees the follow-up and the registered prior quantile-matched to it (not clamped, as
    in its training pairs); a voxel has grown (lost) where its growth (loss) probability is >=
    :data:`NET_P`, >= :data:`NET_INNER_MM` in-plane inside the head and inside the coverage of
    both studies eroded by a voxel; each map keeps its pieces of >= :data:`CHANGE_MIN_MM3` (and 3
    voxels), a voxel in both is growth."""
    from ai.lesions import components

    sp = follow_img.GetSpacing()[::-1]
    pg, pl = change_net.probability(signal[0], signal[2], sp)
    ok = deep_in_head(head_mask(follow_img), sp[1:], NET_INNER_MM) & ndi.binary_erosion(cover, np.ones((3, 3, 3), bool))
    grow = components((pg >= NET_P) & ok, sp, 3, CHANGE_MIN_MM3)[0] > 0
    loss = components((pl >= NET_P) & ok & ~grow, sp, 3, CHANGE_MIN_MM3)[0] > 0
    return grow, loss


def _blur_matched(fn: np.ndarray, prior_img: sitk.Image, follow_img: sitk.Image, transform: sitk.Transform
                  ) -> np.ndarray:
    """The follow-up signal carried to the prior's grid and back (linear both ways): blurred by
    the same resampling as the registered prior, so that interpolation alone makes no
    difference at sharp edges (a rigidly moved copy of a study against the study gives none)."""
    on_prior = resample(fn.astype(np.float32, copy=False), follow_img, prior_img, transform.GetInverse(),
                        sitk.sitkLinear)
    return resample(on_prior, prior_img, follow_img, transform, sitk.sitkLinear)


def subtraction_voxels(prior_p: np.ndarray, follow_p: np.ndarray, signal: tuple[np.ndarray, np.ndarray, np.ndarray],
                       region: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray]:
    """The subtraction channel on the follow-up grid: (growth, loss) boolean maps.

    Parameters
    ----------
    prior_p, follow_p : ndarray
        Lesion probabilities of the registered prior and of the follow-up on the follow-up grid.
    signal : tuple of ndarray
        ``(follow, matched prior, difference)`` of :func:`intensity_change`.
    region : ndarray
        Where the intensities were matched (deep in the head, covered by both studies); the
        channel looks only there.
    spacing_zyx : sequence of float
        Voxel size (mm).

    Returns
    -------
    (growth, loss) : tuple of ndarray
        Growth: FLAIR brighter by >= max(:data:`SUB_K` robust SDs of the difference over
        ``region`` (1.4826 x its median absolute deviation), :data:`SUB_MIN_CONTRAST`), the
        follow-up >= :data:`SUB_MIN_SIGNAL` (lesion-bright) and its lesion probability >=
        :data:`SUB_P_MIN`; loss the same with the studies swapped. Each keeps its 26-connected
        pieces of >= :data:`SUB_MIN_MM3` (and 3 voxels).
    """
    from ai.lesions import components

    fn, pm, d = signal
    if not region.any():
        empty = np.zeros(d.shape, bool)
        return empty, empty.copy()
    dr = d[region]
    sd = 1.4826 * float(np.median(np.abs(dr - np.median(dr))))
    thr = max(SUB_K * sd, SUB_MIN_CONTRAST)
    grow = region & (d >= thr) & (fn >= SUB_MIN_SIGNAL) & (follow_p >= SUB_P_MIN)
    loss = region & (d <= -thr) & (pm >= SUB_MIN_SIGNAL) & (prior_p >= SUB_P_MIN)
    return (components(grow, spacing_zyx, 3, SUB_MIN_MM3)[0] > 0,
            components(loss, spacing_zyx, 3, SUB_MIN_MM3)[0] > 0)


def _halfway_change(prior_labels: np.ndarray, prior_img: sitk.Image, follow_labels: np.ndarray,
                    follow_img: sitk.Image, transform: sitk.Transform, prior_probability: np.ndarray | None,
                    follow_probability: np.ndarray | None, use_signal: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`change_voxels` in halfway space, its (growth, loss) maps on the follow-up grid."""
    grid, to_prior, to_follow = _frames(prior_img, follow_img, transform, "halfway")
    assert to_follow is not None

    def prob(p, labels, img, tx):
        if p is not None:
            return resample(p.astype(np.float32), img, grid, tx, sitk.sitkLinear)
        return resample((labels > 0).astype(np.uint8), img, grid, tx, sitk.sitkNearestNeighbor).astype(np.float32)

    prior_p = prob(prior_probability, prior_labels, prior_img, to_prior)
    follow_p = prob(follow_probability, follow_labels, follow_img, to_follow)
    cover = _cover(prior_img, follow_img, grid, to_prior, to_follow)
    sig = _signal(prior_img, follow_img, transform, None, "halfway", frames=(grid, to_prior, to_follow),
                  cover=cover) if use_signal else None
    signal = None if sig is None else _joint_signal(sig)
    grow, loss = change_voxels(prior_p, follow_p, grid.GetSpacing()[::-1], cover, signal)
    # a follow-up point x lies at H(x) in halfway space: H (= to_prior) carries the maps back
    back = [resample(m.astype(np.uint8), grid, follow_img, to_prior, sitk.sitkNearestNeighbor) > 0
            for m in (grow, loss)]
    return back[0], back[1]


def _through_plane_max(p: np.ndarray, spacing_zyx) -> np.ndarray:
    """``p`` with each voxel raised to the largest value of its two neighbours along the coarsest
    axis, on thick-slice grids (coarsest spacing >= :data:`THICK_SLICE_RATIO` x the finest); ``p``
    itself otherwise."""
    sp = np.asarray(spacing_zyx, float)
    if sp.max() < THICK_SLICE_RATIO * sp.min():
        return p
    return ndi.maximum_filter1d(p, size=3, axis=int(np.argmax(sp)), mode="nearest")


def compare(prior_labels: np.ndarray, prior_img: sitk.Image, follow_labels: np.ndarray, follow_img: sitk.Image,
            transform: sitk.Transform, prior_probability: np.ndarray | None = None, *,
            follow_probability: np.ndarray | None = None, use_signal: bool = True,
            space: str | None = None, rule: str | None = None, change_net=None) -> Change:
    """Match the lesions of two labelled studies (labels and probabilities on each study's own grid).

    Without ``prior_probability`` / ``follow_probability`` the lesion labels stand in for them
    (probability 1 inside a lesion, 0 outside). ``use_signal``: confirm the voxel change by the
    FLAIR signal change (:func:`intensity_change`); skipped when the images give no brain region.
    ``space``: where the voxel rule runs, ``"follow"`` (the follow-up's grid, the prior carried
    onto it) or ``"halfway"`` (both studies resampled half way, :func:`halfway_grid`, the growth
    and loss maps carried back onto the follow-up grid); default :data:`SPACE`. Lesion matching
    and the change map are on the follow-up grid either way. ``rule``: ``"joint"`` (the joint
    voxel rule alone) or ``"subtraction"`` (the joint rule and, on the follow-up grid, the
    subtraction channel :func:`subtraction_voxels` for change where no lesion is segmented; needs
    ``use_signal``); ``"net"`` (the joint rule and the change net ``change_net``, an
    :class:`ai.change_net.ChangeNet`, on the follow-up grid: its growth and loss pieces
    (:func:`net_voxels`) join the joint rule's in the lesion statuses, and enter the change map
    where no lesion is; needs ``use_signal``); default :data:`RULE`. See the module docstring for
    the rules."""
    space = space or SPACE
    rule = rule or RULE
    if space not in SPACES:
        raise ValueError(f"unknown comparison space {space!r} (one of {SPACES})")
    if rule not in RULES:
        raise ValueError(f"unknown change rule {rule!r} (one of {RULES})")
    if rule == "net" and change_net is None:
        raise ValueError("the change rule 'net' needs change_net")
    pv = float(np.prod(prior_img.GetSpacing()))
    fv = float(np.prod(follow_img.GetSpacing()))
    sp_zyx = follow_img.GetSpacing()[::-1]
    prior_on_f = resample(prior_labels.astype(np.uint32), prior_img, follow_img, transform,
                           sitk.sitkNearestNeighbor).astype(np.int64)
    cover = _cover(prior_img, follow_img, follow_img, transform, None)
    if prior_probability is not None:
        prior_p = resample(prior_probability.astype(np.float32), prior_img, follow_img, transform, sitk.sitkLinear)
    else:
        prior_p = (prior_on_f > 0).astype(np.float32)
    follow_p = (follow_probability.astype(np.float32, copy=False) if follow_probability is not None
                else (follow_labels > 0).astype(np.float32))
    sig = _signal(prior_img, follow_img, transform, None, "follow", frames=(follow_img, transform, None),
                  cover=cover) if use_signal and (space == "follow" or rule != "joint") else None
    if space == "follow":
        grow, loss = change_voxels(prior_p, follow_p, sp_zyx, cover, None if sig is None else _joint_signal(sig))
    else:
        grow, loss = _halfway_change(prior_labels, prior_img, follow_labels, follow_img, transform,
                                     prior_probability, follow_probability, use_signal)
    n_grow = n_loss = None
    if rule == "net" and sig is not None:
        n_grow, n_loss = net_voxels(change_net, sig, cover, follow_img)
        grow, loss = grow | n_grow, loss | n_loss
    prior_vol = np.bincount(prior_labels.ravel().astype(np.int64)) * pv
    follow_vol = np.bincount(follow_labels.ravel().astype(np.int64)) * fv
    sy, sx = follow_img.GetSpacing()[1], follow_img.GetSpacing()[0]
    prior_seen = _through_plane_max(prior_p, sp_zyx)
    out = Change(np.zeros(follow_labels.shape, np.uint8), prior_probability=prior_p)
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
            seen_before = float(prior_seen[bb][m].max()) >= NEW_MAX_PRIOR_PROBABILITY
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
    if rule == "subtraction" and sig is not None:
        # change the model did not segment: only where no lesion is (statuses stay as they are)
        fn_rt, pm = _blur_matched(sig[0], prior_img, follow_img, transform), sig[2]
        inner = ndi.binary_erosion(cover, np.ones((3, 3, 3), bool))
        _mark_where_no_lesion(out.change_map, *subtraction_voxels(prior_p, follow_p, (fn_rt, pm, fn_rt - pm),
                                                                  sig[3] & inner, sp_zyx))
    if n_grow is not None and n_loss is not None:
        # the net's change where no lesion is segmented at either time point
        _mark_where_no_lesion(out.change_map, n_grow, n_loss)
    out.continued_by = touched_prior
    out.n_new = sum(s == "new" for s in out.follow_status.values())
    out.n_enlarging = sum(s == "enlarging" for s in out.follow_status.values())
    out.activity = bool(out.n_new or out.n_enlarging)
    return out


def _mark_where_no_lesion(change_map: np.ndarray, grow: np.ndarray, loss: np.ndarray) -> None:
    """Growth as enlarging part, loss as shrinking part, only where the change map is still 0 (no
    lesion at either time point); a voxel in both is growth."""
    free = change_map == 0
    change_map[grow & free] = ENLARGING
    change_map[loss & free & ~grow] = SHRINKING


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
