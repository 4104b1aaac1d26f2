"""Synthetic prior / follow-up pairs with known lesion change, to train a change detector that sees
both time points (image maths only: numpy/scipy, no DICOM; the head mask is the node's own,
:func:`ai.infer.fill_holes_per_slice` of :func:`ai.preprocess.foreground_mask`).

There are two labelled real pairs in ``../shared/data/ms/longitudinal``, and they are the only
check of the change comparison, so they cannot be trained on. A pair is made here from one real
brain instead:

* **Lesions that change.** Each lesion of a pair is present at the prior, the follow-up or both;
  an *enlarging* lesion is its mask eroded by a voxel at the prior and whole at the follow-up, a
  *shrinking* one the other way round. On patient19's brain with its own lesions painted out
  (:func:`ai.realsynth.inpaint`) the lesions are the real masks of ``lesion_masks_mni/`` at their
  own places: one mask gives the lesions both studies share, pieces of another are new. On a raw
  clinical brain (thick slices, skull) the real labelled lesions stay (stable) except those painted
  out at one time point (new or vanished, with their real texture); more lesions come from a bank
  of real lesion shapes (:func:`lesion_bank`), averaged over the slice thickness (partial volume)
  and placed on white-matter-like signal deep in the head. A lesion's FLAIR gain is drawn once
  and jittered by a few percent between the studies (lesion signal varies between scans).
* **What differs without any change.** The prior is acquired on its own slices: rigidly moved (up to
  :data:`MAX_DEG` degrees, :data:`MAX_MM` mm), cut into its own thick slices (another slice
  phase), and carried back onto the follow-up's grid by linear interpolation, as the node's
  registration does; each study gets its own smooth bias field, noise and (the prior) a monotone
  contrast change, and the prior is then quantile-matched to the follow-up exactly as
  :func:`ai.change.match_intensities` does in the node.
* **Targets** on the follow-up's grid: *grown* where lesion voxels exist at the follow-up but not
  at the prior, *lost* the other way round (a thick voxel counts when half of it is such a
  voxel); the expert change masks of the real pairs mark both directions too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ai.change import deep_in_head, match_intensities

__all__ = ["MAX_DEG", "MAX_MM", "NET1", "NET2", "Options", "Pair", "lesion_bank", "load_mni_masks",
           "pair_from_clinical", "pair_from_masks", "resample_rigid", "synthetic_pairs", "thick", "unlabelled_bases"]

MAX_DEG = 2.0  #: largest rotation between the two acquisitions (after registration: residual + slice plan)
MAX_MM = 2.0  #: largest shift
GAIN = (1.12, 1.6)  #: lesion FLAIR gain over the tissue it replaces (realsynth's range widened)
GAIN_JITTER = 0.04  #: relative SD of a lesion's gain between the two studies
BANK_MM3 = (10.0, 3000.0)  #: lesion sizes the bank keeps
FADE = (0.25, 0.6)  #: a brightening (fading) lesion's gain at the fainter time point, x its gain


@dataclass(frozen=True)
class Options:
    """What the synthesis varies (:data:`NET1`: the first change net's; :data:`NET2`: the second's)."""

    gain: tuple[float, float] = GAIN  #: FLAIR gain of a lesion over the tissue it replaces
    #: also lesions at both time points whose signal rises (growth) or falls (loss): gain x
    #: :data:`FADE` at the fainter time point
    intensity_changes: bool = False
    #: pairs on the 1 mm brain: half of the priors get slices 1 mm thicker than the follow-up's
    thickness_jitter: bool = False


NET1 = Options()
NET2 = Options(gain=(1.05, 1.6), intensity_changes=True, thickness_jitter=True)


@dataclass
class Pair:
    """A synthetic pair on the follow-up's grid (z, y, x), as the change detector sees real ones."""

    name: str
    follow: np.ndarray  #: follow-up FLAIR / its median over ``region`` (float16)
    prior: np.ndarray  #: registered prior, quantile-matched to the follow-up, same units (float16)
    grown: np.ndarray  #: bool: lesion at the follow-up, none at the prior
    lost: np.ndarray  #: bool: the other way round
    region: np.ndarray  #: bool: deep in the head and covered by both studies
    spacing: tuple[float, float, float]


def rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random rotation matrix (z, y, x axes) of up to ``max_deg`` degrees about each axis."""
    a = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    cz, sz, cy, sy, cx, sx = np.cos(a[0]), np.sin(a[0]), np.cos(a[1]), np.sin(a[1]), np.cos(a[2]), np.sin(a[2])
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])  # about z: mixes y and x
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
    return rz @ ry @ rx


def resample_rigid(arr: np.ndarray, spacing_in, z0_in: float, a: np.ndarray, b: np.ndarray, centre: np.ndarray,
                   out_shape, spacing_out, z0_out: float, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``arr`` sampled at ``u = a (x - centre) + centre + b`` for every output voxel centre ``x``
    (physical (z, y, x) mm; voxel ``i`` of a grid lies at ``(z0 + i_z s_z, i_y s_y, i_x s_x)``).
    Returns the values (0 outside) and the covered voxels."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in out_shape], indexing="ij")
    x = [z0_out + grids[0] * spacing_out[0], grids[1] * spacing_out[1], grids[2] * spacing_out[2]]
    del grids
    u = [sum(a[r, c] * (x[c] - centre[c]) for c in range(3)) + centre[r] + b[r] for r in range(3)]
    del x
    idx = [(u[0] - z0_in) / spacing_in[0], u[1] / spacing_in[1], u[2] / spacing_in[2]]
    del u
    inside = np.ones(out_shape, bool)
    for k in range(3):
        inside &= (idx[k] >= -0.5) & (idx[k] <= arr.shape[k] - 0.5)
    out = ndi.map_coordinates(arr.astype(np.float32, copy=False), idx, order=order, mode="nearest")
    return np.where(inside, out, 0).astype(np.float32), inside


def thick(arr: np.ndarray, s: int, phase: int = 0) -> np.ndarray:
    """Average ``s`` 1 mm slices along z from ``phase`` on (a thick 2D acquisition):
    :func:`ai.synth.thick_slices` from another slice position, as float32."""
    from ai.synth import thick_slices

    return thick_slices(arr[phase:], s).astype(np.float32, copy=False)


def _bias(rng: np.random.Generator, shape, amount: float) -> np.ndarray:
    """A smooth multiplicative field of mean 1 and spread ``amount``."""
    small = rng.normal(0, 1, (3, 4, 4))
    f = ndi.zoom(small, [n / m for n, m in zip(shape, small.shape, strict=True)], order=3, mode="nearest")
    f = f[: shape[0], : shape[1], : shape[2]]
    f = f / (np.abs(f).max() + 1e-6)
    return (1.0 + amount * f).astype(np.float32)


def _acquire(img: np.ndarray, rng: np.random.Generator, gamma: bool) -> np.ndarray:
    """Per-study bias field, noise and (``gamma``) a monotone contrast change."""
    out = img * _bias(rng, img.shape, rng.uniform(0.03, 0.12))
    if gamma:
        out = np.power(np.maximum(out, 0), rng.uniform(0.85, 1.15)) * rng.uniform(0.7, 1.3)
    sd = rng.uniform(0.01, 0.035) * float(np.percentile(out, 90))
    return np.abs(out + rng.normal(0, sd, out.shape)).astype(np.float32)


def _finish(name: str, follow: np.ndarray, prior_on_f: np.ndarray, cover: np.ndarray, grown: np.ndarray,
            lost: np.ndarray, spacing) -> Pair | None:
    from ai.infer import fill_holes_per_slice
    from ai.preprocess import foreground_mask

    head = fill_holes_per_slice(foreground_mask(follow))
    region = deep_in_head(head, spacing[1:]) & cover
    m = match_intensities(follow, prior_on_f, region)
    if m is None:
        return None
    fn, _, pm_free = m
    return Pair(name, np.clip(fn, 0, 8).astype(np.float16), np.clip(pm_free, 0, 8).astype(np.float16),
                grown & cover, lost & cover, region, (float(spacing[0]), float(spacing[1]), float(spacing[2])))


def _states(n: int, rng: np.random.Generator, p_change: float, intensity: bool = False) -> np.ndarray:
    """Per lesion: 0 stable, 1 vanished (prior only), 2 new (follow-up only), 3 enlarging, 4 shrinking;
    with ``intensity`` also 5 brightening, 6 fading (at both time points)."""
    s = np.zeros(n + 1, np.int8)
    r = rng.random(n)
    s[1:][r < p_change] = rng.integers(1, 7 if intensity else 5, int((r < p_change).sum()))
    return s


def _two_times(lab: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prior, follow-up) lesion ids from one labelling and the per-lesion states."""
    st = states[lab]
    core = ndi.binary_erosion(lab > 0, np.ones((3, 3, 3), bool)) & (lab > 0)
    # an enlarging / shrinking lesion needs a core; without one it is new / vanished
    prior = np.where((st == 2) | ((st == 3) & ~core), 0, lab)
    follow = np.where((st == 1) | ((st == 4) & ~core), 0, lab)
    return prior, follow


