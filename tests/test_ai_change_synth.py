"""Synthetic change pairs (ai.change_synth): the change the targets say is the change the images
show, and the prior's path (moved, re-sliced, carried back) makes no change of its own."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ai.change_synth import (
    NET1,
    NET2,
    lesion_bank,
    pair_from_clinical,
    pair_from_masks,
    resample_rigid,
    rotation,
    thick,
)
from ai.synth import make_phantom


@pytest.fixture(scope="module")
def phantom():
    ph = make_phantom(7, shape=(96, 160, 140), n_lesions=14)
    f = ph.flair / float(np.median(ph.flair[ph.anatomy["brain"] > 0]))
    return f.astype(np.float32), ph.lesion > 0, ph.anatomy["brain"] > 0


def test_identity_resampling_gives_the_image_back():
    rng = np.random.default_rng(0)
    a = rng.random((20, 30, 40)).astype(np.float32)
    out, cover = resample_rigid(a, (3, 1, 1), 0.0, np.eye(3), np.zeros(3), np.array([30.0, 15, 20]), a.shape,
                                (3, 1, 1), 0.0)
    assert cover.all()
    np.testing.assert_allclose(out, a, atol=1e-5)


def test_a_moved_image_carried_back_lands_where_it_was():
    rng = np.random.default_rng(1)
    a = ndi.gaussian_filter(rng.random((40, 60, 60)).astype(np.float32), 3)
    r, b, c = rotation(rng, 2.0), np.array([1.5, -1.0, 0.5]), np.array([20.0, 30, 30])
    moved, _ = resample_rigid(a, (1, 1, 1), 0.0, r, b, c, a.shape, (1, 1, 1), 0.0)
    back, cover = resample_rigid(moved, (1, 1, 1), 0.0, r.T, -r.T @ b, c, a.shape, (1, 1, 1), 0.0)
    inner = np.zeros(a.shape, bool)
    inner[8:-8, 8:-8, 8:-8] = True
    err = np.abs(back - a)[inner & cover]
    moved_by = np.abs(moved - a)[inner].mean()
    assert cover[inner].all() and err.mean() < 0.25 * moved_by


def test_thick_averages_whole_slabs_from_the_phase():
    a = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    assert thick(a, 3)[:, 0, 0].tolist() == [1.0, 4.0, 7.0]
    assert thick(a, 3, phase=1)[:, 0, 0].tolist() == [2.0, 5.0, 8.0]


def _diff_inside(p, mask):
    d = p.follow.astype(np.float32) - p.prior.astype(np.float32)
    return float(d[mask].mean())


@pytest.mark.parametrize("opts", [NET1, NET2], ids=["net1", "net2"])
def test_clinical_pair_targets_are_where_the_signal_changed(phantom, opts):
    f, les, brain = phantom
    f7 = thick(f, 7)
    les7 = thick(les.astype(np.float32), 7) >= 0.5
    bank = lesion_bank([les])
    assert bank and all(10 <= b.sum() <= 3000 for b in bank)
    seen_grown = seen_lost = 0
    for seed in range(6):
        p = pair_from_clinical(f7, les7, bank, np.random.default_rng(seed), 7.0, f"ph{seed}", opts)
        assert p is not None and p.follow.shape == f7.shape and p.spacing == (7.0, 1.0, 1.0)
        still = p.region & ~ndi.binary_dilation(p.grown | p.lost, iterations=2)
        assert abs(_diff_inside(p, still)) < 0.03  # no change where the targets say none
        if p.grown.sum() >= 5:
            seen_grown += 1
            assert _diff_inside(p, p.grown) > 0.04
        if p.lost.sum() >= 5:
            seen_lost += 1
            assert _diff_inside(p, p.lost) < -0.04
    assert seen_grown and seen_lost


@pytest.mark.parametrize("opts", [NET1, NET2], ids=["net1", "net2"])
def test_mask_pair_targets_are_where_the_signal_changed(phantom, opts):
    f, les, brain = phantom
    other = np.roll(les, 9, axis=2) & brain
    p = pair_from_masks(f, brain, les, other, np.random.default_rng(3), 3, "ph", opts)
    assert p is not None and p.spacing == (3.0, 1.0, 1.0)
    assert p.grown.any() or p.lost.any()
    if p.grown.sum() >= 5:
        assert _diff_inside(p, p.grown) > 0.04
    if p.lost.sum() >= 5:
        assert _diff_inside(p, p.lost) < -0.04
    assert not (p.grown & p.lost).any()
    still = p.region & ~ndi.binary_dilation(p.grown | p.lost, iterations=2)
    assert abs(_diff_inside(p, still)) < 0.03


def test_a_trained_change_net_loads_and_maps_back_onto_the_follow_up_grid(phantom, tmp_path):
    """train-change's file loads, and the net's maps lie on the follow-up's own grid (0.72 mm
    in-plane here, the net's 1 mm inside) as probabilities."""
    from ai.change_net import load_change_net, train_change

    f, les, brain = phantom
    f3, les3 = thick(f, 3), thick(les.astype(np.float32), 3) >= 0.5
    pairs = [pair_from_clinical(f3, les3, lesion_bank([les]), np.random.default_rng(s), 3.0, f"ph{s}")
             for s in range(2)]
    digest = train_change([p for p in pairs if p is not None], tmp_path / "net.pt", iters=2, batch=2, crop=64)
    net = load_change_net(tmp_path / "net.pt")
    assert net.version == digest[:12] and net.meta["iters"] == 2
    p = pairs[0]
    g, lo = net.probability(p.follow[:4, :100, :90], p.prior[:4, :100, :90], (3.0, 0.72, 0.72))
    assert g.shape == lo.shape == (4, 100, 90)
    assert 0.0 <= float(g.min()) and float(g.max()) <= 1.0


def test_the_net_rule_without_weights_is_a_clear_error(tmp_path):
    from ai.change_eval import evaluate_pairs

    with pytest.raises(SystemExit, match="no change-net weights"):
        evaluate_pairs(tmp_path, rule="net", change_weights=tmp_path / "absent.pt")
