"""Training: 2D slices from the real labelled cases, real-mask synthesis and synthetic phantoms.

``python -m ai train --out runs/ms --iters 3000 [--resume] [--export]``

Reproducible: one seed drives the phantoms, the sampler and the initialisation; checkpoints hold
the model, optimiser, scheduler, iteration and every RNG state, so ``--resume`` continues the
same sequence.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from ai.data import HOLDOUT, REAL_CASE, Volume, phantom_volume, training_volumes
from ai.lesions import components
from ai.model import OUTPUTS, UNet2D, expand_first_conv, in_channels, without_anatomy_head
from ai.realsynth import fade_lesions
from ai.types import LESION_DICE

log = logging.getLogger(__name__)


#: how often each group of training volumes is drawn (renormalised over the groups present)
GROUP_WEIGHTS = {"clinical": 0.35, "masksynth": 0.3, "real3d": 0.1, "phantoms": 0.25}


class Sampler:
    """Draws augmented 2D training crops (numpy RNG, deterministic for a seed).

    ``groups`` maps a group name (see :data:`GROUP_WEIGHTS`) to its volumes; a crop first draws a
    group by its weight, then a volume of that group uniformly.
    """

    def __init__(self, groups: dict[str, list[Volume]], seed: int, crop: int = 128,
                 p_lesion: float = 0.5, lesion_sampling: str = "voxel", context: int = 0,
                 weights: dict[str, float] | None = None, lesion_fade: tuple[float, float] = (0.0, 1.0),
                 plane_thick: float = 0.0):
        self.groups = {k: v for k, v in groups.items() if v}
        if not self.groups:
            raise ValueError("no training volumes")
        w = weights or GROUP_WEIGHTS
        names = sorted(self.groups)
        p = np.array([w.get(k, 0.1) for k in names], float)
        self.group_names, self.group_p = names, p / p.sum()
        vols = [v for k in names for v in self.groups[k]]
        self.rng = np.random.default_rng(seed)
        self.crop, self.p_lesion = crop, p_lesion
        if lesion_sampling not in ("voxel", "component"):
            raise ValueError(f"lesion_sampling must be 'voxel' or 'component', not {lesion_sampling!r}")
        self.lesion_sampling = lesion_sampling
        self.context = context
        # (probability, lowest alpha): how often a crop's lesions are made fainter, and how much
        # (ai.realsynth.fade_lesions; alpha drawn uniformly in [lowest, 1])
        self.lesion_fade = (float(lesion_fade[0]), float(lesion_fade[1]))
        # how often a crop of a thin-slice volume is made a coronal or sagittal thick-slice series
        # instead (:func:`plane_slabs`); 0 draws nothing, so earlier recipes are unchanged
        self.plane_thick = float(plane_thick)
        self.lesion_idx = {id(v): np.argwhere(v.labels[0] > 0) for v in vols}
        # per volume: the voxel indices of each 26-connected lesion component, so that
        # 'component' sampling centres crops on small lesions as often as on large confluent ones
        self.lesion_comps = ({id(v): _components(v.labels[0] > 0) for v in vols}
                             if lesion_sampling == "component" else {})
        # crop centres away from lesions: the brain where it is known, else the head (clinical)
        self.brain_idx = {id(v): np.argwhere(((v.labels[1] > 0) if v.valid[1] else (v.flair > 0.3)) & v.region)[::7]
                          for v in vols}

    def _one(self):
        rng = self.rng
        vols = self.groups[self.group_names[rng.choice(len(self.group_names), p=self.group_p)]]
        v = vols[rng.integers(len(vols))]
        les = self.lesion_idx[id(v)]
        comps = self.lesion_comps.get(id(v))
        if comps:
            les = comps[rng.integers(len(comps))]
        pool = les if (len(les) and rng.random() < self.p_lesion) else self.brain_idx[id(v)]
        z, y, x = pool[rng.integers(len(pool))]
        y += rng.integers(-40, 41)
        x += rng.integers(-40, 41)
        # a coronal or sagittal thick-slice series (in-plane axis 0 or 1 of the crop, 3-6 mm), on
        # thin-slice volumes only; its slices are then thin along z
        plane = None
        if self.plane_thick > 0 and v.slice_mm < 2.0 and rng.random() < self.plane_thick:
            plane = (int(rng.integers(2)), int(rng.integers(3, 7)), float(rng.random()))
        # thick-slice simulation (2D clinical FLAIR) on thin-slice volumes only
        k = int(rng.choice([1, 1, 1, 2, 3, 4])) if v.slice_mm < 2.0 and plane is None else 1
        nz = v.flair.shape[0]
        z0 = int(np.clip(z - k // 2, 0, nz - k))
        zs = slice(z0, z0 + k)
        lab = v.labels[:, z].astype(np.float32)
        lab[0] = (v.labels[0, zs].mean(0) >= 0.5)
        h = self.crop // 2
        sl = (slice(y - h, y + h), slice(x - h, x + h))
        lab = np.stack([_crop(c, sl) for c in lab])
        # lesion-loss weight: 0 where the volume's lesion label is not known (``Volume.ignore``)
        # and no lesion is labelled, else 1
        wl = (np.ones(lab.shape[1:], np.float32) if v.ignore is None
              else 1.0 - _crop(np.asarray(v.ignore[zs].any(0), np.float32), sl) * (1.0 - lab[0]))
        # 2.5D: the thick slab itself and `context` neighbouring slabs of the same thickness on
        # each side (clipped at the volume's ends, as inference repeats the edge slices)
        fls, t1s = [], []
        for o in range(-self.context, self.context + 1):
            s0 = int(np.clip(z0 + o * k, 0, nz - k))
            fls.append(_crop(v.flair[s0:s0 + k].mean(0), sl))
            t1s.append(_crop(v.t1[s0:s0 + k].mean(0), sl) if v.t1 is not None else np.zeros_like(fls[-1]))
        if plane is not None:
            axis, kk, phase = plane
            fls = [plane_slabs(a, axis, kk, phase) for a in fls]
            if rng.random() < 0.5:  # the T1 is often a 3D series beside a 2D FLAIR
                t1s = [plane_slabs(a, axis, kk, phase) for a in t1s]
        if self.lesion_fade[0] > 0 and v.valid[0] and lab[0].any() and rng.random() < self.lesion_fade[0]:
            alpha = rng.uniform(self.lesion_fade[1], 1.0)
            fls = [fade_lesions(a, lab[0], alpha) for a in fls]
        is_phantom = v.name.startswith("phantom")
        fl_params = self._intensity_params(is_phantom)
        fls = [self._intensity(a, v.stripped, fl_params) for a in fls]
        t1_params = self._intensity_params(is_phantom)
        t1s = [self._intensity(a, v.stripped, t1_params) for a in t1s]
        if v.t1 is None or rng.random() < 0.5:  # T1 channel dropout: FLAIR-only must work
            t1s = [np.zeros_like(a) for a in t1s]
        x_in = np.stack(fls + t1s)
        if rng.random() < 0.5:
            x_in, lab, wl = x_in[:, :, ::-1], lab[:, :, ::-1], wl[:, ::-1]
        return x_in, lab, v.valid, wl

    def _intensity_params(self, phantom: bool) -> dict:
        """One draw of the intensity augmentation, shared by the slices of one 2.5D input."""
        rng = self.rng
        return {"blur": rng.uniform(0.3, 1.0) if rng.random() < 0.3 else 0.0,
                "gamma": rng.uniform(0.7, 1.45), "bias": rng.normal(0, 0.12, 5), "gain": rng.uniform(0.75, 1.33),
                "sd": rng.uniform(0.02, 0.08) if phantom else rng.uniform(0.0, 0.05),
                "keep_bg": rng.random() < 0.5}

    def _intensity(self, img: np.ndarray, stripped: bool, prm: dict) -> np.ndarray:
        """Apply one draw of :meth:`_intensity_params` (noise is drawn per slice; on a
        skull-stripped image the background stays ~0 half of the time)."""
        rng = self.rng
        fg = img > 0.05
        out = img.copy()
        if prm["blur"]:
            out = ndi.gaussian_filter(out, prm["blur"])
        out = np.power(np.clip(out, 0, None), prm["gamma"])
        yy, xx = np.mgrid[-1:1:out.shape[0] * 1j, -1:1:out.shape[1] * 1j]
        c = prm["bias"]
        bias = 1 + c[0] * yy + c[1] * xx + c[2] * yy * xx + c[3] * yy ** 2 + c[4] * xx ** 2
        out = out * np.clip(bias, 0.6, 1.4) * prm["gain"]
        sd = prm["sd"]
        if sd > 0:
            out = np.sqrt((out + rng.normal(0, sd, out.shape)) ** 2 + rng.normal(0, sd, out.shape) ** 2)
            if stripped:  # skull-stripped background stays ~0
                out = np.where(fg | prm["keep_bg"], out, 0)
        return np.clip(out, 0, 4).astype(np.float32)

    def batch(self, n: int):
        """``n`` augmented crops: inputs (B, 2(2c+1), H, W), labels (B, C, H, W), which label
        channels are known (B, C) and the lesion channel's loss weight (B, H, W): 0 where
        :attr:`Volume.ignore` leaves the lesion label out, else 1."""
        xs, ys, vs, ws = zip(*(self._one() for _ in range(n)), strict=False)
        x = torch.from_numpy(np.ascontiguousarray(np.stack(xs)))
        y = torch.from_numpy(np.ascontiguousarray(np.stack(ys)))
        v = torch.from_numpy(np.stack(vs))
        w = torch.from_numpy(np.ascontiguousarray(np.stack(ws)))
        ang = torch.from_numpy(self.rng.uniform(-0.2, 0.2, n)).float()
        sc = torch.from_numpy(self.rng.uniform(0.87, 1.15, n)).float()
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = torch.cos(ang) / sc
        theta[:, 0, 1] = -torch.sin(ang) / sc
        theta[:, 1, 0] = torch.sin(ang) / sc
        theta[:, 1, 1] = torch.cos(ang) / sc
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", align_corners=False)
        y = (F.grid_sample(y, grid, mode="bilinear", align_corners=False) >= 0.5).float()
        if bool((w < 1).any()):  # the ignored part is warped (padding: not ignored); all ones stay ones
            ign = F.grid_sample(1.0 - w[:, None], grid, mode="bilinear", align_corners=False)[:, 0]
            w = (ign < 0.5).float()
        return x, y, v, w


def plane_slabs(img: np.ndarray, axis: int, k: int, phase: float = 0.0) -> np.ndarray:
    """A 2D axial slice as the node sees a coronal (``axis`` 0, y) or sagittal (``axis`` 1, x)
    series of ``k``-voxel-thick slices: each slice averages ``k`` voxels along ``axis`` (slab
    centres every ``k`` voxels, the first offset by ``phase`` x ``k``), then the slices are
    linearly interpolated back to every voxel, as the node's resampling to 1 x 1 mm axial slices
    does (constant beyond the outermost slab centres)."""
    n = img.shape[axis]
    sm = ndi.uniform_filter1d(img.astype(np.float32, copy=False), k, axis=axis, mode="nearest")
    centres = np.arange(phase * k + (k - 1) / 2.0, n, k)
    centres = centres[centres <= n - 1]
    samples = np.take(sm, np.clip(np.round(centres).astype(int), 0, n - 1), axis=axis)
    # linear interpolation between neighbouring slab centres, all rows at once
    pos = np.arange(n, dtype=np.float64)
    lo = np.clip(np.searchsorted(centres, pos, side="right") - 1, 0, max(len(centres) - 2, 0))
    hi = np.minimum(lo + 1, len(centres) - 1)
    w = np.clip((pos - centres[lo]) / np.maximum(centres[hi] - centres[lo], 1e-9), 0.0, 1.0)
    shape = [1, 1]
    shape[axis] = n
    w = w.reshape(shape).astype(np.float32)
    return (np.take(samples, lo, axis=axis) * (1 - w) + np.take(samples, hi, axis=axis) * w).astype(np.float32)


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """Voxel indices (n, 3) of every 26-connected component of ``mask`` (no size limit)."""
    lab, n = components(mask, (1.0, 1.0, 1.0), min_voxels=1, min_volume_mm3=0.0)
    if n == 0:
        return []
    idx = np.argwhere(lab > 0)
    idx = idx[np.argsort(lab[tuple(idx.T)], kind="stable")]
    counts = np.bincount(lab[tuple(idx.T)], minlength=n + 1)[1:]
    return np.split(idx, np.cumsum(counts)[:-1])


def _crop(a: np.ndarray, sl) -> np.ndarray:
    """Crop with zero padding outside the array."""
    out = np.zeros((sl[0].stop - sl[0].start, sl[1].stop - sl[1].start), np.float32)
    ys, xs = max(sl[0].start, 0), max(sl[1].start, 0)
    ye, xe = min(sl[0].stop, a.shape[0]), min(sl[1].stop, a.shape[1])
    if ye > ys and xe > xs:
        out[ys - sl[0].start: ye - sl[0].start, xs - sl[1].start: xe - sl[1].start] = a[ys:ye, xs:xe]
    return out


def soft_dice(p: torch.Tensor, t: torch.Tensor, dims: tuple[int, ...] = (0, 2, 3)) -> torch.Tensor:
    """1 - soft Dice summed over ``dims``: by default over the whole batch, per channel
    (B, C, H, W) -> (C,); ``dims=(1, 2)`` on (B, H, W) gives one per crop."""
    inter = (p * t).sum(dims)
    return 1 - (2 * inter + 1) / (p.sum(dims) + t.sum(dims) + 1)


def blob_dice(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor | None:
    """Lesion-wise soft Dice loss ("blob loss", Kofler et al. 2022), on (B, H, W) probabilities
    and binary targets: per crop, every 8-connected lesion of ``t`` gets its own 1 - soft Dice,
    counted where that lesion or background is (the other lesions are masked out), so a missed
    10-voxel lesion costs as much as a missed large one and a false lesion costs in every term.
    Mean over the crop's lesions, then over the crops that have any; None when none has."""
    lab = [ndi.label(m, structure=np.ones((3, 3), bool))
           for m in (t.detach() > 0.5).cpu().numpy()]
    per_crop = []
    for b, (lb, n) in enumerate(lab):
        if n == 0:
            continue
        lb_t = torch.from_numpy(lb).to(p.device)
        ids = torch.arange(1, n + 1, device=p.device)[:, None, None]
        comp = (lb_t[None] == ids).float()                  # (n, H, W)
        keep = comp + (lb_t == 0).float()[None]             # this lesion or background
        pk = p[b][None] * keep
        inter = (pk * comp).sum((1, 2))
        per_crop.append((1 - (2 * inter + 1) / (pk.sum((1, 2)) + comp.sum((1, 2)) + 1)).mean())
    return torch.stack(per_crop).mean() if per_crop else None


