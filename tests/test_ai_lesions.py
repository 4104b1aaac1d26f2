"""Lesion post-processing on hand-made phantoms: components, volumes, location rules, summary."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ai.lesions import analyse, components, lesion_mask, load_category, summarise
from ai.types import Lesion


def _image(shape_zyx, spacing_xyz=(1.0, 1.0, 1.0)) -> sitk.Image:
    img = sitk.Image(shape_zyx[::-1], sitk.sitkFloat32)
    img.SetSpacing(spacing_xyz)
    return img


def _anatomy(shape):
    """Toy anatomy: brain box, a ventricle slab in the centre, cortex shell, infratentorial bottom."""
    z, y, x = np.indices(shape)
    brain = (z >= 2) & (z < shape[0] - 2) & (y >= 2) & (y < shape[1] - 2) & (x >= 2) & (x < shape[2] - 2)
    cortex = brain & ((y < 6) | (y >= shape[1] - 6) | (x < 6) | (x >= shape[2] - 6))
    vent = brain & (np.abs(x - shape[2] // 2) < 3) & (np.abs(y - shape[1] // 2) < 10) & (z > shape[0] // 2)
    infra = brain & (z < 10)
    return {"brain": brain, "cortex": cortex, "ventricles": vent, "infratentorial": infra}


def test_each_location_rule_finds_its_lesion():
    shape = (40, 60, 60)
    anat = _anatomy(shape)
    prob = np.zeros(shape, np.float32)
    prob[30:33, 28:31, 34:37] = 0.9  # 1 voxel gap to the ventricle (x 28..32): periventricular
    prob[24:27, 7:10, 20:23] = 0.9  # touching the cortex shell (y < 6 at y=5): juxtacortical
    prob[4:7, 30:33, 20:23] = 0.9  # infratentorial
    prob[20:23, 30:33, 45:48] = 0.9  # far from everything: deep white matter
    labels, lesions, summary = analyse(prob, _image(shape), anat)
    found = {tuple(int(v) for v in les.centroid_index): les.location for les in lesions}
    assert found == {(31, 29, 35): "periventricular", (25, 8, 21): "juxtacortical",
                     (5, 31, 21): "infratentorial", (21, 31, 46): "deep_white_matter"}
    assert summary.lesion_count == 4
    assert summary.dis_met and set(summary.dis_areas) == {"periventricular", "juxtacortical", "infratentorial"}
    assert labels.dtype == np.uint16 and set(np.unique(labels)) == {0, 1, 2, 3, 4}


def test_periventricular_distance_uses_physical_spacing():
    """4 voxels from the ventricle is 2.8 mm at 0.7 mm (periventricular) but 4 mm at 1 mm (not)."""
    shape = (40, 60, 60)
    anat = _anatomy(shape)
    anat["cortex"][:] = False
    prob = np.zeros(shape, np.float32)
    prob[30:33, 28:31, 36:39] = 0.9  # ventricle ends at x=32, lesion starts at x=36
    _, near, _ = analyse(prob, _image(shape, (0.7, 0.7, 0.7)), anat, min_volume_mm3=1)
    _, far, _ = analyse(prob, _image(shape, (1.0, 1.0, 1.0)), anat, min_volume_mm3=1)
    assert near[0].location == "periventricular"
    assert far[0].location == "deep_white_matter"


def test_touching_the_cortex_crosses_slices_only_on_thin_slice_grids():
    """A lesion whose only contact with the cortex (and with the outside of the brain) is in the
    slice above: juxtacortical on a 1 mm grid (the slices touch), deep white matter on a 6 mm 2D
    grid (the slice above is 6 mm away); in-plane contact stays juxtacortical on both."""
    shape = (12, 40, 40)
    brain = np.zeros(shape, bool)
    brain[1:8, 2:38, 2:38] = True
    cortex = np.zeros(shape, bool)
    cortex[7, 2:38, 2:38] = True  # the top slice of the brain is cortex
    anat = {"brain": brain, "cortex": cortex, "ventricles": np.zeros(shape, bool),
            "infratentorial": np.zeros(shape, bool)}
    above = np.zeros(shape, np.float32)
    above[6, 18:24, 18:24] = 0.9  # just below the cortex slice, far from it in-plane
    beside = np.zeros(shape, np.float32)
    beside[4, 18:24, 18:24] = 0.9
    anat_beside = dict(anat, cortex=cortex.copy())
    anat_beside["cortex"][4, 18:24, 24] = True  # cortex beside it in its own slice
    for spacing, expected in (((1.0, 1.0, 1.0), "juxtacortical"), ((1.0, 1.0, 6.0), "deep_white_matter")):
        _, les, _ = analyse(above, _image(shape, spacing), anat, grow=None)
        assert [x.location for x in les] == [expected], spacing
        _, les, _ = analyse(beside, _image(shape, spacing), anat_beside, grow=None)
        assert [x.location for x in les] == ["juxtacortical"], spacing


def test_volumes_honour_anisotropic_spacing_and_centroid_is_physical():
    shape = (20, 50, 50)
    img = _image(shape, (0.7, 0.8, 3.0))
    img.SetOrigin((10.0, 20.0, 30.0))
    prob = np.zeros(shape, np.float32)
    prob[5:9, 10:20, 10:15] = 0.8  # 4 x 10 x 5 = 200 voxels
    _, lesions, summary = analyse(prob, img, {})
    les = lesions[0]
    assert les.voxels == 200
    assert les.volume_mm3 == pytest.approx(200 * 0.7 * 0.8 * 3.0)
    assert summary.total_volume_mm3 == pytest.approx(336.0)
    assert les.size_class == "medium"
    assert les.centroid_index == pytest.approx((6.5, 14.5, 12.0))
    assert les.centroid_mm == pytest.approx((10 + 12 * 0.7, 20 + 14.5 * 0.8, 30 + 6.5 * 3.0))
    assert les.bbox_index == (5, 10, 10, 9, 20, 15)
    assert les.mean_probability == pytest.approx(0.8)


def test_26_connectivity_and_minimum_size():
    m = np.zeros((10, 10, 10), bool)
    m[2, 2, 2] = m[3, 3, 3] = m[4, 4, 4] = True  # diagonal chain: one 26-connected lesion
    m[8, 8, 8] = True  # single voxel: dropped
    lab, n = components(m, (1.0, 1.0, 1.0), min_voxels=3, min_volume_mm3=0)
    assert n == 1 and lab[2, 2, 2] == lab[4, 4, 4] == 1 and lab[8, 8, 8] == 0
    # 3 voxels of 1 mm3 = 3 mm3 < 10 mm3 -> dropped; at 2x2x3 mm (36 mm3) kept
    assert components(m, (1.0, 1.0, 1.0))[1] == 0
    assert components(m, (3.0, 2.0, 2.0))[1] == 1


def test_summary_load_category_and_dissemination():
    def les(i, loc, vol):
        return Lesion(i, 10, vol, (0, 0, 0), (0, 0, 0), (0, 0, 0, 1, 1, 1), 0.9, "small", loc)

    s = summarise([les(1, "deep_white_matter", 100.0), les(2, "periventricular", 200.0)])
    assert not s.dis_met and s.dis_areas == ["periventricular"]  # deep WM is not a McDonald area
    assert s.load_category == "low" and s.counts_by_location["deep_white_matter"] == 1
    s = summarise([les(1, "infratentorial", 9000.0), les(2, "juxtacortical", 9000.0)])
    assert s.dis_met and s.load_category == "high"
    assert load_category(0.0, 0) == "none" and load_category(7000.0, 3) == "moderate"


def test_fill_holes_per_slice_equals_filling_each_slice():
    from scipy import ndimage as ndi

    from ai.infer import fill_holes_per_slice

    m = ndi.binary_opening(np.random.default_rng(0).random((12, 40, 30)) > 0.45)
    ref = np.stack([ndi.binary_fill_holes(s) for s in m])
    out = fill_holes_per_slice(m)
    assert (ref != m).any() and np.array_equal(out, ref)
    assert not fill_holes_per_slice(np.zeros((2, 5, 5), bool)).any()
    assert fill_holes_per_slice(np.ones((2, 5, 5), bool)).all()


def _disk(shape, r, centre=None):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = centre or (shape[0] / 2, shape[1] / 2)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def test_scalp_candidates_dropped_only_on_images_with_a_skull():
    """A bright candidate 3 mm under the skin is scalp and goes; one 25 mm deep stays; on a
    skull-stripped image (head = brain) a candidate at the surface is a cortical lesion and stays."""
    from ai.infer import drop_scalp_lesions

    rng = np.random.default_rng(0)
    z, shape = 5, (200, 200)
    head = np.stack([_disk(shape, 80)] * z)
    brain = np.stack([_disk(shape, 62)] * z)
    flair = np.where(head, 1.0 + 0.05 * rng.standard_normal(head.shape), 0.0).astype(np.float32)
    lesion = np.zeros(head.shape, np.float32)
    scalp = np.stack([_disk(shape, 2, (100, 177))] * 3 + [np.zeros(shape, bool)] * 2)
    deep = np.stack([_disk(shape, 3, (100, 155))] * 3 + [np.zeros(shape, bool)] * 2)
    lesion[scalp] = 0.9
    lesion[deep] = 0.95
    lesion[(lesion == 0) & head] = 0.1  # the low background of the probability map is kept
    out = drop_scalp_lesions(lesion, flair, brain, (1.0, 1.0, 3.0))
    assert (out[scalp] == 0).all() and (out[deep] == 0.95).all()
    assert np.array_equal(out[~scalp], lesion[~scalp])

    stripped = np.where(brain, flair, 0.0).astype(np.float32)
    at_surface = np.stack([_disk(shape, 2, (100, 160))] * 3 + [np.zeros(shape, bool)] * 2)
    les2 = np.where(at_surface, 0.9, 0.0).astype(np.float32)
    assert np.array_equal(drop_scalp_lesions(les2, stripped, brain, (1.0, 1.0, 3.0)), les2)


def _rim_lesion(shape=(20, 40, 40)):
    """A lesion with a bright core (0.9) inside a faint rim (0.4), and a faint blob (0.4) alone."""
    prob = np.zeros(shape, np.float32)
    prob[6:14, 10:20, 10:20] = 0.4
    prob[8:12, 13:17, 13:17] = 0.9
    prob[6:10, 28:34, 28:34] = 0.4  # never reaches the threshold: never a lesion
    return prob


def test_thin_slice_lesions_are_found_at_the_threshold_and_drawn_to_the_grow_level():
    prob = _rim_lesion()
    grown = lesion_mask(prob, (1.0, 1.0, 1.0), 0.5, 0.3)
    assert grown[6:14, 10:20, 10:20].all()  # the faint rim belongs to the lesion found in its core
    assert not grown[6:10, 28:34, 28:34].any()  # a faint blob with no core stays out
    labels, lesions, _ = analyse(prob, _image(prob.shape), {})
    assert len(lesions) == 1 and lesions[0].voxels == 8 * 10 * 10  # the node's default grows on 1 mm
    _, plain, _ = analyse(prob, _image(prob.shape), {}, grow=None)
    assert len(plain) == 1 and plain[0].voxels == 4 * 4 * 4
    # the confidence is the detection's: the mean over the voxels found at the threshold, not
    # lowered by the rim it was drawn to
    assert lesions[0].mean_probability == pytest.approx(0.9) == plain[0].mean_probability
    assert lesions[0].max_probability == pytest.approx(0.9)


def test_thick_slice_grids_keep_the_plain_threshold():
    prob = _rim_lesion()
    for spacing in ((6.5, 0.9, 0.9), (0.9, 3.0, 0.9)):  # axial 2D, or a thick coronal series
        assert np.array_equal(lesion_mask(prob, spacing, 0.5, 0.3), prob >= 0.5)
    _, lesions, _ = analyse(prob, _image(prob.shape, (0.9, 0.9, 6.5)), {})
    assert len(lesions) == 1 and lesions[0].voxels == 4 * 4 * 4
    assert np.array_equal(lesion_mask(prob, (1.0, 1.0, 1.0), 0.5, 0.6), prob >= 0.5)  # grow >= cut: off
