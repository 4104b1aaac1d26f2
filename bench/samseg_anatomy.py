"""The model's anatomy and location classes against SAMSEG's anatomy on the real labelled cases.

    .venv/bin/python bench/samseg_anatomy.py [--samseg runs/samseg] [--weights FOLD=W,...] [--json OUT]
                                             [--figure CASE:PNG] [--contact-mm MM]

SAMSEG labels come from ``ai/recipes/samseg_anatomy.sh`` (a training-time tool in its own
environment; ``runs/samseg/<case>/seg.nii.gz``). Cases without them are skipped with a line.
Every case is segmented with the weights of the fold that never saw it (default: the shipped
fold files, ``ai/weights/folds``; patient19 with fold A', which saw its brain but never its lesion
labels), node defaults.

Per case:

- lateral ventricles: Dice of SAMSEG's (``ai.data.samseg_anatomy``) and of the model's against
  the manual ventricle mask (clinical 2D cases), so SAMSEG's quality on this data is measured
  before it is used as a reference;
- brain: Dice of the model's brain map against SAMSEG's intracranial mask, and the model's brain
  volume outside it (mL: scalp or skull called brain);
- cortex and infratentorial: Dice of the model's maps against SAMSEG's;
- for patient19 also the training pseudo-anatomy (``ai.data.real_case_volume``: heuristics on
  its own images) against SAMSEG on the model grid, channel by channel.

Location classes, pooled over the clinical cases: every predicted lesion classified with the
model's anatomy (what the SR says) and with the reference anatomy (the manual ventricles,
SAMSEG's brain, cortex and infratentorial; the cortex without the manual lesions and a voxel
around them, which SAMSEG without its lesion mode partly labels grey matter), and every manual
reference lesion the same way: how often the model's juxtacortical / periventricular /
infratentorial call is one the reference anatomy makes. Both use the node's rule
(:func:`ai.lesions.classify`); ``--contact-mm`` changes how far apart slices may be and still
touch (:data:`ai.lesions.CONTACT_MM`, 3 mm; 99 gives the 26-neighbour rule used before, under
which a lesion touched what lies 6-8 mm above or below it on the clinical series).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ("periventricular", "juxtacortical", "infratentorial", "deep_white_matter")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    from ai.evaluate import dice

    return round(dice(a, b), 3)


def _on(img_path: Path, ref: sitk.Image) -> np.ndarray:
    """A label image resampled (nearest, physical space) onto ``ref``'s grid, as an array."""
    img = sitk.ReadImage(str(img_path), sitk.sitkInt16)
    return sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                                sitk.sitkInt16))


def _classes(prob: np.ndarray, mask: np.ndarray, flair: sitk.Image, anatomy: dict,
             contact_mm: float | None = None) -> list[str]:
    from ai.lesions import analyse

    return [les.location for les in analyse(prob, flair, anatomy, mask=mask, grow=None, contact_mm=contact_mm)[1]]


def pseudo_vs_samseg(case: Path, seg_path: Path) -> dict:
    """patient19's training pseudo-anatomy against SAMSEG on the model grid (Dice per channel)."""
    from ai import preprocess as pp
    from ai.data import real_case_volume, samseg_anatomy
    from ai.model import OUTPUTS

    vol = real_case_volume(case, holdout=False)
    flair = sitk.ReadImage(str(case / "FLAIR.nii.gz"), sitk.sitkFloat32)
    t1p = case / "T1.nii.gz"
    prep = pp.prepare(flair, sitk.ReadImage(str(t1p), sitk.sitkFloat32) if t1p.exists() else None, register=False)
    ref = samseg_anatomy(_on(seg_path, prep.grid))
    return {k: _dice(vol.labels[OUTPUTS.index(k)] > 0, ref[k]) for k in ref}