def loss_fn(logits: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, lesion_dice: str = "batch",
            lesion_weight: torch.Tensor | None = None, blob: float = 0.0) -> torch.Tensor:
    """BCE + batch soft Dice for every output; anatomy channels only where the label is known.

    The lesion channel has weight 1, the anatomy channels 0.5 each (Dice counters the class
    imbalance of small structures such as the ventricles). ``lesion_dice``: the lesion channel's
    Dice over the whole batch (``"batch"``, the default: large lesions dominate it), per crop and
    averaged over the crops with lesion labels (``"image"``: a crop holding one small lesion weighs
    as much as one holding a large one, and a crop without lesions is penalised for any lesion it
    predicts), or the mean of the two (``"both"``). ``lesion_weight`` (B, H, W), 0 or 1: the
    pixels with 0 count in neither the lesion channel's BCE (a weighted mean over the crop) nor
    its Dice; all ones gives the same loss as None. ``blob`` > 0 adds that weight times the
    lesion-wise Dice (:func:`blob_dice`) over the crops with lesion labels; 0 adds nothing.
    """
    if lesion_dice not in LESION_DICE:
        raise ValueError(f"lesion_dice must be one of {LESION_DICE}, not {lesion_dice!r}")
    p = torch.sigmoid(logits)
    bce_map = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    bce = bce_map.mean((2, 3))  # (B, C)
    if lesion_weight is not None:
        lw = lesion_weight
        bce_les = (bce_map[:, 0] * lw).sum((1, 2)) / lw.sum((1, 2)).clamp(min=1.0)
        bce = torch.cat([bce_les[:, None], bce[:, 1:]], 1)
        p = torch.cat([p[:, :1] * lw[:, None], p[:, 1:]], 1)
        y = torch.cat([y[:, :1] * lw[:, None], y[:, 1:]], 1)
    w = valid.clone()
    bce = (bce * w).sum(0) / w.sum(0).clamp(min=1)  # (C,)
    m = w[:, :, None, None]
    dice = soft_dice(p * m, y * m)
    per = bce + dice
    les = per[0]
    lv = w[:, 0] > 0  # the crops with lesion labels
    if lesion_dice != "batch" and lv.any():
        img = soft_dice(p[lv, 0], y[lv, 0], dims=(1, 2)).mean()
        les = bce[0] + (img if lesion_dice == "image" else 0.5 * (dice[0] + img))
    if blob > 0 and lv.any():
        bl = blob_dice(p[lv, 0], y[lv, 0])
        if bl is not None:
            les = les + blob * bl
    return les + 0.5 * per[1:].sum()


