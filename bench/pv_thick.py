"""The periventricular class on thick-slice series against manual ventricles (variant pv20;
research script).

On the 10 clinical patients (6-8 mm axial 2D FLAIR) the predicted lateral ventricles are thinner
than the manual ones, and lesions the manual ventricles make periventricular are called
otherwise. This script segments each patient once with the fold file that never saw it (node
defaults), then classes the same predicted lesions (``ai.lesions.analyse``) with:

- the manual ventricle mask and the rule's 3 mm (the truth: the rule's own definition);
- the predicted ventricle map cut at each ``--cuts`` value and each ``--pv-mm`` distance (the
  node: 0.5 and 3 mm).

and reports per variant Cohen's kappa of "periventricular or not" over the predicted lesions,
the false and missed periventricular calls, and how often the study's dissemination in space
agrees with that under the manual ventricles; then the cross-fold selection of the rule below.

    python bench/pv_thick.py [--json runs/pv/pv.json]

The rule was written before anything was computed (model card, "Variant pv20").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai import preprocess as pp  # noqa: E402
from ai.evaluate import load_study, mask_on_flair  # noqa: E402
from ai.infer import Segmenter, _dark_ventricles, _drop_small  # noqa: E402
from ai.lesions import analyse, is_thin_slice  # noqa: E402
from ai.model import OUTPUTS  # noqa: E402

FOLD_W = ROOT / "ai" / "weights" / "folds"
SHIPPED = (0.5, 3.0)


def ventricles_at(seg: Segmenter, prep: pp.Prepared, out: np.ndarray, cut: float) -> np.ndarray:
    """The node's ventricle map (:meth:`ai.infer.Segmenter.to_source`) with the model channel cut
    at ``cut`` instead of 0.5, on the source grid."""
    brain_g = seg.brain_mask(out[1], prep.grid.GetSpacing())
    vox = float(np.prod(prep.grid.GetSpacing()))
    v = _drop_small(out[OUTPUTS.index("ventricles")] >= cut, 300.0 / vox)
    if v.sum() * vox < 5000.0 and brain_g.sum() * vox > 200_000:
        v |= _dark_ventricles(prep.flair, brain_g, prep.grid.GetSpacing(), 300.0 / vox)
    return prep.to_source(v.astype(np.float32)) >= 0.5


def kappa(truth: list[bool], called: list[bool]) -> float:
    """Cohen's kappa of two binary ratings."""
    t, c = np.asarray(truth, bool), np.asarray(called, bool)
    if t.size == 0:
        return float("nan")
    po = float((t == c).mean())
    pe = float(t.mean() * c.mean() + (1 - t.mean()) * (1 - c.mean()))
    return 1.0 if pe == 1.0 else (po - pe) / (1.0 - pe)


def collect(cuts: list[float], pv_mms: list[float]) -> dict:
    """Per patient: the truth and every variant's call for each predicted lesion, and DIS."""
    from ai.crossval import FOLDS

    cases: dict = {}
    for fold in ("B", "C"):
        seg = Segmenter(FOLD_W / f"fold{fold}.pt", device="cpu")
        for d in FOLDS[fold]:
            if not (d / "ventricle_mask.nii.gz").exists():
                continue
            flair, t1 = load_study(d)
            if is_thin_slice(flair.GetSpacing()):
                continue
            prep = pp.prepare(flair, t1)
            out = seg.predict_grid(prep)
            prob, anatomy = seg.to_source(prep, out)
            true_vent = mask_on_flair(d / "ventricle_mask.nii.gz", flair)
            _, les_t, sum_t = analyse(prob, prep.source, {**anatomy, "ventricles": true_vent})
            c = {"fold": fold, "truth": [x.location == "periventricular" for x in les_t],
                 "dis_truth": bool(sum_t.dis_met), "variants": {}}
            for cut in cuts:
                vent = ventricles_at(seg, prep, out, cut)
                for pv in pv_mms:
                    _, les, summ = analyse(prob, prep.source, {**anatomy, "ventricles": vent}, pv_mm=pv)
                    assert [x.id for x in les] == [x.id for x in les_t]
                    c["variants"][f"{cut}/{pv}"] = {
                        "called": [x.location == "periventricular" for x in les], "dis": bool(summ.dis_met)}
            cases[d.name] = c
            print(f"{d.name} (fold {fold}): {len(les_t)} lesions, {sum(c['truth'])} periventricular by the "
                  f"manual ventricles; shipped calls {sum(c['variants']['0.5/3.0']['called'])}", flush=True)
    return cases


