"""Lesion post-processing alternatives, scored on cross-patient folds without any training.

``python bench/postprocess_sweep.py --weights B=ai/weights/folds/foldB.pt,C=ai/weights/folds/foldC.pt``

Each fold's weights segment the patients that fold held out (:data:`ai.crossval.FOLDS`) once,
with the node's defaults (mirror TTA, CPU bf16 where native, brain gate, scalp rule); the
probability maps are then post-processed in several ways and scored as ``python -m ai crossval``
scores them (threshold 0.5, lesions >= 3 voxels and >= 10 mm3): mean voxel Dice, mean lesion F1
and the worst false lesions per true lesion, per fold and over all folds, and every case's Dice.
It also splits each case's voxel errors into false components, excess inside detected lesions,
missed lesions and the missing part of detected lesions (``--errors``).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ai.crossval import FOLDS
from ai.evaluate import case_metrics, load_case
from ai.infer import Segmenter
from ai.lesions import STRUCT26, components

PostFn = Callable[[np.ndarray, tuple], np.ndarray]


def _by_lesion(stat: Callable, cut: float) -> PostFn:
    """Drop >= 0.5 components whose statistic (``ndi.mean`` / ``ndi.maximum``) is below ``cut``."""
    def f(p: np.ndarray, sp) -> np.ndarray:
        lab, n = ndi.label(p >= 0.5, STRUCT26)
        if n == 0:
            return p
        keep = np.r_[False, np.asarray(stat(p, lab, np.arange(1, n + 1))) >= cut]
        return np.where(keep[lab], p, 0)
    return f


def _hysteresis(lo: float) -> PostFn:
    """Grow every >= 0.5 core into the connected voxels >= ``lo``."""
    def f(p: np.ndarray, sp) -> np.ndarray:
        lab, n = ndi.label(p >= lo, STRUCT26)
        keep = np.zeros(n + 1, bool)
        keep[np.unique(lab[p >= 0.5])] = True
        keep[0] = False
        return np.where(keep[lab], np.maximum(p, 0.5), np.where(p >= 0.5, p, 0))
    return f


def _relative(alpha: float) -> PostFn:
    """Per lesion keep the voxels >= max(0.5, ``alpha`` x the lesion's maximum)."""
    def f(p: np.ndarray, sp) -> np.ndarray:
        lab, n = ndi.label(p >= 0.5, STRUCT26)
        if n == 0:
            return p
        mx = np.r_[0, ndi.maximum(p, lab, np.arange(1, n + 1))]
        return np.where(p >= alpha * mx[lab], p, 0)
    return f


def _min_volume(mm3: float) -> PostFn:
    def f(p: np.ndarray, sp) -> np.ndarray:
        lab, _ = components(p >= 0.5, sp, 3, mm3)
        return np.where(lab > 0, p, 0)
    return f


VARIANTS: dict[str, PostFn] = {"none (node default)": lambda p, sp: p}
VARIANTS.update({f"lesion mean p >= {t}": _by_lesion(ndi.mean, t) for t in (0.6, 0.65, 0.7, 0.75)})
VARIANTS.update({f"lesion max p >= {t}": _by_lesion(ndi.maximum, t) for t in (0.7, 0.8, 0.9)})
VARIANTS.update({f"hysteresis 0.5 -> {lo}": _hysteresis(lo) for lo in (0.3, 0.4)})
VARIANTS.update({f"per-lesion relative {a}": _relative(a) for a in (0.6, 0.7)})
VARIANTS.update({f"min volume {v} mm3": _min_volume(v) for v in (20, 30, 50)})


def predict(weights: dict[str, Path]) -> dict[str, dict]:
    """Probability map, reference and spacing of every held-out case, keyed by case name."""
    out: dict[str, dict] = {}
    for fold, w in sorted(weights.items()):
        seg = Segmenter(w)
        for d in FOLDS[fold]:
            if not (d / "lesion_mask.nii.gz").exists():
                continue
            flair, t1, ref = load_case(d)
            res = seg.segment(flair, t1)
            out[d.name] = {"fold": fold, "prob": res.probability, "ref": ref,
                           "sp": tuple(flair.GetSpacing()[::-1])}
    return out


def errors(c: dict) -> str:
    """Where a case's voxel errors lie (mL): false components, excess in detected lesions, missed
    lesions, missing part of detected lesions."""
    sp = c["sp"]
    v = float(np.prod(sp)) / 1000
    pl, n = components(c["prob"] >= 0.5, sp)
    rl, m = components(c["ref"], sp)
    pred, ref = pl > 0, rl > 0
    hit = np.zeros(n + 1, bool)
    hit[np.unique(pl[pred & ref])] = True
    hit[0] = False
    rhit = np.zeros(m + 1, bool)
    rhit[np.unique(rl[pred & ref])] = True
    rhit[0] = False
    return (f"ref {ref.sum() * v:5.2f} pred {pred.sum() * v:5.2f} | false components {(pred & ~hit[pl]).sum() * v:5.2f}"
            f" excess in detected {(hit[pl] & ~ref).sum() * v:5.2f} | missed lesions {(ref & ~rhit[rl]).sum() * v:5.2f}"
            f" missing in detected {(ref & rhit[rl] & ~pred).sum() * v:5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True, help="FOLD=PATH[,FOLD=PATH...] (folds: ai.crossval.FOLDS)")
    ap.add_argument("--errors", action="store_true", help="also print where each case's voxel errors lie")
    a = ap.parse_args()
    cases = predict({k: Path(v) for k, v in (s.split("=") for s in a.weights.split(","))})
    if a.errors:
        for name, c in sorted(cases.items()):
            print(f"{name:14} {errors(c)}")
    folds = sorted({c["fold"] for c in cases.values()})
    print(f"{'variant':26} " + " ".join(f"{('fold ' + f if f != 'all' else 'all') + ' dice/F1/worst':>22}"
                                      for f in folds + ["all"])
          + "  per-case dice")
    for name, fn in VARIANTS.items():
        res = {k: case_metrics(fn(c["prob"], c["sp"]), c["ref"], c["sp"], 0.5) for k, c in cases.items()}
        cols = []
        for f in folds + ["all"]:
            ks = [k for k, c in cases.items() if f in ("all", c["fold"])]
            cols.append(f"{np.mean([res[k]['dice'] for k in ks]):.3f}/{np.mean([res[k]['lesion_f1'] for k in ks]):.3f}/"
                        f"{max(res[k]['fp_per_true_lesion'] for k in ks):.2f}")
        print(f"{name:26} " + " ".join(f"{c:>22}" for c in cols) + "  "
              + " ".join(f"{res[k]['dice']:.3f}" for k in sorted(res)))


if __name__ == "__main__":
    main()