def only_loss_channels(groups: dict[str, list[Volume]], loss_channels: tuple[str, ...]) -> None:
    """Mark every output not in ``loss_channels`` unknown (``valid`` 0) on every volume of
    ``groups``, in place, so that it counts in no loss (:func:`loss_fn`)."""
    unknown = set(loss_channels) - set(OUTPUTS)
    if unknown or not loss_channels:
        raise ValueError(f"loss channels {sorted(unknown) or '(none)'} not among the outputs {OUTPUTS}")
    off = [k for k, name in enumerate(OUTPUTS) if name not in loss_channels]
    for vols in groups.values():
        for v in vols:
            v.valid[off] = 0.0


def training_groups(held_out: frozenset[str], *, seed: int, n_phantoms: int, real_case: Path | None,
                    clinical: Path | None, mni_masks: Path | None, holdout_hemisphere: bool = False,
                    progress: bool = False, ignore_painted: bool = False,
                    samseg: Path | None = None) -> dict[str, list[Volume]]:
    """The sampler's groups: the real training volumes without ``held_out``
    (:func:`ai.data.training_volumes`) and ``n_phantoms`` seeded phantoms."""
    from tqdm import tqdm

    groups = training_volumes(held_out, real_case=real_case, clinical=clinical, mni_masks=mni_masks, seed=seed,
                              holdout_hemisphere=holdout_hemisphere, ignore_painted=ignore_painted,
                              samseg=samseg)
    groups["phantoms"] = [phantom_volume(1000 + seed * 100 + i)
                          for i in tqdm(range(n_phantoms), desc="phantoms", disable=not progress)]
    return groups

