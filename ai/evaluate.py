"""Evaluation of the shipped model on a folder of labelled cases.

``python -m ai evaluate CASES_DIR --json OUT.json [--plots DIR]``

CASES_DIR holds one folder per case with ``FLAIR.nii.gz``, optional ``T1.nii.gz``,
``lesion_mask.nii.gz`` and (phantoms) optional ``lesion_location.nii.gz`` (1..4 = index into
:data:`ai.types.LOCATIONS` + 1, the true location class of each lesion voxel).

Metrics per case: voxel Dice; lesion-wise sensitivity, PPV and F1 with overlap-based matching (a
reference lesion is detected when any predicted lesion voxel overlaps it; a predicted lesion is a
true positive when it overlaps any reference lesion); reference and predicted volume, absolute
and relative volume difference. Reference lesions use the same component rule as predictions
(26-connectivity, >= 3 voxels and >= 10 mm3). ``overall`` holds the means over cases (``dice``,
``lesion_f1``, ...) and pooled lesion counts. When the case is the real case that training held
part of out (recorded in the weights), the same metrics restricted to the held-out part are
reported under ``holdout``.

Each case also records its ``site`` (3D 1 mm or clinical 2D, from its voxel size), whether the
weights were trained on it (``trained_on``, from the weights' recorded training cases), its false
lesions per true lesion (``fp_per_true_lesion``) and, where a ``ventricle_mask.nii.gz`` exists (the
clinical 2D cases), the Dice of the predicted ventricles against it. ``unseen`` averages only the
cases the weights never trained on, overall and per site: those are the figures to quote.
``location_shares`` counts predicted and reference lesions per location class (reference lesions
classed by the same rules on the predicted anatomy, with the manual ventricles where present);
``periventricular_check`` compares, for each predicted lesion, the periventricular call made with
the predicted ventricles against the same rule applied to the manual ventricles.
``by_size`` splits the lesion detection by reference lesion volume (10-20, 20-50, 50-200, >= 200
mm3): lesions found, lesions the model does not see at all, and false lesions of that size.
``--baseline`` adds the same lesion metrics for a trivial FLAIR threshold
(:func:`baseline_probability`), so that every report shows how far above it the model is.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ai import preprocess as pp
from ai.infer import Segmenter
from ai.lesions import classify, components, lesion_mask
from ai.types import LOCATIONS, THIN_SLICE_GROW

log = logging.getLogger(__name__)
#: the trivial baseline (:func:`baseline_probability`)
BASELINE_SD = 2.0
BASELINE_ERODE_MM = 20.0
THRESHOLDS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
#: lesion size bins (mm3, lower edges) of the per-size detection counts (:func:`detection_by_size`)
SIZE_BINS_MM3 = (10.0, 20.0, 50.0, 200.0)
#: a reference lesion whose maximum probability stays below this is "not seen" by the model
NOT_SEEN_P = 0.1


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def overlap_hits(pred_lab: np.ndarray, ref_lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reference lesion ids a predicted lesion overlaps, predicted lesion ids that overlap a
    reference lesion), each sorted and without 0."""
    both = (pred_lab > 0) & (ref_lab > 0)
    return np.unique(ref_lab[both]), np.unique(pred_lab[both])


def lesion_match(pred_lab: np.ndarray, n_pred: int, ref_lab: np.ndarray, n_ref: int) -> dict:
    """Overlap-based lesion detection counts and sensitivity/PPV/F1."""
    ref_hit, pred_hit = overlap_hits(pred_lab, ref_lab)
    tp_ref, tp_pred = int(len(ref_hit)), int(len(pred_hit))
    sens = tp_ref / n_ref if n_ref else 1.0
    ppv = tp_pred / n_pred if n_pred else (1.0 if n_ref == 0 else 0.0)
    f1 = 2 * sens * ppv / (sens + ppv) if (sens + ppv) else 0.0
    return {"n_ref": n_ref, "n_pred": n_pred, "tp_ref": tp_ref, "tp_pred": tp_pred, "fp": n_pred - tp_pred,
            "lesion_sensitivity": sens, "lesion_ppv": ppv, "lesion_f1": f1}