def score(cases: dict, names: list[str], variant: str) -> dict:
    truth = [t for n in names for t in cases[n]["truth"]]
    called = [x for n in names for x in cases[n]["variants"][variant]["called"]]
    t, c = np.asarray(truth, bool), np.asarray(called, bool)
    return {"kappa": kappa(truth, called), "n": int(t.size), "pv_true": int(t.sum()), "hit": int((t & c).sum()),
            "missed": int((t & ~c).sum()), "false": int((~t & c).sum()), "not_pv": int((~t).sum()),
            "dis_agree": sum(cases[n]["variants"][variant]["dis"] == cases[n]["dis_truth"] for n in names)}


def _key(v: str) -> tuple:
    cut, pv = map(float, v.split("/"))
    return (-cut, pv)  # ties: the higher cut, then the smaller distance


def choose(cases: dict, names: list[str]) -> str:
    """The variant with the best kappa on ``names`` (``max`` keeps the first of a tie, in
    :func:`_key` order)."""
    variants = sorted(next(iter(cases.values()))["variants"], key=_key)
    return max(variants, key=lambda v: score(cases, names, v)["kappa"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuts", default="0.5,0.4,0.3,0.2")
    ap.add_argument("--pv-mm", default="3,4,5")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    cases = collect([float(v) for v in a.cuts.split(",")], [float(v) for v in a.pv_mm.split(",")])
    if not cases:
        print("no clinical case with a ventricle mask found (../shared/data/ms/clinical2d)", file=sys.stderr)
        return 2
    folds = {f: sorted(n for n, c in cases.items() if c["fold"] == f) for f in ("B", "C")}
    shipped = f"{SHIPPED[0]}/{SHIPPED[1]}"
    res: dict = {"cases": cases, "all": {}, "cross": {}}
    for v in sorted(next(iter(cases.values()))["variants"], key=_key):
        res["all"][v] = score(cases, sorted(cases), v)
        s = res["all"][v]
        print(f"{v:>9}: kappa {s['kappa']:.3f}  periventricular {s['hit']}/{s['pv_true']} called, "
              f"{s['false']}/{s['not_pv']} false; DIS agrees on {s['dis_agree']}/{len(cases)}")
    for tune, test in (("B", "C"), ("C", "B")):
        v = choose(cases, folds[tune])
        res["cross"][f"{tune}->{test}"] = {"chosen": v, "held_out": score(cases, folds[test], v),
                                           "shipped_held_out": score(cases, folds[test], shipped)}
        h, s = res["cross"][f"{tune}->{test}"]["held_out"], res["cross"][f"{tune}->{test}"]["shipped_held_out"]
        print(f"chosen on {tune}: {v}; on {test}: kappa {h['kappa']:.3f} (shipped {s['kappa']:.3f})")
    best = choose(cases, sorted(cases))
    b, s = res["all"][best], res["all"][shipped]
    rules = {"1_each_half_gains_0.05": all(c["held_out"]["kappa"] >= c["shipped_held_out"]["kappa"] + 0.05
                                          for c in res["cross"].values()),
             "2_false_pv_at_most_3pct": b["false"] <= 0.03 * b["not_pv"],
             "3_dis_agreement_kept": b["dis_agree"] >= s["dis_agree"]}
    res.update(best_on_all=best, rules=rules, adopt=all(rules.values()))
    print(f"best on all 10: {best}; rules {rules}; adopt: {res['adopt']}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