def pair_from_masks(f0: np.ndarray, tissue: np.ndarray, shared_mask: np.ndarray, new_mask: np.ndarray,
                    rng: np.random.Generator, s: int, name: str, opts: Options = NET1) -> Pair | None:
    """A pair on a 1 mm lesion-free brain ``f0`` (patient19 painted out): the lesions of
    ``shared_mask`` at both time points (some vanishing, new, enlarging or shrinking), some pieces
    of ``new_mask`` new at the follow-up; both studies cut into ``s`` mm slices, the prior moved."""
    lab, n = ndi.label(shared_mask & tissue, np.ones((3, 3, 3), bool))
    states = _states(n, rng, rng.uniform(0.05, 0.3), opts.intensity_changes)
    nl, nn_ = ndi.label(new_mask & tissue & ~ndi.binary_dilation(lab > 0, iterations=3), np.ones((3, 3, 3), bool))
    if nn_:
        keep = rng.random(nn_) < rng.uniform(0.0, 0.3)
        nl = np.where(keep[np.maximum(nl, 1) - 1] & (nl > 0), nl + n, 0)
        lab = np.where(nl > 0, nl, lab)
        states = np.concatenate([states, np.full(nn_, 2, np.int8)])
        n += nn_
    lp, lf = _two_times(lab, states)
    gain = np.concatenate([[0.0], rng.uniform(opts.gain[0], opts.gain[1], n) - 1.0]).astype(np.float32)
    gain_p = gain * (1 + rng.normal(0, GAIN_JITTER, n + 1)).astype(np.float32)
    if opts.intensity_changes:
        fade = rng.uniform(FADE[0], FADE[1], n + 1).astype(np.float32)
        gain_p = np.where(states == 5, gain_p * fade, gain_p)
        gain = np.where(states == 6, gain * fade, gain)
    soft_f = ndi.gaussian_filter(gain[lf], 0.6) * tissue
    soft_p = ndi.gaussian_filter(gain_p[lp], 0.6) * tissue
    follow_iso = f0 * (1 + soft_f)
    prior_iso = f0 * (1 + soft_p)
    grown_iso = (((lf > 0) & (lp == 0)) | (states[lab] == 5)).astype(np.float32)
    lost_iso = (((lp > 0) & (lf == 0)) | (states[lab] == 6)).astype(np.float32)
    follow = _acquire(thick(follow_iso, s), rng, gamma=False)
    grown, lost = thick(grown_iso, s) >= 0.5, thick(lost_iso, s) >= 0.5
    # the prior: the head moved, cut on its own slices, carried back onto the follow-up's slices
    a, b = rotation(rng, MAX_DEG), rng.uniform(-MAX_MM, MAX_MM, 3)
    c = np.array(f0.shape, float) / 2
    moved, _ = resample_rigid(prior_iso, (1, 1, 1), 0.0, a, b, c, f0.shape, (1, 1, 1), 0.0)
    sp_ = s + 1 if opts.thickness_jitter and rng.random() < 0.5 else s
    ph = int(rng.integers(0, sp_)) if sp_ > 1 else 0
    prior_t = _acquire(thick(moved, sp_, ph), rng, gamma=True)
    # follow-up point x lies at u = a^T (x - c - b) + c in the moved frame
    at = a.T
    prior_on_f, cover = resample_rigid(prior_t, (sp_, 1, 1), ph + (sp_ - 1) / 2, at, -at @ b, c, follow.shape,
                                       (s, 1, 1), (s - 1) / 2)
    return _finish(name, follow, prior_on_f, cover, grown, lost, (float(s), 1.0, 1.0))