def detection_by_size(prob: np.ndarray, pred_lab: np.ndarray, n_pred: int, ref_lab: np.ndarray, n_ref: int,
                      voxel_mm3: float) -> list[dict]:
    """Lesion detection per size bin (:data:`SIZE_BINS_MM3`): per bin the reference lesions of that
    volume (``n_ref``), how many a predicted lesion overlaps (``found``), how many the model does
    not see at all (maximum probability < :data:`NOT_SEEN_P`, ``not_seen``), and the predicted
    lesions of that volume that overlap no reference lesion (``false``)."""
    edges = list(SIZE_BINS_MM3) + [np.inf]
    rvol = np.bincount(ref_lab.ravel(), minlength=n_ref + 1)[1:] * voxel_mm3
    pvol = np.bincount(pred_lab.ravel(), minlength=n_pred + 1)[1:] * voxel_mm3
    ref_hit, pred_hit = overlap_hits(pred_lab, ref_lab)
    ref_found = np.zeros(n_ref + 1, bool)
    ref_found[ref_hit] = True
    pred_true = np.zeros(n_pred + 1, bool)
    pred_true[pred_hit] = True
    rmax = np.zeros(n_ref + 1, np.float32)
    if n_ref:
        rmax[1:] = ndi.maximum(prob, ref_lab, np.arange(1, n_ref + 1))
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        r = np.flatnonzero((rvol >= lo) & (rvol < hi)) + 1
        q = np.flatnonzero((pvol >= lo) & (pvol < hi)) + 1
        out.append({"min_mm3": lo, "max_mm3": None if np.isinf(hi) else hi, "n_ref": int(len(r)),
                    "found": int(ref_found[r].sum()), "not_seen": int((rmax[r] < NOT_SEEN_P).sum()),
                    "false": int((~pred_true[q]).sum())})
    return out


def pool_by_size(per_case: list[list[dict]]) -> list[dict]:
    """Sum :func:`detection_by_size` lists of several cases bin by bin."""
    if not per_case:
        return []
    return [dict(b, **{k: int(sum(c[i][k] for c in per_case)) for k in ("n_ref", "found", "not_seen", "false")})
            for i, b in enumerate(per_case[0])]


def format_by_size(bins: list[dict]) -> str:
    """One line a person reads: per size bin, found / reference lesions, not seen, false."""
    parts = [f"{b['min_mm3']:g}-{b['max_mm3']:g}" if b["max_mm3"] is not None else f">={b['min_mm3']:g}"
             for b in bins]
    return "by size (mm3): " + "; ".join(f"{r} found {b['found']}/{b['n_ref']}, not seen {b['not_seen']}, "
                                         f"false {b['false']}" for r, b in zip(parts, bins, strict=True))


def case_metrics(prob: np.ndarray, ref: np.ndarray, spacing_zyx, threshold: float, min_voxels: int = 3,
                 min_volume_mm3: float = 10.0, region: np.ndarray | None = None,
                 grow: float | None = None, by_size: bool = True) -> dict:
    """All metrics for one case (optionally restricted to ``region``); the prediction is
    :func:`ai.lesions.lesion_mask` (``grow`` None: the plain threshold, as the curves use);
    ``by_size`` adds the detection per lesion volume (:func:`detection_by_size`)."""
    pred = lesion_mask(prob, spacing_zyx, threshold, grow)
    if region is not None:
        pred, ref = pred & region, ref & region
    pl, npred = components(pred, spacing_zyx, min_voxels, min_volume_mm3)
    rl, nref = components(ref, spacing_zyx, min_voxels, min_volume_mm3)
    vox = float(np.prod(spacing_zyx))
    pm, rm = pl > 0, rl > 0
    vp, vr = pm.sum() * vox / 1000.0, rm.sum() * vox / 1000.0
    out = {"dice": dice(pm, rm), "ref_volume_ml": vr, "pred_volume_ml": vp, "abs_volume_diff_ml": abs(vp - vr),
           "rel_volume_diff": (vp - vr) / vr if vr else None}
    out.update(lesion_match(pl, npred, rl, nref))
    out["fp_per_true_lesion"] = out["fp"] / max(nref, 1)
    if by_size:
        out["by_size"] = detection_by_size(prob, pl, npred, rl, nref, vox)
    return out