def train(out: Path, iters: int = 3000, batch: int = 12, crop: int = 128, lr: float = 2e-3, seed: int = 0,
          n_phantoms: int = 12, base: int = 12, threads: int | None = None, resume: bool = False,
          real_case: Path | None = REAL_CASE, ckpt_every: int = 100, holdout: bool = False,
          progress: bool = True, lesion_sampling: str = "voxel", init: Path | None = None,
          warmup: int = 100, context: int = 0, clinical: Path | None = None, mni_masks: Path | None = None,
          held_out: set[str] | frozenset[str] = frozenset(),
          group_weights: dict[str, float] | None = None,
          lesion_fade: tuple[float, float] = (0.0, 1.0), lesion_dice: str = "batch",
          ignore_painted: bool = False, plane_thick: float = 0.0, blob: float = 0.0,
          samseg: Path | None = None, loss_channels: tuple[str, ...] | None = None) -> Path:
    """Train and return the path of the final checkpoint (see module docstring).

    ``lesion_sampling='component'`` centres lesion crops on a uniformly drawn lesion component
    (small lesions as often as large ones) instead of a uniformly drawn lesion voxel.
    ``init`` starts from exported weights (``python -m ai export``) instead of a random
    initialisation: a fine-tuning stage, recorded with the weights' SHA-256 in the config.
    ``context`` > 0 gives the model that many neighbouring slices on each side (2.5D); a 2D
    ``init`` is expanded with zero weights for the neighbours (:func:`ai.model.expand_first_conv`).
    ``clinical`` (a ``clinical2d``-style folder) and ``mni_masks`` (lesion masks in the real case's
    MNI space, for :mod:`ai.realsynth`) add those sources; ``held_out`` names cases (folder names,
    e.g. ``patient19`` or ``tabriz101228``) that training must not see: the validation fold.
    ``holdout`` keeps the earlier hemisphere hold-out of the real case (patient's left half unseen).
    ``group_weights`` overrides entries of :data:`GROUP_WEIGHTS` (how often each group is drawn).
    ``lesion_fade`` = (probability, lowest alpha): that share of lesion-bearing crops has its
    lesions' excess FLAIR signal scaled by an alpha drawn in [lowest, 1]
    (:func:`ai.realsynth.fade_lesions`); (0, 1), the default, draws nothing and changes nothing.
    ``lesion_dice`` selects the lesion channel's Dice (:func:`loss_fn`).
    ``ignore_painted`` leaves the real case's painted-out lesions out of the real-mask volumes'
    lesion loss (:func:`ai.data.mask_synthetic_volumes`).
    ``plane_thick``: that share of the thin-slice volumes' crops are made coronal or sagittal
    thick-slice series (:func:`plane_slabs`, 3-6 mm); 0, the default, draws nothing.
    ``blob``: the weight of the lesion-wise Dice added to the lesion loss (:func:`loss_fn`); 0, the
    default, adds nothing.
    ``samseg``: SAMSEG's labels of the real cases (``ai/recipes/samseg_anatomy.sh``) become their
    brain, cortex and infratentorial targets (:func:`ai.data.with_samseg_anatomy`); None, the
    default, keeps the heuristics (patient19) and no anatomy target (clinical).
    ``loss_channels``: only these outputs (:data:`ai.model.OUTPUTS`) count in the loss, the others
    are marked unknown on every volume (e.g. ``("lesion", "ventricles")`` leaves brain, cortex and
    infratentorial to an anatomy head); None, the default, counts every output.
    The config records the names of every real case trained on (``trained_on``).
    """
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    held_out = frozenset(held_out)
    groups = training_groups(held_out, seed=seed, n_phantoms=n_phantoms, real_case=real_case, clinical=clinical,
                             mni_masks=mni_masks, holdout_hemisphere=holdout, progress=progress,
                             ignore_painted=ignore_painted, samseg=samseg)
    if loss_channels is not None:
        only_loss_channels(groups, loss_channels)
    real = groups["real3d"]
    trained_on = sorted(v.name for k in ("real3d", "clinical") for v in groups[k])
    log.info("training volumes: %s; held out: %s", {k: len(v) for k, v in groups.items()}, sorted(held_out))
    gw = dict(GROUP_WEIGHTS, **(group_weights or {}))
    unknown = set(gw) - set(GROUP_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown training groups {sorted(unknown)} (known: {sorted(GROUP_WEIGHTS)})")
    sampler = Sampler(groups, seed=seed, crop=crop, lesion_sampling=lesion_sampling, context=context, weights=gw,
                      lesion_fade=lesion_fade, plane_thick=plane_thick)
    model = UNet2D(in_ch=in_channels(context), base=base).to(device)
    init_sha = None
    if init is not None:
        import hashlib

        st0 = torch.load(init, map_location="cpu", weights_only=False)
        model.load_state_dict(expand_first_conv(without_anatomy_head(
            st0["state_dict"] if "state_dict" in st0 else st0["model"], f"--init {init}"), context))
        init_sha = hashlib.sha256(Path(init).read_bytes()).hexdigest()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / max(warmup, 1)) * 0.5 * (1 + math.cos(math.pi * min(i, iters) / iters)))
    start = 0
    ckpt = out / "last.ckpt"
    if resume and ckpt.exists():
        st = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        start = st["iter"]
        sampler.rng.bit_generator.state = st["np_rng"]
        torch.set_rng_state(st["torch_rng"])
        log.info("resumed from %s at iteration %d", ckpt, start)
    config = dict(iters=iters, batch=batch, crop=crop, lr=lr, seed=seed, n_phantoms=n_phantoms, base=base,
                  real_case=str(real_case) if real else None, holdout=HOLDOUT if (real and holdout) else None,
                  lesion_sampling=lesion_sampling, warmup=warmup, context=context,
                  init={"path": str(init), "sha256": init_sha} if init is not None else None,
                  clinical=str(clinical) if groups["clinical"] else None,
                  mni_masks=str(mni_masks) if groups["masksynth"] else None,
                  n_volumes={k: len(v) for k, v in groups.items()}, held_out=sorted(held_out),
                  trained_on=trained_on, group_weights={k: gw.get(k) for k in groups if groups[k]},
                  **({"lesion_fade": list(lesion_fade)} if lesion_fade[0] > 0 else {}),
                  **({"lesion_dice": lesion_dice} if lesion_dice != "batch" else {}),
                  **({"ignore_painted": True} if ignore_painted and groups["masksynth"] else {}),
                  **({"plane_thick": plane_thick} if plane_thick > 0 else {}),
                  **({"blob": blob} if blob > 0 else {}),
                  **({"samseg": str(samseg)} if samseg is not None else {}),
                  **({"loss_channels": list(loss_channels)} if loss_channels is not None else {}))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    scaler_ctx = (torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda"
                  else torch.autocast("cpu", enabled=False))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    model.train()
    hist = []
    t0 = time.time()
    bar = tqdm(range(start, iters), initial=start, total=iters, desc="train", disable=not progress)
    for it in bar:
        x, y, v, w = sampler.batch(batch)
        x, y, v, w = x.to(device), y.to(device), v.to(device), w.to(device)
        with scaler_ctx:
            logits = model(x)
        loss = loss_fn(logits.float(), y, v, lesion_dice, w if ignore_painted else None, blob)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        hist.append(float(loss.detach()))
        if progress:
            bar.set_postfix(loss=f"{np.mean(hist[-50:]):.3f}")
        if (it + 1) % ckpt_every == 0 or it + 1 == iters:
            _save(ckpt, model, opt, sched, it + 1, sampler, config, hist)
            with open(out / "loss.log", "a") as fh:
                fh.write(f"{it + 1} {np.mean(hist[-ckpt_every:]):.4f} {time.time() - t0:.0f}\n")
    return ckpt


