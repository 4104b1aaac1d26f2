"""Real-mask synthesis: a placed lesion lands where its mask says, at the contrast asked, only on
tissue; painting out leaves no lesion signal; the training sources assemble without the held-out
patients."""
from __future__ import annotations

import numpy as np
import pytest

from ai.realsynth import fade_lesions, inpaint, place_lesions


def _brain(shape=(20, 40, 40), seed=0):
    rng = np.random.default_rng(seed)
    flair = (1.0 + 0.02 * rng.standard_normal(shape)).astype(np.float32)
    t1 = (1.0 + 0.02 * rng.standard_normal(shape)).astype(np.float32)
    tissue = np.zeros(shape, bool)
    tissue[2:-2, 4:-4, 4:-4] = True
    return flair, t1, tissue


def test_placed_lesion_lands_on_its_mask_with_the_asked_contrast():
    flair, t1, tissue = _brain()
    mask = np.zeros(flair.shape, bool)
    mask[8:12, 15:22, 15:22] = True  # inside the tissue
    mask[0:2, 0:3, 0:3] = True  # outside the tissue: must not be written
    f, t, lab = place_lesions(flair, t1, mask, tissue, np.random.default_rng(1), flair_gain=(1.5, 1.5),
                              t1_loss=(0.3, 0.3), edge_sigma=0.01)
    assert lab.dtype == np.uint8
    assert np.array_equal(lab > 0, mask & tissue)
    core = np.zeros_like(mask)
    core[9:11, 17:20, 17:20] = True
    assert np.median(f[core] / flair[core]) == pytest.approx(1.5, abs=0.01)
    assert np.median(t[core] / t1[core]) == pytest.approx(0.7, abs=0.01)
    outside = ~ndi_dilate(mask, 2)
    assert np.allclose(f[outside], flair[outside]) and np.allclose(t[outside], t1[outside])
    assert np.array_equal(f[0:2, 0:3, 0:3], flair[0:2, 0:3, 0:3])


def test_each_lesion_gets_its_own_gain_within_the_range():
    flair, t1, tissue = _brain()
    mask = np.zeros(flair.shape, bool)
    mask[5:8, 8:12, 8:12] = True
    mask[12:15, 25:30, 25:30] = True
    f, _, _ = place_lesions(flair, None, mask, tissue, np.random.default_rng(3), flair_gain=(1.2, 1.6),
                            edge_sigma=0.01)
    g1 = np.median(f[6, 9:11, 9:11] / flair[6, 9:11, 9:11])
    g2 = np.median(f[13, 26:29, 26:29] / flair[13, 26:29, 26:29])
    assert 1.2 <= g1 <= 1.6 and 1.2 <= g2 <= 1.6 and abs(g1 - g2) > 1e-3


def test_inpaint_replaces_a_bright_lesion_with_surrounding_tissue():
    flair, _, tissue = _brain()
    hole = np.zeros(flair.shape, bool)
    hole[8:12, 15:22, 15:22] = True
    bright = flair.copy()
    bright[hole] *= 1.6
    out = inpaint(bright, hole, tissue)
    assert np.median(out[hole]) == pytest.approx(1.0, abs=0.03)
    assert np.array_equal(out[~hole], bright[~hole])


def test_fade_scales_the_lesion_excess_over_its_surroundings_and_nothing_else():
    flair, _, tissue = _brain(shape=(1, 60, 60))
    img, les = flair[0] * 1.0, np.zeros((60, 60), bool)
    les[25:35, 25:35] = True
    img[les] *= 1.6  # 0.6 above its surroundings
    faded = fade_lesions(img, les, 0.5, edge_sigma=0.01)
    core = np.zeros_like(les)
    core[27:33, 27:33] = True
    assert np.median(faded[core]) == pytest.approx(1.3, abs=0.03)  # half the excess is left
    far = ~ndi_dilate(les[None], 2)[0]
    assert np.array_equal(faded[far], img[far])
    assert fade_lesions(img, les, 1.0) is img  # alpha 1: untouched
    dark = img.copy()
    dark[les] = 0.3  # a CSF-dark mask voxel has no excess: it is not brightened or darkened
    assert np.allclose(fade_lesions(dark, les, 0.5, edge_sigma=0.01)[core], 0.3)


def test_sampler_fade_draws_fainter_lesion_crops_with_the_same_labels():
    from ai.data import Volume
    from ai.train import Sampler

    flair, _, _ = _brain(shape=(6, 96, 96))
    labels = np.zeros((5,) + flair.shape, np.uint8)
    labels[0, :, 40:56, 40:56] = 1
    labels[1, :, 8:-8, 8:-8] = 1
    flair[labels[0] > 0] *= 1.6
    vol = Volume("case", flair, None, labels, np.ones(5, np.float32), np.ones(flair.shape, bool),
                 slice_mm=6.0)
    draws = {}
    for fade in ((0.0, 1.0), (1.0, 0.5)):
        s = Sampler({"clinical": [vol]}, seed=0, crop=64, p_lesion=1.0, lesion_fade=fade)
        draws[fade] = [s._one() for _ in range(8)]
    contrast = {}
    for fade, crops in draws.items():
        vals = [x[0][y[0] > 0].mean() / x[0][(y[1] > 0) & (y[0] == 0)].mean() for x, y, *_ in crops if y[0].any()]
        contrast[fade] = np.mean(vals)
    assert contrast[(1.0, 0.5)] < contrast[(0.0, 1.0)] - 0.05
    # the first crop is drawn identically up to the fade: same place, same labels
    (_, y0, *_), (_, y1, *_) = draws[(0.0, 1.0)][0], draws[(1.0, 0.5)][0]
    assert y0[0].any() and np.array_equal(y0, y1)