def lesion_bank(masks: list[np.ndarray], min_mm3: float = BANK_MM3[0], max_mm3: float = BANK_MM3[1]
                ) -> list[np.ndarray]:
    """The 26-connected lesions of 1 mm masks, each cropped to its box, of ``min_mm3``-``max_mm3``."""
    out = []
    for m in masks:
        lab, n = ndi.label(m, np.ones((3, 3, 3), bool))
        for k, bb in enumerate(ndi.find_objects(lab), start=1):
            if bb is None:
                continue
            c = lab[bb] == k
            if min_mm3 <= c.sum() <= max_mm3:
                out.append(c)
    return out


def _inpaint_slices(img: np.ndarray, hole: np.ndarray, support: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from ai.realsynth import inpaint

    out = img.copy()
    for z in np.nonzero(hole.any((1, 2)))[0]:
        out[z] = inpaint(img[z], hole[z], support[z], sigma=3.0, rng=rng, noise_sd=0.03)
    return out


def pair_from_clinical(flair: np.ndarray, lesion: np.ndarray | None, bank: list[np.ndarray],
                       rng: np.random.Generator, slice_mm: float, name: str, opts: Options = NET1) -> Pair | None:
    """A pair from one raw thick-slice study on a 1 mm in-plane grid (``slice_mm`` slices):
    labelled lesions (``lesion``, may be None) stable or painted out at one time point; lesions
    of ``bank`` (1 mm crops) averaged over the slice and placed new, vanished, enlarging or
    shrinking on white-matter-like signal deep in the head; the prior moved and carried back."""
    from ai.infer import fill_holes_per_slice
    from ai.preprocess import foreground_mask

    f = flair.astype(np.float32)
    head = fill_holes_per_slice(foreground_mask(f))
    deep = deep_in_head(head, (1.0, 1.0))
    if deep.sum() < 5000:
        return None
    med = float(np.median(f[deep]))
    les = lesion > 0 if lesion is not None else np.zeros(f.shape, bool)
    # painted-out real lesions: their excess signal over the inpainted tissue comes and goes
    lab_r, nr = ndi.label(les, np.ones((3, 3, 3), bool))
    st_r = _states(nr, rng, rng.uniform(0.05, 0.3), opts.intensity_changes)
    st_r[(st_r == 3) | (st_r == 4)] = 0  # a real lesion's own rim is not drawn: new or vanished only
    moving = st_r[lab_r] > 0
    base = f
    excess_f = np.zeros_like(f)
    excess_p = np.zeros_like(f)
    if moving.any():
        hole = ndi.binary_dilation(moving, iterations=1) & head
        support = head & ~ndi.binary_dilation(les, iterations=1) & (f > 0.6 * med)
        base = _inpaint_slices(f, hole, support, rng)
        ex = (f - base) * hole
        # each hole voxel (the lesion dilated by one) takes the state of the nearest lesion voxel:
        # a vanished lesion's signal is there only at the prior, a new one's only at the follow-up
        near = ndi.distance_transform_edt(lab_r == 0, return_distances=False, return_indices=True)
        st_near = st_r[lab_r[tuple(near)]]
        excess_f = np.where(hole & (st_near == 1), 0, ex)
        excess_p = np.where(hole & (st_near == 2), 0, ex)
        if opts.intensity_changes:  # brightening (fading): fainter at the prior (follow-up)
            fade = float(rng.uniform(FADE[0], FADE[1]))
            excess_p = np.where(hole & (st_near == 5), fade * ex, excess_p)
            excess_f = np.where(hole & (st_near == 6), fade * ex, excess_f)
    grown = np.isin(st_r[lab_r], (2, 5)).astype(np.float32)
    lost = np.isin(st_r[lab_r], (1, 6)).astype(np.float32)
    # placed bank lesions, averaged over the slice thickness
    lo, hi = np.percentile(f[deep & ~les], [25, 80])
    cand = deep & ~ndi.binary_dilation(les, iterations=3) & (f >= lo) & (f <= hi)
    cz, cy, cx = np.nonzero(cand)
    soft_f = np.zeros_like(f)
    soft_p = np.zeros_like(f)
    s_int = max(1, int(round(slice_mm)))
    if len(cz) and bank:
        for _ in range(int(rng.integers(1, 9))):
            m = bank[int(rng.integers(len(bank)))]
            if rng.random() < 0.5:
                m = m[:, :, ::-1]
            if rng.random() < 0.5:
                m = m.transpose(0, 2, 1)
            state = int(rng.integers(1, 7 if opts.intensity_changes else 5))
            core = ndi.binary_erosion(m, np.ones((3, 3, 3), bool))
            mp = m if state in (1, 4, 5, 6) else (core if state == 3 else np.zeros_like(m))
            mf = m if state in (2, 3, 5, 6) else (core if state == 4 else np.zeros_like(m))
            ph = int(rng.integers(0, s_int))
            op, of = thick(np.pad(mp, ((ph, s_int), (0, 0), (0, 0))).astype(np.float32), s_int), \
                thick(np.pad(mf, ((ph, s_int), (0, 0), (0, 0))).astype(np.float32), s_int)
            op, of = ndi.gaussian_filter(op, (0, 0.6, 0.6)), ndi.gaussian_filter(of, (0, 0.6, 0.6))
            k = int(rng.integers(len(cz)))
            z0 = int(cz[k]) - op.shape[0] // 2
            y0, x0 = int(cy[k]) - op.shape[1] // 2, int(cx[k]) - op.shape[2] // 2
            if z0 < 0 or y0 < 0 or x0 < 0 or z0 + op.shape[0] > f.shape[0] or y0 + op.shape[1] > f.shape[1] \
                    or x0 + op.shape[2] > f.shape[2]:
                continue
            sl = (slice(z0, z0 + op.shape[0]), slice(y0, y0 + op.shape[1]), slice(x0, x0 + op.shape[2]))
            ok = head[sl] & ~les[sl]
            g = rng.uniform(opts.gain[0], opts.gain[1]) - 1.0
            g_p = g * (1 + rng.normal(0, GAIN_JITTER))
            g_f = g
            if state in (5, 6):
                fade = rng.uniform(FADE[0], FADE[1])
                g_p, g_f = (g_p * fade, g_f) if state == 5 else (g_p, g_f * fade)
            soft_f[sl] = np.maximum(soft_f[sl], g_f * of * ok)
            soft_p[sl] = np.maximum(soft_p[sl], g_p * op * ok)
            if state == 5:
                grown[sl] = np.maximum(grown[sl], (of >= 0.5) & ok)
            elif state == 6:
                lost[sl] = np.maximum(lost[sl], (op >= 0.5) & ok)
            else:
                grown[sl] = np.maximum(grown[sl], ((of - op) >= 0.5) & ok)
                lost[sl] = np.maximum(lost[sl], ((op - of) >= 0.5) & ok)
    follow_img = _acquire((base + excess_f) * (1 + soft_f), rng, gamma=False)
    prior_img = _acquire((base + excess_p) * (1 + soft_p), rng, gamma=True)
    # the prior moved on the thick grid and carried back (two linear resamplings, as registration)
    sp = (float(slice_mm), 1.0, 1.0)
    a, b = rotation(rng, MAX_DEG), rng.uniform(-MAX_MM, MAX_MM, 3)
    c = np.array(f.shape, float) * np.array(sp) / 2
    moved, cov1 = resample_rigid(prior_img, sp, 0.0, a, b, c, f.shape, sp, 0.0)
    at = a.T
    prior_on_f, cov2 = resample_rigid(moved, sp, 0.0, at, -at @ b, c, f.shape, sp, 0.0)
    cover2 = resample_rigid(cov1.astype(np.float32), sp, 0.0, at, -at @ b, c, f.shape, sp, 0.0)[0] > 0.5
    return _finish(name, follow_img, prior_on_f, cov2 & cover2, grown > 0.5, lost > 0.5, sp)


def load_mni_masks() -> list[np.ndarray]:
    """The masks of ``lesion_masks_mni/`` as boolean arrays (z, y, x) on their own 1 mm grid."""
    import SimpleITK as sitk

    from ai.data import MNI_MASKS

    return [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) > 0
            for p in sorted(Path(MNI_MASKS).glob("*_lesion_mask.nii.gz"))]