def figure(path: Path, flair: sitk.Image, model_anat: dict, ref_anat: dict, title: str) -> None:
    """Four axial slices: brain (model red, SAMSEG cyan) above, cortex (model yellow, SAMSEG
    magenta) below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = sitk.GetArrayFromImage(flair)
    zb = np.flatnonzero(ref_anat["brain"].any((1, 2)))
    lo, hi = (zb[0], zb[-1]) if len(zb) else (0, f.shape[0] - 1)
    zs = lo + np.linspace(0.25, 0.85, 4) * (hi - lo)
    fig, ax = plt.subplots(2, 4, figsize=(16, 9))
    for j, z in enumerate(int(round(v)) for v in zs):
        for i, (k, cm, cr) in enumerate((("brain", "r", "c"), ("cortex", "y", "m"))):
            a = ax[i, j]
            a.imshow(f[z], cmap="gray")
            a.contour(model_anat[k][z], colors=cm, linewidths=0.6)
            a.contour(ref_anat[k][z], colors=cr, linewidths=0.6)
            a.set_title(f"slice {z}: {k}, model {'red' if k == 'brain' else 'yellow'}, "
                        f"SAMSEG {'cyan' if k == 'brain' else 'magenta'}", fontsize=9)
            a.axis("off")
    fig.suptitle(title)
    fig.tight_layout(h_pad=2.0)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def run(samseg: Path, weights: dict[str, Path], figure_case: tuple[str, Path] | None = None,
        contact_mm: float | None = None) -> dict:
    from ai.crossval import FOLDS
    from ai.data import cortex_without_lesions, samseg_anatomy
    from ai.infer import Segmenter

    segs: dict[str, Segmenter] = {}
    out: dict = {"cases": {}, "weights": {k: str(v) for k, v in weights.items()}}
    pred_pairs: Counter = Counter()
    ref_pairs: Counter = Counter()
    for fold, cases in FOLDS.items():
        for case in cases:
            seg_path = samseg / case.name / "seg.nii.gz"
            if not seg_path.exists() or not case.exists():
                print(f"{case.name}: no SAMSEG labels at {seg_path} (ai/recipes/samseg_anatomy.sh); skipped")
                continue
            w = weights["A'" if fold == "A" else fold]
            if fold not in segs:
                segs[fold] = Segmenter(w)
            flair = sitk.ReadImage(str(case / "FLAIR.nii.gz"), sitk.sitkFloat32)
            t1p = case / "T1.nii.gz"
            t1 = sitk.ReadImage(str(t1p), sitk.sitkFloat32) if t1p.exists() else None
            res, model_anat = segs[fold].segment_with_maps(flair, t1)
            ref_anat = samseg_anatomy(_on(seg_path, flair))
            if figure_case is not None and figure_case[0] == case.name:
                figure(figure_case[1], flair, model_anat, ref_anat,
                       f"{case.name}, weights {Path(w).name} (never saw it): anatomy against SAMSEG")
            vp = case / "ventricle_mask.nii.gz"
            manual_vent = _on(vp, flair) > 0 if vp.exists() else None
            vox_ml = float(np.prod(flair.GetSpacing())) / 1000
            row = {
                "fold": fold, "weights": str(w),
                "ventricles_dice_samseg_vs_manual": _dice(ref_anat["ventricles"], manual_vent)
                if manual_vent is not None else None,
                "ventricles_dice_model_vs_manual": _dice(model_anat["ventricles"], manual_vent)
                if manual_vent is not None else None,
                "ventricles_dice_model_vs_samseg": _dice(model_anat["ventricles"], ref_anat["ventricles"]),
                "brain_dice_model_vs_samseg": _dice(model_anat["brain"], ref_anat["brain"]),
                "model_brain_outside_samseg_ml": round(float((model_anat["brain"] & ~ref_anat["brain"]).sum())
                                                       * vox_ml, 1),
                "cortex_dice_model_vs_samseg": _dice(model_anat["cortex"], ref_anat["cortex"]),
                "infratentorial_dice_model_vs_samseg": _dice(model_anat["infratentorial"],
                                                             ref_anat["infratentorial"]),
            }
            if case.name == "patient19":
                row["pseudo_anatomy_dice_vs_samseg"] = pseudo_vs_samseg(case, seg_path)
            else:
                lesion = _on(case / "lesion_mask.nii.gz", flair) > 0
                # the reference cortex leaves the manual lesions and a voxel around them out
                ref_anat = dict(ref_anat, cortex=cortex_without_lesions(ref_anat["cortex"], lesion))
                if manual_vent is not None:
                    ref_anat["ventricles"] = manual_vent  # the manual masks where they exist
                pm = res.labels > 0
                pred = list(zip(_classes(res.probability, pm, flair, model_anat, contact_mm),
                                _classes(res.probability, pm, flair, ref_anat, contact_mm), strict=True))
                les_p = lesion.astype(np.float32)
                refl = list(zip(_classes(les_p, lesion, flair, model_anat, contact_mm),
                                _classes(les_p, lesion, flair, ref_anat, contact_mm), strict=True))
                pred_pairs.update(pred)
                ref_pairs.update(refl)
                row["predicted_lesions"] = len(pred)
                row["reference_lesions"] = len(refl)
            out["cases"][case.name] = row
            print(case.name, json.dumps({k: v for k, v in row.items() if k != "weights"}))
    for name, pairs in (("predicted_lesions", pred_pairs), ("reference_lesions", ref_pairs)):
        out[name] = {"rows": "class by the model's anatomy", "cols": "class by the reference anatomy",
                     "classes": list(CLASSES),
                     "matrix": [[pairs[(a, b)] for b in CLASSES] for a in CLASSES]}
    return out


def _print_matrix(title: str, m: dict) -> None:
    print(f"\n{title}: rows = class by the model's anatomy, columns = by the reference anatomy "
          "(manual ventricles, SAMSEG brain / cortex / infratentorial)")
    short = ("PV", "JC", "IT", "DWM")
    print("       " + " ".join(f"{s:>5}" for s in short) + "   total   agree")
    for s, row in zip(short, m["matrix"], strict=True):
        tot = sum(row)
        agree = row[short.index(s)]
        print(f"  {s:<4} " + " ".join(f"{v:>5}" for v in row) + f"   {tot:>5}   {agree / tot:.2f}" if tot else
              f"  {s:<4} " + " ".join(f"{v:>5}" for v in row) + f"   {tot:>5}      -")
    cols = [sum(r[j] for r in m["matrix"]) for j in range(len(short))]
    print("  all  " + " ".join(f"{v:>5}" for v in cols))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samseg", default=str(ROOT / "runs" / "samseg"))
    ap.add_argument("--weights", default="A'=ai/weights/folds/foldA_prime.pt,B=ai/weights/folds/foldB.pt,"
                                         "C=ai/weights/folds/foldC.pt",
                    help="fold=weights for the folds of ai.crossval.FOLDS (A' for patient19)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--figure", default=None, metavar="CASE:PNG", help="draw one case's brain and cortex maps")
    ap.add_argument("--contact-mm", type=float, default=None,
                    help="the location rule's contact limit between slices (default: the node's, "
                         "ai.lesions.CONTACT_MM; 99: the 26-neighbourhood everywhere)")
    a = ap.parse_args(argv)
    from ai.lesions import CONTACT_MM

    weights = {k: ROOT / v if not Path(v).is_absolute() else Path(v)
               for k, v in (kv.split("=", 1) for kv in a.weights.split(",") if kv)}
    fig = None
    if a.figure:
        case, png = a.figure.split(":", 1)
        fig = (case, Path(png))
    res = run(Path(a.samseg), weights, fig, a.contact_mm)
    res["contact_mm"] = CONTACT_MM if a.contact_mm is None else a.contact_mm
    _print_matrix("predicted lesions (clinical 2D, fold weights)", res["predicted_lesions"])
    _print_matrix("reference lesions (clinical 2D, manual masks)", res["reference_lesions"])
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