def test_sampler_leaves_ignored_voxels_out_of_the_lesion_loss_unless_a_lesion_is_labelled_there():
    """A volume whose ``ignore`` covers an unlabelled bright blob and part of a labelled lesion: the
    lesion-loss weight of every crop is 0 on the blob, 1 on the whole lesion and elsewhere; a
    volume without ``ignore`` gives all ones; the warped batch keeps the weight where it was."""
    import torch

    from ai.data import Volume
    from ai.train import Sampler

    flair, _, _ = _brain(shape=(4, 96, 96))
    labels = np.zeros((5,) + flair.shape, np.uint8)
    labels[0, :, 40:52, 40:52] = 1
    labels[1, :, 8:-8, 8:-8] = 1
    ignore = np.zeros(flair.shape, bool)
    ignore[:, 40:52, 56:70] = True  # painted-out residue beside the lesion...
    ignore[:, 40:52, 46:52] = True  # ...overlapping the lesion's right part
    flair[:, 40:52, 56:70] *= 1.4
    vol = Volume("synth", flair, None, labels, np.ones(5, np.float32), np.ones(flair.shape, bool), ignore=ignore)
    plain = Volume("plain", flair, None, labels, np.ones(5, np.float32), np.ones(flair.shape, bool))
    s = Sampler({"masksynth": [vol]}, seed=0, crop=128, p_lesion=1.0)
    for _ in range(6):
        x, y, _v, w = s._one()
        assert y[0].any() and (w[y[0] > 0] == 1).all()  # a labelled lesion always counts
        # the unlabelled blob (12 x 14 pixels) never does, and nothing else is left out
        assert int((w == 0).sum()) == 12 * 14
        tissue = (y[1] > 0) & (y[0] == 0) & (w == 1)
        assert x[0][w == 0].mean() > 1.2 * np.median(x[0][tissue])
    assert all((Sampler({"clinical": [plain]}, seed=1, crop=128)._one()[3] == 1).all() for _ in range(3))
    xb, yb, vb, wb = s.batch(4)
    assert wb.shape == (4, 128, 128) and yb.shape == (4, 5, 128, 128)
    assert float((wb * yb[:, 0]).sum()) == float(yb[:, 0].sum())  # warped with the labels
    assert float(wb.min()) == 0.0 and torch.all((wb == 0) | (wb == 1))


def ndi_dilate(mask, it):
    from scipy import ndimage as ndi

    return ndi.binary_dilation(mask, iterations=it)


@pytest.mark.shared
def test_training_sources_leave_out_the_held_out_patients():
    from ai.data import CLINICAL2D, MNI_MASKS, REAL_CASE, training_volumes

    if not (REAL_CASE / "lesion_mask.nii.gz").exists() or not CLINICAL2D.is_dir():
        pytest.skip("needs ../shared/data/ms (cross_sectional/patient19, clinical2d)")
    g = training_volumes({"patient19", "tabriz101228"}, clinical=CLINICAL2D, mni_masks=MNI_MASKS)
    assert g["real3d"] == [] and g["masksynth"] == []  # patient19's synthetic variants go with it
    names = {v.name for v in g["clinical"]}
    assert "tabriz101228" not in names and len(names) >= 9
    v = g["clinical"][0]
    assert v.slice_mm > 5 and not v.stripped and list(v.valid) == [1, 0, 1, 0, 0]
    assert v.labels[0].any() and v.labels[2].any() and not v.labels[1].any()


@pytest.mark.shared
def test_ignore_painted_marks_the_real_cases_own_lesions_in_every_real_mask_volume():
    """With ``ignore_painted`` the real-mask volumes share one ``ignore`` array that covers the
    real case's painted-out lesions (and a margin), inside the brain; without it there is none."""
    from pathlib import Path

    from ai.data import MNI_MASKS, PAINTED_MARGIN, REAL_CASE, mask_synthetic_volumes, real_case_volume

    if not (REAL_CASE / "lesion_mask.nii.gz").exists() or not Path(MNI_MASKS).is_dir():
        pytest.skip("needs ../shared/data/ms (cross_sectional/patient19, lesion_masks_mni)")
    base = real_case_volume(REAL_CASE, holdout=False)
    masks = sorted(Path(MNI_MASKS).glob("*_lesion_mask.nii.gz"))[:2]
    plain = mask_synthetic_volumes(base, masks, seed=0)
    marked = mask_synthetic_volumes(base, masks, seed=0, ignore_painted=True)
    assert all(v.ignore is None for v in plain)
    ign = marked[0].ignore
    assert ign is not None and marked[1].ignore is ign
    own, brain = base.labels[0] > 0, base.labels[1] > 0
    assert ign[own & brain].all() and not ign[~brain].any()
    assert ign.sum() > own.sum() * 1.5 and ign.sum() < ndi_dilate(own, PAINTED_MARGIN + 2).sum()
    # the images and labels are those of the plain synthesis
    assert np.array_equal(marked[0].flair, plain[0].flair) and np.array_equal(marked[0].labels, plain[0].labels)