def unlabelled_bases() -> list[tuple[str, Path]]:
    """Raw FLAIRs without lesion labels that may serve as bases (their lesions stay stable): the
    single FLAIRs of the longitudinal patients that are not scored pairs (no second FLAIR)."""
    from ai.data import SHARED

    out = []
    root = SHARED / "ms" / "longitudinal"
    if root.is_dir():
        for d in sorted(root.iterdir()):
            flairs = sorted(d.glob("study*_FLAIR.nii.gz"))
            if len(flairs) == 1:
                out.append((d.name, flairs[0]))
    return out


def synthetic_pairs(n_masks: int, n_clinical: int, seed: int = 11, opts: Options = NET1) -> list[Pair]:
    """``n_masks`` pairs on patient19's painted-out brain (:func:`pair_from_masks`, slices of
    1-5 mm; random generator seeded ``seed``) and ``n_clinical`` on the raw clinical and
    unlabelled longitudinal FLAIRs (:func:`pair_from_clinical`, cycling through them; seeded
    ``seed + 1``), from ``../shared/data/ms``."""
    import SimpleITK as sitk

    from ai import data as D
    from ai import preprocess as pp
    from ai.realsynth import inpaint

    rng = np.random.default_rng(seed)
    pairs: list[Pair] = []
    mpaths = sorted(Path(D.MNI_MASKS).glob("*_lesion_mask.nii.gz"))
    # read once: on patient19's model grid for the mask pairs, on their own grid for the bank
    mask_imgs = [sitk.ReadImage(str(p), sitk.sitkUInt8) for p in mpaths] if n_masks or n_clinical else []
    if n_masks and (Path(D.REAL_CASE) / "lesion_mask.nii.gz").exists() and len(mpaths) >= 2:
        base = D.real_case_volume(Path(D.REAL_CASE), holdout=False)
        brain, vent = base.labels[1] > 0, base.labels[2] > 0
        hole = ndi.binary_dilation(base.labels[0] > 0, iterations=1) & brain
        f0 = inpaint(base.flair, hole, brain & ~vent & (base.flair > 0.6), rng=rng, noise_sd=0.03)
        tissue = brain & ~ndi.binary_dilation(vent, iterations=1) & (f0 > 0.6)
        grid = base.grid
        assert grid is not None  # real_case_volume always sets it
        masks = [D._on_grid(img, grid) for img in mask_imgs]
        for _ in range(n_masks):
            i, j = rng.choice(len(masks), 2, replace=False)
            s = int(rng.choice([1, 2, 3, 3, 3, 4, 5]))
            p = pair_from_masks(f0, tissue, masks[i], masks[j], rng, s, f"p19_{i}_{j}_s{s}", opts)
            if p is not None:
                pairs.append(p)
    if n_clinical:
        rng = np.random.default_rng(seed + 1)
        bank = lesion_bank([sitk.GetArrayFromImage(img) > 0 for img in mask_imgs]) if mask_imgs else []
        vols: list[tuple[str, np.ndarray, np.ndarray | None, float]] = []
        if Path(D.CLINICAL2D).is_dir():
            for d in sorted(Path(D.CLINICAL2D).iterdir()):
                if (d / "lesion_mask.nii.gz").exists() and (d / "FLAIR.nii.gz").exists():
                    v = D.clinical_volume(d)
                    vols.append((d.name, v.flair, v.labels[0], v.slice_mm))
        for name, path in unlabelled_bases():
            prep = pp.prepare(sitk.ReadImage(str(path), sitk.sitkFloat32), None, register=False)
            vols.append((name, prep.flair, None, float(prep.grid.GetSpacing()[2])))
        for k in range(n_clinical if vols else 0):
            name, f, les, smm = vols[k % len(vols)]
            p = pair_from_clinical(f, les, bank, rng, smm, f"{name}_{k}", opts)
            if p is not None:
                pairs.append(p)
    return pairs
