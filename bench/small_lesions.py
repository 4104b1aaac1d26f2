"""Where the 3D lesion detection is lost: patient19's reference lesions by size and location.

    .venv/bin/python bench/small_lesions.py [--weights A.pt B.pt ...] [--probe 0.1,0.2]

For every reference lesion of ``../shared/data/ms/cross_sectional/patient19`` (26-connected,
>= 10 mm3) and every weights file, side by side on the same prepared input (node defaults:
mirror TTA):

- its volume, its location class (:func:`ai.lesions.classify` through ``ai.evaluate._class_of``,
  with the model's own anatomy maps, as the node classifies a predicted lesion), its FLAIR
  contrast (mean normalised FLAIR in the lesion over the median of a ring 1-3 voxels outside it,
  other lesions excluded) and its T1 ratio (the same on T1);
- the model's raw lesion probability there (no brain gate, no post-processing): the lesion is
  *seen* when its maximum is >= 0.5 and *not seen* when it is < 0.1.

The summary gives, per size (< 50 mm3 / >= 50 mm3) and location class, how many lesions are
seen, and the median FLAIR contrast of the seen and of the missed ones. ``--probe`` raises the
normalised FLAIR inside every reference lesion under 50 mm3 by each given fraction (through the
mask smoothed by 0.6 voxels, as :func:`ai.realsynth.place_lesions` paints) and counts the small
lesions seen again: if a 10-20 % brighter lesion is seen, the model's contrast threshold, not
the lesion's shape or place, is what misses it. A probe, not a result: it edits the image.

Weights that trained on patient19's own lesions (the shipped model) see most of them; the
cross-patient figures need the fold weights that did not (``python -m ai train ... --hold-out
patient19``, or with ``--group-weights real3d=0`` for patient19's brain without its lesions).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai import preprocess as pp  # noqa: E402
from ai.data import REAL_CASE  # noqa: E402
from ai.evaluate import _class_of, load_case  # noqa: E402
from ai.infer import Segmenter  # noqa: E402
from ai.lesions import components  # noqa: E402

SMALL_MM3 = 50.0


def lesion_table(raw: np.ndarray, flair: np.ndarray, t1: np.ndarray | None, ref_lab: np.ndarray, n_ref: int,
                 anatomy: dict[str, np.ndarray], spacing_zyx) -> list[dict]:
    """One row per reference lesion: volume, class, FLAIR contrast, T1 ratio, max raw probability."""
    vox = float(np.prod(spacing_zyx))
    ref = ref_lab > 0
    rows = []
    for i, bb in enumerate(ndi.find_objects(ref_lab), start=1):
        if bb is None:
            continue
        big = tuple(slice(max(0, b.start - 6), b.stop + 6) for b in bb)
        m = ref_lab[big] == i
        ring = ndi.binary_dilation(m, iterations=3) & ~ndi.binary_dilation(m, iterations=1) & ~ref[big]
        ring &= flair[big] > 0.05
        f, t = flair[big], (t1[big] if t1 is not None else None)
        rows.append({
            "volume_mm3": float(m.sum() * vox),
            "class": _class_of(ref_lab, i, bb, anatomy, spacing_zyx),
            "flair_contrast": float(f[m].mean() / max(np.median(f[ring]), 1e-6)) if ring.any() else float("nan"),
            "t1_ratio": (float(t[m].mean() / max(np.median(t[ring]), 1e-6))
                         if t is not None and ring.any() else float("nan")),
            "max_p": float(raw[big][m].max()),
        })
    assert len(rows) == n_ref
    return rows


def _median_contrast(rows: list[dict]) -> str:
    return f"{np.median([r['flair_contrast'] for r in rows]):.2f}" if rows else "  - "


def summary(rows: list[dict]) -> list[str]:
    """Seen / total per size group and class, with the median FLAIR contrast of seen and missed."""
    out = []
    for small in (True, False):
        grp = [r for r in rows if (r["volume_mm3"] < SMALL_MM3) == small]
        name = f"< {SMALL_MM3:.0f} mm3" if small else f">= {SMALL_MM3:.0f} mm3"
        for cls in sorted({r["class"] for r in grp}):
            g = [r for r in grp if r["class"] == cls]
            seen = [r for r in g if r["max_p"] >= 0.5]
            miss = [r for r in g if r["max_p"] < 0.5]
            out.append(f"  {name:9s} {cls:18s} seen {len(seen):2d}/{len(g):2d}, not seen (< 0.1) "
                       f"{sum(r['max_p'] < 0.1 for r in g):2d}; FLAIR contrast seen {_median_contrast(seen)} "
                       f"missed {_median_contrast(miss)}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", nargs="*", default=[None], help="weights files (default: the shipped model)")
    ap.add_argument("--case", type=Path, default=REAL_CASE)
    ap.add_argument("--probe", default="0.1,0.2", help="FLAIR gains for the small-lesion probe ('' for none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", action="store_true", help="print every lesion's row")
    a = ap.parse_args(argv)
    case = Path(a.case)
    if not (case / "lesion_mask.nii.gz").exists():
        print(f"no labelled case at {case} (../shared absent?)")
        return 1
    flair_img, t1_img, ref = load_case(case)
    sp = flair_img.GetSpacing()[::-1]
    ref_lab, n_ref = components(ref, sp)
    prep = pp.prepare(flair_img, t1_img)
    flair = prep.to_source(prep.flair)
    t1 = prep.to_source(prep.t1) if prep.t1 is not None else None
    small = np.zeros(n_ref + 1, bool)
    small[1:] = np.bincount(ref_lab.ravel(), minlength=n_ref + 1)[1:] * float(np.prod(sp)) < SMALL_MM3
    ref_g = sitk.GetImageFromArray(small[ref_lab].astype(np.float32))
    ref_g.CopyInformation(flair_img)
    small_grid = ndi.gaussian_filter(
        (sitk.GetArrayFromImage(pp.resample(pp.to_canonical(ref_g), prep.grid, sitk.sitkNearestNeighbor)) > 0.5)
        .astype(np.float32), 0.6)
    gains = [float(g) for g in a.probe.split(",") if g.strip()]
    print(f"{case.name}: {n_ref} reference lesions >= 10 mm3, {int(small[1:].sum())} under {SMALL_MM3:.0f} mm3")
    for w in a.weights:
        seg = Segmenter(w, device="cpu", threads=a.threads, tta=True)
        t0 = time.perf_counter()
        out = seg.predict_grid(prep)
        _prob, anatomy = seg.to_source(prep, out)
        raw = prep.to_source(out[0])
        rows = lesion_table(raw, flair, t1, ref_lab, n_ref, anatomy, sp)
        print(f"\nweights {w or 'shipped'} (model {seg.model_version[:8]}), {time.perf_counter() - t0:.1f} s")
        if a.rows:
            print("  volume class              FLAIR  T1    max p")
            for r in sorted(rows, key=lambda r: r["volume_mm3"]):
                print(f"  {r['volume_mm3']:6.0f} {r['class']:18s} {r['flair_contrast']:.2f}  "
                      f"{r['t1_ratio']:.2f}  {r['max_p']:.2f}")
        print("\n".join(summary(rows)))
        for g in gains:
            probed = prep.flair * (1.0 + g * small_grid)
            saved, prep.flair = prep.flair, probed
            try:
                raw_g = prep.to_source(seg.predict_grid(prep)[0])
            finally:
                prep.flair = saved
            mx = ndi.maximum(raw_g, ref_lab, np.arange(1, n_ref + 1))
            sm = small[1:]
            print(f"  probe: FLAIR +{g:.0%} inside the lesions < {SMALL_MM3:.0f} mm3: seen {int((mx[sm] >= 0.5).sum())}"
                  f"/{int(sm.sum())} (unprobed {sum(r['max_p'] >= 0.5 for r, s in zip(rows, sm, strict=True) if s)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