def _save(path: Path, model, opt, sched, it: int, sampler: Sampler, config: dict, hist) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "iter": it,
                "np_rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "config": config}, tmp)
    tmp.replace(path)


def _lineage(config: dict) -> list[dict]:
    """The training configs of the earlier stages a fine-tuning run started from, newest first.

    Read from the ``init`` weights' own metadata (which carries their lineage in turn), and kept
    only when that file still has the SHA-256 recorded at the start of training, so that what is
    shipped says, for example, which part of the real case any earlier stage held out.
    """
    import hashlib

    init = config.get("init") or {}
    path = Path(init["path"]) if init.get("path") else None
    if path is None:
        return []
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != init.get("sha256"):
        log.warning("init weights %s missing or changed since training: lineage not recorded", path)
        return []
    meta = torch.load(path, map_location="cpu", weights_only=False).get("meta", {})
    return [dict(meta.get("train_config", {}), iter=meta.get("iter"))] + list(meta.get("lineage", []))


def write_weights(dest: Path, state: dict, meta: dict) -> str:
    """Write a weights file (model state + metadata) and its ``.sha256`` beside it; the SHA-256."""
    from ai.infer import sha256

    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta": meta}, dest)
    digest = sha256(dest)
    dest.with_suffix(dest.suffix + ".sha256").write_text(f"{digest}  {dest.name}\n")
    return digest


def export(ckpt: Path, dest: Path, extra: dict | None = None) -> str:
    """Write the shipped weights (model state + metadata) and return their SHA-256."""
    st = torch.load(ckpt, map_location="cpu", weights_only=False)
    meta = {"name": "ms_unet2d", "outputs": list(OUTPUTS), "base": st["config"]["base"], "iter": st["iter"],
            "context": int(st["config"].get("context", 0)),
            "train_config": st["config"], "lineage": _lineage(st["config"]), **(extra or {})}
    return write_weights(dest, st["model"], meta)
