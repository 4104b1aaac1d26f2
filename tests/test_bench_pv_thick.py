"""bench/pv_thick.py: the agreement score, the per-variant counts and the cross-fold choice, on
ratings with known answers."""
from __future__ import annotations

import pytest
from bench_script import load

pv = load("pv_thick")


def test_kappa_is_one_for_agreement_zero_for_chance_and_negative_against():
    t = [True, True, False, False]
    assert pv.kappa(t, t) == 1.0
    assert pv.kappa(t, [True, False, True, False]) == pytest.approx(0.0)
    assert pv.kappa(t, [False, False, True, True]) == pytest.approx(-1.0)


def _cases():
    # patient p1: 2 periventricular lesions by the manual ventricles, 2 not; the shipped rule
    # misses one, the wider one finds it and adds a false call, the lower cut finds it cleanly
    truth = [True, True, False, False]
    v = {"0.5/3.0": [True, False, False, False], "0.5/4.0": [True, True, True, False],
         "0.3/3.0": [True, True, False, False]}
    return {"p1": {"fold": "B", "truth": truth, "dis_truth": True,
                   "variants": {k: {"called": c, "dis": True} for k, c in v.items()}},
            "p2": {"fold": "C", "truth": [True, False], "dis_truth": True,
                   "variants": {k: {"called": [True, False], "dis": k != "0.5/4.0"} for k in v}}}


def test_score_counts_hits_misses_false_calls_and_dis_agreement():
    c = _cases()
    s = pv.score(c, ["p1", "p2"], "0.5/4.0")
    assert (s["n"], s["pv_true"], s["hit"], s["missed"], s["false"], s["not_pv"]) == (6, 3, 3, 0, 1, 3)
    assert s["dis_agree"] == 1
    assert pv.score(c, ["p1"], "0.5/3.0")["missed"] == 1


def test_choice_takes_the_best_kappa_and_on_ties_the_higher_cut_then_the_smaller_distance():
    c = _cases()
    assert pv.choose(c, ["p1"]) == "0.3/3.0"
    # on p2 every variant agrees perfectly: the tie goes to the shipped cut and distance
    assert pv.choose(c, ["p2"]) == "0.5/3.0"