def _curves(prob, ref, brain, spacing_zyx, region=None) -> dict:
    """ROC (voxel, inside the brain) and FROC (lesion sensitivity vs false-positive lesions)."""
    if region is not None:
        brain = brain & region
    p, r = prob[brain], ref[brain]
    pos, neg = max(int(r.sum()), 1), max(int((~r).sum()), 1)
    roc, froc = [], []
    for t in THRESHOLDS:
        pr = p >= t
        roc.append({"threshold": t, "tpr": float((pr & r).sum() / pos), "fpr": float((pr & ~r).sum() / neg)})
        m = case_metrics(prob, ref, spacing_zyx, t, region=region, by_size=False)
        froc.append({"threshold": t, "sensitivity": m["lesion_sensitivity"], "fp": m["fp"], "dice": m["dice"]})
    return {"roc": roc, "froc": froc}


def trained_cases(train_config: dict) -> set[str]:
    """The real case names a training config says the weights were trained on (weights from
    before ``trained_on`` was recorded: their one real case)."""
    names = set(train_config.get("trained_on") or [])
    if not names and train_config.get("real_case"):
        names = {Path(train_config["real_case"]).name}
    return names


def baseline_probability(flair: np.ndarray, spacing_zyx, sd: float = BASELINE_SD,
                         erode_mm: float = BASELINE_ERODE_MM) -> np.ndarray:
    """The trivial FLAIR-threshold answer (``--baseline``), as a 0/1 map on the FLAIR's grid.

    Inside the head (Otsu foreground, holes filled per slice) eroded in-plane by ``erode_mm``
    (which takes off scalp and skull on raw images), a voxel is lesion when its FLAIR exceeds
    the median of that region by ``sd`` robust standard deviations (1.4826 x MAD). No training,
    no anatomy. The two constants were picked as the best of 2 x 3 settings on three clinical 2D
    cases, i.e. in the baseline's favour.
    """
    from ai.infer import fill_holes_per_slice

    a = np.asarray(flair, np.float32)
    head = fill_holes_per_slice(pp.foreground_mask(a))
    r = [max(1, int(round(erode_mm / s))) for s in spacing_zyx[1:]]
    inner = np.zeros_like(head)
    st = np.ones((2 * r[0] + 1, 2 * r[1] + 1), bool)
    for z in range(a.shape[0]):
        if head[z].any():
            inner[z] = ndi.binary_erosion(head[z], st)
    if not inner.any():
        return np.zeros(a.shape, np.float32)
    v = a[inner]
    med = float(np.median(v))
    return (inner & (a > med + sd * 1.4826 * float(np.median(np.abs(v - med))))).astype(np.float32)


def _site(case_dir: Path) -> str:
    """Which site a case belongs to, for per-site figures: its voxel size says it."""
    from ai.data import SITE_2D, SITE_3D

    img = sitk.ReadImage(str(case_dir / "FLAIR.nii.gz"))
    return SITE_2D if max(img.GetSpacing()) > 2.0 else SITE_3D


