"""How much FLAIR signal change do the experts' change regions carry?

    .venv/bin/python bench/change_signal.py [--pairs DIR]

For each pair of ``../shared/data/ms/longitudinal`` with both FLAIRs (patients 01 and 12) the
prior is registered onto the follow-up (:func:`ai.registration.register`, the node's rigid
registration) and quantile-matched to it (:func:`ai.change.intensity_change`, the signal of the
node's joint change rule). The difference follow-up minus matched prior is expressed in robust
SDs (1.4826 x the median absolute deviation over the voxels where both images are brain-bright,
> 0.5 of the median brain signal). Per expert change region (26-connected, >= 10 mm3 on the
follow-up grid) the script prints its peak brightening and darkening in those SDs over its
brain-bright voxels, and per size
group how many regions reach 3 and 4 SDs either way, next to the share of all brain voxels that
reach them anyway (registration, interpolation and noise), and the same counts for the same
regions moved to random places in the brain (20 shifts of up to 20 mm each, inside the brain and
off every expert region, seeded): the level a region of that size reaches by chance. A region that does not stand out of
that background in the images cannot be found by an image-difference rule, nor by comparing
two segmentations of those images. Last, per pair, what a plain voxel rule makes of the signal:
pieces (>= 10 mm3) of |change| >= 3 / 4 SD inside the brain-bright voxels (eroded 2 voxels
in-plane, off the edges), hyperintense (>= 1.0 of the median) at one of the two time points: how
many pieces, how many of them touch an expert region, and how many regions they find. No model
is involved.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai.change import intensity_change  # noqa: E402
from ai.change_eval import change_on_flair  # noqa: E402
from ai.data import SHARED  # noqa: E402
from ai.lesions import components  # noqa: E402
from ai.registration import register  # noqa: E402

BINS = ((10.0, 50.0), (50.0, float("inf")))


def region_peaks(d_sd: np.ndarray, ref_lab: np.ndarray, n_ref: int, vox: float) -> list[tuple[float, float, float]]:
    """(volume mm3, peak brightening, peak darkening) in SDs per reference region."""
    idx = np.arange(1, n_ref + 1)
    vol = np.bincount(ref_lab.ravel(), minlength=n_ref + 1)[1:] * vox
    mx = ndi.maximum(d_sd, ref_lab, idx)
    mn = ndi.minimum(d_sd, ref_lab, idx)
    return [(float(v), float(a), float(b)) for v, a, b in zip(vol, mx, mn, strict=True)]


def null_peaks(d_sd: np.ndarray, ref_lab: np.ndarray, n_ref: int, brain: np.ndarray, spacing_zyx,
               shifts: int = 20, max_mm: float = 20.0, seed: int = 0) -> list[list[float]]:
    """Per reference region, the peak |change| (SD) of up to ``shifts`` copies of it moved to
    random places (within ``max_mm``) that lie inside ``brain`` and off every reference region."""
    rng = np.random.default_rng(seed)
    ok = brain & (ref_lab == 0)
    shape = np.array(ref_lab.shape)
    lim = np.maximum(1, np.round(max_mm / np.asarray(spacing_zyx, float))).astype(int)
    out = []
    for i in range(1, n_ref + 1):
        pts = np.argwhere(ref_lab == i)
        peaks: list[float] = []
        for _ in range(20 * shifts):
            if len(peaks) == shifts:
                break
            q = pts + rng.integers(-lim, lim + 1)
            if (q < 0).any() or (q >= shape).any():
                continue
            idx = tuple(q.T)
            if ok[idx].all():
                peaks.append(float(np.abs(d_sd[idx]).max()))
        out.append(peaks)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=Path, default=SHARED / "ms" / "longitudinal")
    ap.add_argument("--rows", action="store_true", help="print every region")
    a = ap.parse_args(argv)
    pairs = [p for p in sorted(Path(a.pairs).glob("*"))
             if (p / "study1_FLAIR.nii.gz").exists() and (p / "study2_FLAIR.nii.gz").exists()
             and (p / "change_mask.nii.gz").exists()]
    if not pairs:
        print(f"no pairs under {a.pairs} (../shared absent?)")
        return 1
    pooled: dict[tuple[float, float], list[tuple[float, float, float]]] = {b: [] for b in BINS}
    pooled_null: dict[tuple[float, float], list[list[float]]] = {b: [] for b in BINS}
    for p in pairs:
        prior = sitk.ReadImage(str(p / "study1_FLAIR.nii.gz"), sitk.sitkFloat32)
        follow = sitk.ReadImage(str(p / "study2_FLAIR.nii.gz"), sitk.sitkFloat32)
        reg = register(prior, follow)
        sig = intensity_change(prior, follow, reg.transform)
        if sig is None:
            print(f"{p.name}: no matched region")
            continue
        fn, pm, d = sig
        brain = (fn > 0.5) & (pm > 0.5)
        db = d[brain]
        sd = 1.4826 * float(np.median(np.abs(db - np.median(db))))
        z = d / max(sd, 1e-6)
        sp = follow.GetSpacing()[::-1]
        ref_lab, n_ref = components(change_on_flair(p, "study2", follow), sp)
        # peaks over the region's brain-bright voxels only, as for the moved copies (edges of
        # ventricles and sulci carry registration and interpolation differences)
        peaks = region_peaks(np.where(brain, z, 0.0), ref_lab, n_ref, float(np.prod(sp)))
        null = null_peaks(z, ref_lab, n_ref, brain, sp)
        share = {k: float((np.abs(z[brain]) >= k).mean()) for k in (3, 4)}
        print(f"{p.name}: registration {'ok' if reg.ok else 'FAILED'}, robust SD {sd:.3f} of the median brain "
              f"signal; brain voxels beyond 3 / 4 SD either way: {share[3]:.1%} / {share[4]:.1%}")
        if a.rows:
            for v, hi, lo in sorted(peaks):
                print(f"  {v:7.0f} mm3  brightening {hi:5.1f}  darkening {lo:5.1f}")
        inner = ndi.binary_erosion(brain, np.ones((1, 3, 3), bool), iterations=2)
        for k in (3, 4):
            cl, nc = components(inner & (np.abs(z) >= k) & ((fn >= 1.0) | (pm >= 1.0)), sp)
            hit = (cl > 0) & (ref_lab > 0)
            print(f"  voxel rule at {k} SD: {nc} pieces, {len(np.unique(cl[hit]))} touch an expert region, "
                  f"{len(np.unique(ref_lab[hit]))} of {n_ref} regions found")
        for b in BINS:
            sel = [k for k, r in enumerate(peaks) if b[0] <= r[0] < b[1]]
            grp, nul = [peaks[k] for k in sel], [null[k] for k in sel]
            pooled[b] += grp
            pooled_null[b] += nul
            print("  " + _line(b, grp, nul))
    print("pooled:")
    for b in BINS:
        print("  " + _line(b, pooled[b], pooled_null[b]))
    return 0


def _line(b: tuple[float, float], grp: list[tuple[float, float, float]], null: list[list[float]]) -> str:
    name = f"{b[0]:.0f}-{b[1]:.0f} mm3" if np.isfinite(b[1]) else f">= {b[0]:.0f} mm3"
    n3 = sum(max(hi, -lo) >= 3 for _v, hi, lo in grp)
    n4 = sum(max(hi, -lo) >= 4 for _v, hi, lo in grp)
    # expected count by chance: each region's share of moved copies reaching the level
    e3 = sum(float(np.mean([v >= 3 for v in n])) for n in null if n)
    e4 = sum(float(np.mean([v >= 4 for v in n])) for n in null if n)
    return (f"{name:12s} regions {len(grp):2d}: peak change >= 3 SD in {n3} (moved elsewhere: {e3:.1f}), "
            f">= 4 SD in {n4} (moved elsewhere: {e4:.1f})")


if __name__ == "__main__":
    raise SystemExit(main())
