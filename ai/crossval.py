"""Cross-patient validation: folds of whole patients, each evaluated by weights that never saw it.

``python -m ai crossval --weights A=runs/cvA.pt,B=runs/cvB.pt,C=runs/cvC.pt --json OUT.json``

The labelled patients are split into :data:`FOLDS`; the weights of fold ``K`` are trained with
``python -m ai train --hold-out`` the cases of ``K`` (:func:`train_command` prints the exact
command) and evaluated here on those cases only. A held-out 3D patient takes its real-mask
synthetic variants with it (they are its brain), so no fold ever sees any part of a brain it is
scored on. The report pools the per-case metrics of all folds and gives them per site (3D 1 mm
vs clinical 2D), with the false lesions per true lesion of every case and the trivial
FLAIR-threshold baseline on the same cases.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ai.data import CLINICAL2D, REAL_CASE
from ai.evaluate import _mean_over, evaluate_cases, format_by_size, pool_by_size, trained_cases
from ai.lesions import LOW_CONFIDENCE
from ai.types import THIN_SLICE_GROW

log = logging.getLogger(__name__)

#: fold name -> held-out case folders (patient19 alone: the only 3D case; the 10 clinical 2D
#: cases in two halves by name)
FOLDS: dict[str, list[Path]] = {
    "A": [REAL_CASE],
    "B": [CLINICAL2D / n for n in ("tabriz101228", "tabriz101627", "tabriz102313", "tabriz104670",
                                   "tabriz104899")],
    "C": [CLINICAL2D / n for n in ("tabriz106639", "tabriz107130", "tabriz110218", "tabriz111008",
                                   "tabriz112776")],
}


def trained_on(weights: Path) -> set[str]:
    """The real case names the weights were trained on (from their recorded training config)."""
    import torch

    cfg = torch.load(weights, map_location="cpu", weights_only=False).get("meta", {}).get("train_config", {})
    return trained_cases(cfg)


def train_command(fold: str, out: str, extra: str = "") -> str:
    """The training command of one fold (what the model card lists)."""
    names = ",".join(p.name for p in FOLDS[fold])
    return f"python -m ai train --out {out} --hold-out {names} {extra}".strip()


def crossval(weights: dict[str, Path], threshold: float = 0.5, tta: bool = True, bf16: bool | None = None,
             device: str = "auto", grow: float | None = THIN_SLICE_GROW) -> dict:
    """Evaluate each fold's weights on its held-out cases and pool the results (module doc)."""
    cases: dict = {}
    folds: dict = {}
    for fold, w in sorted(weights.items()):
        dirs = [d for d in FOLDS[fold] if (d / "lesion_mask.nii.gz").exists()]
        if not dirs:
            log.warning("fold %s: none of its cases is present, skipped", fold)
            continue
        seen = sorted(trained_on(w) & {d.name for d in dirs})
        if seen:
            raise SystemExit(f"fold {fold}: weights {w} were trained on {seen}: not a held-out fold")
        res = evaluate_cases(dirs, weights=w, threshold=threshold, device=device, tta=tta, bf16=bf16,
                             baseline=True, grow=grow)
        for c, m in res["cases"].items():
            m["fold"] = fold
            cases[c] = m
        folds[fold] = {"weights": str(w), "model_version": res["model_version"], "cases": sorted(res["cases"]),
                       "location_shares": res["location_shares"],
                       "periventricular_check": res["periventricular_check"]}
    by_site: dict = {}
    for c, m in cases.items():
        by_site.setdefault(m["site"], []).append(c)
    base = {c: m["baseline"] for c, m in cases.items()}
    shares = {k: {loc: sum(f["location_shares"][k][loc] for f in folds.values())
                  for loc in next(iter(folds.values()))["location_shares"][k]} for k in ("pred", "ref")} \
        if folds else {}
    pv = np.sum([f["periventricular_check"]["matrix"] for f in folds.values()], axis=0).tolist() if folds else []
    return {"folds": folds, "cases": cases,
            "by_site": {s: _mean_over(cases, sorted(v)) for s, v in sorted(by_site.items())},
            "baseline_by_site": {s: _mean_over(base, sorted(v)) for s, v in sorted(by_site.items())},
            "all": _mean_over(cases, sorted(cases)),
            "location_shares": shares,
            "periventricular_check": {"rows": "by the manual ventricles: not periventricular, periventricular",
                                      "cols": "by the predicted ventricles: no, yes", "matrix": pv},
            "confidence": confidence_table([les for m in cases.values() for les in m["pred_lesions"]]),
            "threshold": threshold, "thin_slice_grow": grow, "tta": tta}