def _mean_over(results: dict, names: list[str], keys=("dice", "lesion_sensitivity", "lesion_ppv", "lesion_f1",
                                                      "fp_per_true_lesion")) -> dict:
    out: dict = {"n_cases": len(names), "cases": names}
    for k in keys:
        vals = [results[c][k] for c in names if results[c].get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else None
    if names and "fp_per_true_lesion" in keys:
        out["max_fp_per_true_lesion"] = float(max(results[c]["fp_per_true_lesion"] for c in names))
    return out


def load_study(case_dir: Path) -> tuple[sitk.Image, sitk.Image | None]:
    """A case folder's FLAIR and its T1 (None when absent), float32."""
    flair = sitk.ReadImage(str(case_dir / "FLAIR.nii.gz"), sitk.sitkFloat32)
    t1p = case_dir / "T1.nii.gz"
    return flair, sitk.ReadImage(str(t1p), sitk.sitkFloat32) if t1p.exists() else None


def mask_on_flair(path: Path, flair: sitk.Image) -> np.ndarray:
    """A label mask file on the FLAIR grid (nearest; boolean z, y, x)."""
    return sitk.GetArrayFromImage(pp.resample(sitk.ReadImage(str(path), sitk.sitkUInt8), flair,
                                              sitk.sitkNearestNeighbor)) > 0


def load_case(case_dir: Path) -> tuple[sitk.Image, sitk.Image | None, np.ndarray]:
    """A labelled case folder's FLAIR, its T1 (None when absent) and its reference lesion mask on
    the FLAIR grid (:func:`mask_on_flair`)."""
    flair, t1 = load_study(case_dir)
    return flair, t1, mask_on_flair(case_dir / "lesion_mask.nii.gz", flair)


def evaluate(cases_dir: Path, weights=None, plots: Path | None = None, threshold: float = 0.5,
             device: str = "auto", tta: bool = True, bf16: bool | None = None, baseline: bool = False,
             only: set[str] | None = None, grow: float | None = THIN_SLICE_GROW) -> dict:
    """Run the model on every case folder of ``cases_dir`` and return the metrics (module doc).

    ``tta`` and ``bf16`` are :class:`ai.infer.Segmenter`'s (defaults: the node's); ``baseline``
    adds the same metrics for :func:`baseline_probability`; ``only`` restricts to these case names;
    ``grow`` is the node's thin-slice rule (:func:`ai.lesions.lesion_mask`; None: the plain cut)."""
    cases = sorted(d for d in Path(cases_dir).iterdir() if (d / "FLAIR.nii.gz").exists()
                   and (d / "lesion_mask.nii.gz").exists() and (only is None or d.name in only))
    if not cases:
        raise SystemExit(f"no cases (FLAIR.nii.gz + lesion_mask.nii.gz) under {cases_dir}")
    return evaluate_cases(cases, weights=weights, plots=plots, threshold=threshold, device=device, tta=tta,
                          bf16=bf16, baseline=baseline, grow=grow)


def evaluate_cases(cases: list[Path], weights=None, plots: Path | None = None, threshold: float = 0.5,
                   device: str = "auto", tta: bool = True, bf16: bool | None = None,
                   baseline: bool = False, grow: float | None = THIN_SLICE_GROW) -> dict:
    """:func:`evaluate` on an explicit list of case folders (they may lie in several folders)."""
    seg = Segmenter(weights, device=device, tta=tta, bf16=bf16)
    cfg = seg.meta.get("train_config", {})
    hold = cfg.get("holdout")
    trained_on = trained_cases(cfg)
    results: dict = {}
    curves: dict = {}
    confusion = np.zeros((len(LOCATIONS), len(LOCATIONS) + 1), int)  # last column: missed
    pv_check = np.zeros((2, 2), int)  # predicted lesions: [periventricular by true ventricles][by predicted]
    shares = {"pred": dict.fromkeys(LOCATIONS, 0), "ref": dict.fromkeys(LOCATIONS, 0)}
    for d in cases:
        flair, t1, ref = load_case(d)
        res, anatomy = seg.segment_with_maps(flair, t1, threshold=threshold, grow=grow)
        prob = res.probability
        sp = flair.GetSpacing()[::-1]
        m = case_metrics(prob, ref, sp, threshold, grow=grow)
        m["site"] = _site(d)
        m["trained_on"] = d.name in trained_on
        m["timings_s"] = res.timings_s
        m["pred_locations"] = res.summary.counts_by_location
        # each predicted lesion: mean and max probability, and whether it overlaps a reference
        # lesion (what the confidence cut in the model card is chosen from)
        hit = np.zeros(len(res.lesions) + 1, bool)
        hit[np.unique(res.labels[ref])] = True
        m["pred_lesions"] = [[les.mean_probability, les.max_probability, bool(hit[les.id])] for les in res.lesions]
        if baseline:
            m["baseline"] = case_metrics(baseline_probability(sitk.GetArrayViewFromImage(flair), sp), ref, sp, 0.5)
        region = None
        if hold and hold.get("case") == d.name:
            from ai.data import physical_grid

            x = physical_grid(flair)[0]
            region = x >= hold["threshold_mm"]
            m["holdout"] = case_metrics(prob, ref, sp, threshold, region=region, grow=grow)
            m["holdout"]["rule"] = hold["rule"]
            m["trained_on"] = False  # what is reported for it is the never-seen part
        brain = anatomy["brain"] | ref
        curves[d.name] = _curves(prob, ref, brain, sp, region)
        m["curves"] = curves[d.name]
        true_vent = None
        if (d / "ventricle_mask.nii.gz").exists():
            true_vent = mask_on_flair(d / "ventricle_mask.nii.gz", flair)
            m["ventricle_dice"] = dice(anatomy["ventricles"], true_vent)
        m["location_check"] = _location_check(res, ref, anatomy, true_vent, sp, region, confusion, pv_check,
                                              shares, d / "lesion_location.nii.gz", flair)
        results[d.name] = m
        if plots:
            _overlay(Path(plots) / f"overlay_{d.name}.png", sitk.GetArrayFromImage(flair), ref, res.labels > 0,
                     anatomy, d.name)
        log.info("%s: dice %.3f lesion F1 %.3f (%d false lesions, %d reference)", d.name, m["dice"],
                 m["lesion_f1"], m["fp"], m["n_ref"])
    keys = ["dice", "lesion_sensitivity", "lesion_ppv", "lesion_f1", "abs_volume_diff_ml"]
    overall: dict[str, Any] = {k: float(np.mean([results[c][k] for c in results])) for k in keys}
    rel = [results[c]["rel_volume_diff"] for c in results if results[c]["rel_volume_diff"] is not None]
    overall["rel_volume_diff"] = float(np.mean(rel)) if rel else None
    overall["n_cases"] = len(results)
    pooled: dict[str, Any] = {k: int(sum(results[c][k] for c in results))
                              for k in ("n_ref", "n_pred", "tp_ref", "tp_pred")}
    s = pooled["tp_ref"] / pooled["n_ref"] if pooled["n_ref"] else 1.0
    p = pooled["tp_pred"] / pooled["n_pred"] if pooled["n_pred"] else 0.0
    pooled["lesion_f1"] = 2 * s * p / (s + p) if s + p else 0.0
    pooled["by_size"] = pool_by_size([results[c]["by_size"] for c in results])
    overall["pooled"] = pooled
    unseen = [c for c in results if not results[c]["trained_on"]]
    by_site: dict = {}
    for c in unseen:
        by_site.setdefault(results[c]["site"], []).append(c)
    out = {"overall": overall, "cases": results, "threshold": threshold, "thin_slice_grow": grow, "tta": seg.tta,
           "precision": seg.precision, "model": seg.model_name,
           "model_version": seg.model_version,
           # the figures that say something about the next patient: cases these weights never saw
           "unseen": {"all": _mean_over(results, unseen),
                      "by_site": {k: _mean_over(results, v) for k, v in sorted(by_site.items())}},
           "location_confusion": {"rows_true": list(LOCATIONS), "cols_pred": list(LOCATIONS) + ["missed"],
                                  "matrix": confusion.tolist()},
           "location_shares": shares,
           "periventricular_check": {
               "rows": "predicted lesion periventricular by the manual ventricle mask: no, yes",
               "cols": "periventricular by the predicted ventricles: no, yes", "matrix": pv_check.tolist()}}
    if baseline:
        bres = {c: results[c]["baseline"] for c in results}
        out["baseline"] = {"rule": f"FLAIR > median + {BASELINE_SD} robust SD inside the head eroded "
                                   f"{BASELINE_ERODE_MM:.0f} mm",
                           "all": _mean_over(bres, list(results)),
                           "unseen": _mean_over(bres, unseen)}
    if plots:
        _plots(Path(plots), curves, confusion)
    return out


def _location_check(res, ref, anatomy, true_vent, sp, region, confusion, pv_check, shares, loc_img: Path,
                    flair) -> dict:
    """Location classes against the reference (updates the running tables, returns this case's).

    - ``confusion``: each reference lesion's class (true class on phantoms; on real cases the same
      rules on the predicted anatomy, with the manual ventricles where they exist) against the
      class of the predicted lesion overlapping it;
    - ``pv_check``: each predicted lesion, periventricular by the manual ventricle mask vs by the
      predicted ventricles (cases with ``ventricle_mask.nii.gz``);
    - ``shares``: predicted lesions per class vs reference lesions per class.
    """
    rl, nref = components(ref, sp)
    locvol = (sitk.GetArrayFromImage(pp.resample(sitk.ReadImage(str(loc_img)), flair, sitk.sitkNearestNeighbor))
              if loc_img.exists() else None)
    ref_anat = dict(anatomy) if true_vent is None else {**anatomy, "ventricles": true_vent}
    pred_loc = {les.id: les.location for les in res.lesions}
    case = {"pred": dict.fromkeys(LOCATIONS, 0), "ref": dict.fromkeys(LOCATIONS, 0)}
    for i, bb in enumerate(ndi.find_objects(rl), start=1):
        if bb is None:
            continue
        comp = rl[bb] == i
        if region is not None and not region[bb][comp].any():
            continue
        if locvol is not None and (locvol[bb][comp] > 0).any():
            true = LOCATIONS[int(np.bincount(locvol[bb][comp][locvol[bb][comp] > 0]).argmax()) - 1]
        else:
            true = _class_of(rl, i, bb, ref_anat, sp)
        case["ref"][true] += 1
        hits = res.labels[bb][comp]
        hits = hits[hits > 0]
        col = len(LOCATIONS) if hits.size == 0 else LOCATIONS.index(pred_loc[int(np.bincount(hits).argmax())])
        confusion[LOCATIONS.index(true), col] += 1
    objs = ndi.find_objects(res.labels)
    for les in res.lesions:
        bb = objs[les.id - 1]
        if bb is None or (region is not None and not region[bb][res.labels[bb] == les.id].any()):
            continue
        case["pred"][les.location] += 1
        if true_vent is not None:
            by_true = _class_of(res.labels, les.id, bb, {**anatomy, "ventricles": true_vent}, sp) == "periventricular"
            pv_check[int(by_true), int(les.location == "periventricular")] += 1
    for k in ("pred", "ref"):
        for loc, n in case[k].items():
            shares[k][loc] += n
    return case


def _class_of(lab: np.ndarray, i: int, bb, anatomy: dict, sp) -> str:
    """:func:`ai.lesions.classify` of component ``i`` of ``lab`` with a margin around its box."""
    big = tuple(slice(max(0, b.start - 6), b.stop + 6) for b in bb)
    return classify(lab[big] == i, {k: v[big] for k, v in anatomy.items()}, sp)


def _overlay(path: Path, img: np.ndarray, ref: np.ndarray, pred: np.ndarray, anatomy: dict, name: str) -> None:
    """Four slices (most reference lesion) with reference (green), prediction (red) and the
    predicted ventricles (blue), cortex (yellow) and infratentorial region (magenta)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    per = (ref | pred).sum((1, 2))
    order = np.argsort(per)[::-1]
    zs = sorted(set([int(order[0]), int(order[min(len(order) - 1, 5)])]
                    + [int(v) for v in np.linspace(img.shape[0] * 0.25, img.shape[0] * 0.75, 2)]))
    fig, ax = plt.subplots(1, len(zs), figsize=(4.2 * len(zs), 4.6))
    vmax = np.percentile(img, 99.5)
    for a, z in zip(np.atleast_1d(ax), zs, strict=False):
        a.imshow(img[z], cmap="gray", vmin=0, vmax=vmax)
        for m, c in ((anatomy.get("brain"), "c"), (anatomy.get("ventricles"), "b"), (anatomy.get("cortex"), "y"),
                     (anatomy.get("infratentorial"), "m"), (ref, "lime"), (pred, "r")):
            if m is not None and m[z].any():
                a.contour(m[z].astype(float), [0.5], colors=c, linewidths=0.8)
        a.set_title(f"{name} slice {z}", fontsize=9)
        a.axis("off")
    fig.suptitle("green: reference, red: model; cyan brain, blue ventricles, yellow cortex, magenta infratentorial",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def _plots(out: Path, curves: dict, confusion: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, c in curves.items():
        ax[0].plot([r["fpr"] for r in c["roc"]], [r["tpr"] for r in c["roc"]], ".-", label=name)
        ax[1].plot([r["fp"] for r in c["froc"]], [r["sensitivity"] for r in c["froc"]], ".-", label=name)
        for r in c["froc"]:
            if r["threshold"] in (0.1, 0.5, 0.9):
                ax[1].annotate(f"{r['threshold']}", (r["fp"], r["sensitivity"]), fontsize=7)
    ax[0].set_xscale("log")
    ax[0].set_xlabel("voxel false-positive rate (inside brain, log)")
    ax[0].set_ylabel("voxel true-positive rate")
    ax[0].set_title("ROC over thresholds 0.05-0.95")
    ax[1].set_xlabel("false-positive lesions per case")
    ax[1].set_ylabel("lesion sensitivity")
    ax[1].set_title("FROC (labels: threshold)")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "roc_froc.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.imshow(confusion, cmap="Blues")
    for i in range(confusion.shape[0]):
        for j in range(confusion.shape[1]):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center")
    ax.set_xticks(range(confusion.shape[1]), [c[:12] for c in list(LOCATIONS) + ["missed"]], rotation=30)
    ax.set_yticks(range(confusion.shape[0]), [c[:12] for c in LOCATIONS])
    ax.set_xlabel("predicted lesion location")
    ax.set_ylabel("reference lesion location")
    ax.set_title("Location classes (reference lesions)")
    fig.tight_layout()
    fig.savefig(out / "location_confusion.png", dpi=90)
    plt.close(fig)
