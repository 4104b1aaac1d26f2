"""The model against a peer that needs no training: SAMSEG's lesion mode, on the same cases.

SAMSEG (FreeSurfer's contrast-adaptive whole-brain segmentation, PyPI ``samseg``, MIT) has an MS
lesion mode (``--lesion``, a lesion shape model that needs tensorflow). It is a training-time
tool here, in its own environment (``.venv-train``), never needed by the node:
``ai/recipes/samseg_lesions.sh`` runs it (T1 + FLAIR, FLAIR lesions brighter than the cortex:
``--lesion-mask-pattern 0 1``; 18-30 min per case on one thread of this VM).

This script scores both on each labelled case that has SAMSEG's output, with the same metrics
and lesion rules as ``python -m ai evaluate`` (lesions >= 3 voxels and >= 10 mm3, 26-connected;
the model with the node's defaults):

- the model: the fold file that never saw the case (``ai/weights/folds``: fold A for patient19,
  with no 3D brain in its training; fold A' for patient19 as well, its brain seen and its lesions
  never; folds B and C for the clinical patients);
- SAMSEG: its label 99 (lesion), resampled (nearest) onto the FLAIR grid.

    .venv/bin/python bench/samseg_lesions.py [--samseg runs/samseg_lesion] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMSEG_LESION = 99


def samseg_lesion_mask(seg_path: Path, flair):
    """SAMSEG's lesion label on the FLAIR grid (boolean z, y, x)."""
    import SimpleITK as sitk

    from ai import preprocess as pp

    on = pp.resample(sitk.ReadImage(str(seg_path), sitk.sitkInt16), flair, sitk.sitkNearestNeighbor)
    return sitk.GetArrayFromImage(on) == SAMSEG_LESION


def run(samseg: Path) -> dict:
    from ai.crossval import FOLDS
    from ai.evaluate import case_metrics, load_case
    from ai.infer import Segmenter
    from ai.types import THIN_SLICE_GROW

    folds = ROOT / "ai" / "weights" / "folds"
    jobs = [(d, ["A", "A_prime"]) for d in FOLDS["A"]] + [(d, [f]) for f in ("B", "C") for d in FOLDS[f]]
    segs: dict = {}
    rows: dict = {}
    keys = ("dice", "lesion_sensitivity", "lesion_ppv", "lesion_f1", "fp", "n_ref", "n_pred")
    for d, fold_names in jobs:
        seg_path = samseg / d.name / "seg.nii.gz"
        if not seg_path.exists():
            print(f"{d.name}: no SAMSEG lesion output at {seg_path} (ai/recipes/samseg_lesions.sh); skipped")
            continue
        flair, t1, ref = load_case(d)
        sp = flair.GetSpacing()[::-1]
        sam = samseg_lesion_mask(seg_path, flair)
        row = {"samseg": {k: case_metrics(sam.astype(np.float32), ref, sp, 0.5, by_size=True)[k]
                          for k in (*keys, "by_size")}}
        for f in fold_names:
            s = segs.setdefault(f, Segmenter(folds / f"fold{f}.pt"))
            res = s.segment(flair, t1)
            m = case_metrics(res.probability, ref, sp, 0.5, grow=THIN_SLICE_GROW)
            row[f"model_fold_{f}"] = {k: m[k] for k in (*keys, "by_size")}
        rows[d.name] = row
        for name, m in row.items():
            print(f"{d.name:14s} {name:18s} Dice {m['dice']:.3f}  F1 {m['lesion_f1']:.3f}  sensitivity "
                  f"{m['lesion_sensitivity']:.2f}  PPV {m['lesion_ppv']:.2f}  false {m['fp']} of {m['n_pred']} "
                  f"({m['n_ref']} reference)", flush=True)
    clin = [c for c in rows if c != "patient19"]
    summary: dict = {}
    if clin:
        for name in ("samseg", "model"):
            ms = [rows[c]["samseg"] if name == "samseg" else next(v for k, v in rows[c].items()
                                                                  if k.startswith("model")) for c in clin]
            summary[f"clinical_{name}"] = {
                "n": len(ms), "dice": float(np.mean([m["dice"] for m in ms])),
                "lesion_f1": float(np.mean([m["lesion_f1"] for m in ms])),
                "worst_fp_per_true": float(max(m["fp"] / max(m["n_ref"], 1) for m in ms))}
            s = summary[f"clinical_{name}"]
            print(f"clinical mean over {s['n']}, {name:6s}: Dice {s['dice']:.3f}  F1 {s['lesion_f1']:.3f}  "
                  f"worst false per true {s['worst_fp_per_true']:.2f}")
    return {"cases": rows, "summary": summary}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samseg", type=Path, default=ROOT / "runs" / "samseg_lesion")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    res = run(a.samseg)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