#: mean-probability bins of the confidence table
CONF_EDGES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0001)


def confidence_table(pred_lesions: list, node_cut: float = LOW_CONFIDENCE) -> dict:
    """Predicted lesions ``[mean_p, max_p, true]`` by mean-probability bin: how many, how many
    overlap a reference lesion; the cut below which predicted lesions are more often false than
    true (cumulative PPV under 0.5; 0.0 when there is none); and how many are true below and at
    or above the node's low-confidence cut (:data:`ai.lesions.LOW_CONFIDENCE`), what that flag
    tells a reader."""
    a = np.array([[p[0], float(p[2])] for p in pred_lesions]) if pred_lesions else np.zeros((0, 2))
    rows = []
    for lo, hi in zip(CONF_EDGES[:-1], CONF_EDGES[1:], strict=False):
        rows.append({"mean_probability": [lo, min(hi, 1.0)], **_count(a, (a[:, 0] >= lo) & (a[:, 0] < hi))})
    cut = 0.0
    for e in CONF_EDGES[1:-1]:
        below = a[:, 0] < e
        if below.any() and a[below, 1].mean() < 0.5:
            cut = e
    low = a[:, 0] < node_cut
    return {"bins": rows, "cut_below_which_most_are_false": cut,
            "node_cut": {"cut": node_cut, "below": _count(a, low), "at_or_above": _count(a, ~low)}}


def _count(a: np.ndarray, sel: np.ndarray) -> dict:
    """Of the lesions ``a`` (rows: mean probability, true) selected by ``sel``: how many, how many
    true, and the PPV (None when none)."""
    n, tp = int(sel.sum()), int(a[sel, 1].sum())
    return {"n": n, "true": tp, "ppv": tp / n if n else None}


def _ppv(row: dict) -> str:
    return "-" if row["ppv"] is None else f"{row['ppv']:.2f}"


def print_report(res: dict) -> None:
    """The per-case and per-site table a person reads."""
    print(f"{'case':14} {'fold':4} {'site':34} {'dice':>5} {'sens':>5} {'ppv':>5} {'F1':>5} "
          f"{'false/true':>10} {'base F1':>7}")
    for c, m in sorted(res["cases"].items(), key=lambda kv: (kv[1]["fold"], kv[0])):
        print(f"{c:14} {m['fold']:4} {m['site']:34} {m['dice']:5.3f} {m['lesion_sensitivity']:5.2f} "
              f"{m['lesion_ppv']:5.2f} {m['lesion_f1']:5.3f} {m['fp']:>4}/{m['n_ref']:<5} "
              f"{m['baseline']['lesion_f1']:7.3f}")
    for r in res["confidence"]["bins"]:
        lo, hi = r["mean_probability"]
        print(f"  predicted lesions with mean probability {lo:.1f}-{hi:.1f}: {r['n']:4d}, true {r['true']:4d}, "
              f"PPV {_ppv(r)}")
    cut = res["confidence"]["cut_below_which_most_are_false"]
    print(f"  low-confidence cut (cumulative PPV < 0.5 below it): {cut if cut else 'none'}")
    nc = res["confidence"]["node_cut"]
    print(f"  the node's cut {nc['cut']}: below it {nc['below']['true']} of {nc['below']['n']} true "
          f"(PPV {_ppv(nc['below'])}), at or above {nc['at_or_above']['true']} of {nc['at_or_above']['n']} "
          f"(PPV {_ppv(nc['at_or_above'])})")
    for s, u in res["by_site"].items():
        b = res["baseline_by_site"][s]
        print(f"{s}: {u['n_cases']} cases, mean dice {u['dice']:.3f}, lesion F1 {u['lesion_f1']:.3f}, "
              f"worst false per true lesion {u['max_fp_per_true_lesion']:.2f} | baseline dice {b['dice']:.3f} "
              f"F1 {b['lesion_f1']:.3f}")
        print(f"  lesions {format_by_size(pool_by_size([res['cases'][c]['by_size'] for c in u['cases']]))}")
