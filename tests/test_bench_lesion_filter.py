"""bench/lesion_filter.py: the per-lesion features and the filter, on arrays with known answers."""
from __future__ import annotations

import numpy as np
import pytest
from bench_script import load

lf = load("lesion_filter")


def _scene():
    """A 1 mm brain block with a ventricle slab, a cortex rim and two cube lesions: one deep and
    1.5x as bright as the tissue, one on the cortex and 1.2x as bright."""
    shape = (40, 60, 60)
    flair = np.full(shape, 100.0)
    brain = np.zeros(shape, bool)
    brain[2:38, 5:55, 5:55] = True
    cortex = brain & ~np.pad(np.ones((36, 46, 46), bool), ((2, 2), (7, 7), (7, 7)))
    vent = np.zeros(shape, bool)
    vent[15:25, 28:32, 20:40] = True
    pl = np.zeros(shape, np.uint16)
    pl[18:22, 40:44, 28:32] = 1  # 64 mm3, 8 mm from the ventricle slab (y 31 -> 40)
    pl[18:21, 7:10, 28:31] = 2   # 27 mm3, on the cortex rim
    flair[pl == 1] = 150.0
    flair[pl == 2] = 120.0
    prob = np.where(pl > 0, 0.8, 0.0)
    anatomy = {"brain": brain, "cortex": cortex, "ventricles": vent}
    return pl, prob, flair, anatomy


def test_features_measure_size_contrast_and_place():
    pl, prob, flair, anatomy = _scene()
    f = dict(zip(lf.FEATURES, lf.lesion_features(pl, 2, prob, flair, None, anatomy, (1.0, 1.0, 1.0)).T,
                 strict=True))
    assert f["log10_volume_mm3"] == pytest.approx(np.log10([64, 27]))
    assert f["flair_contrast"] == pytest.approx([1.5, 1.2])
    assert f["t1_contrast"] == pytest.approx([1.0, 1.0])  # no T1: neutral
    assert f["mean_prob"] == pytest.approx([0.8, 0.8])
    assert f["cortex_contact"][0] == 0.0 and f["cortex_contact"][1] == pytest.approx(9 / 81)  # one face of its shell
    assert f["ventricle_mm"][0] == pytest.approx(9.0)
    assert f["depth_mm"][0] > f["depth_mm"][1]
    assert f["elongation"] == pytest.approx([1.0, 1.0])  # square in-plane


def test_filter_drops_what_the_features_call_false():
    pl, prob, flair, anatomy = _scene()
    rl = (pl == 1).astype(np.uint16)  # the reference has only the deep lesion
    rng = np.random.default_rng(0)
    # a separable training set: true lesions large, false ones small
    x = np.r_[rng.normal(1.8, 0.1, (40, len(lf.FEATURES))), rng.normal(1.2, 0.1, (40, len(lf.FEATURES)))]
    y = np.r_[np.ones(40), np.zeros(40)]
    model = lf.fit(x, y)
    assert (lf.predict(model, x)[:40] > 0.9).all() and (lf.predict(model, x)[40:] < 0.1).all()
    case = {"pl": pl, "rl": rl}
    before = lf.case_scores(case, np.array([True, True]))
    after = lf.case_scores(case, np.array([True, False]))
    assert (before["fp"], before["n_pred"]) == (1, 2)
    assert (after["fp"], after["n_pred"], after["lesion_f1"]) == (0, 1, 1.0)
    assert after["dice"] > before["dice"]
