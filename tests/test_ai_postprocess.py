"""The post-processing works inside bounding boxes (``ai.lesions.work_box``) for speed; every
result must equal the result on the whole grid. Each test runs the same function twice, once as
shipped and once with ``work_box`` made to return the whole grid, and compares the bytes: on
random masks that also touch the grid's faces, on a phantom head with skull, and (when ../shared
is present) on the shipped network's output for a raw clinical FLAIR, through ``analyse``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

import ai.infer as infer
import ai.lesions as lesions
from ai import preprocess as pp
from ai.model import OUTPUTS
from ai.synth import corrupt, make_phantom

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _whole(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice, slice]:
    return tuple(slice(0, n) for n in mask.shape)  # type: ignore[return-value]


def both(monkeypatch, fn, *args):
    """``fn(*args)`` as shipped (inside boxes) and on the whole grid."""
    boxed = fn(*args)
    with monkeypatch.context() as m:
        m.setattr(lesions, "work_box", _whole)
        m.setattr(infer, "work_box", _whole)
        whole = fn(*args)
    return boxed, whole


def same(a, b) -> bool:
    """Equal arrays, byte for byte, also inside tuples and dicts."""
    if isinstance(a, tuple):
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def blobs(seed: int, shape=(24, 48, 56), level: float = 0.62, touch: bool = False) -> np.ndarray:
    """Random smooth blobs with holes; with ``touch`` some reach every face of the grid."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.standard_normal(shape), 2.0)
    field = (field - field.min()) / np.ptp(field)
    m = field > level
    core = np.zeros(shape, bool)
    core[3:-3, 6:-6, 6:-6] = True
    m &= core if not touch else np.ones(shape, bool)
    m[10:13, 20:30, 20:30] = True  # a ring with a hole in each of three slices
    m[10:13, 23:27, 23:27] = False
    if touch:
        m[0, :4, :4] = m[-1, -4:, -4:] = m[:, 0, 10:14] = m[:, -1, 20:24] = True
    return m


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("touch", [False, True])
def test_mask_steps_equal_on_boxes_and_on_the_whole_grid(monkeypatch, seed, touch):
    m = blobs(seed, touch=touch)
    assert m.any() and not m.all()
    if not touch:  # the box is smaller than the grid, so the two runs differ in what they see
        assert np.prod([s.stop - s.start for s in lesions.work_box(m, 1)]) < m.size
    filled, ref = both(monkeypatch, infer.fill_holes_per_slice, m)
    assert same(filled, ref) and (filled & ~m).any()  # there were holes to fill
    assert same(*both(monkeypatch, infer._drop_small, m, 40.0))
    brain = ndi.binary_dilation(m, iterations=3)
    assert same(*both(monkeypatch, infer._infratentorial, m, brain))
    prob = ndi.gaussian_filter(m.astype(np.float32), 1.0)
    assert same(*both(monkeypatch, infer.Segmenter.brain_mask, prob, (1.0, 1.0, 2.0)))
    head = ndi.binary_dilation(m, iterations=2)
    flair = np.where(head, 1.0 + 0.1 * np.random.default_rng(seed).standard_normal(m.shape), 0.0)
    assert (pp.foreground_mask(flair.astype(np.float32)) == head).all()
    assert same(*both(monkeypatch, infer.head_mask, flair.astype(np.float32)))


def test_empty_masks_stay_empty(monkeypatch):
    m = np.zeros((6, 20, 20), bool)
    for fn, args in ((infer.fill_holes_per_slice, (m,)), (infer._drop_small, (m, 3.0)),
                     (infer._infratentorial, (m, m)), (infer.Segmenter.brain_mask, (m.astype(np.float32), (1, 1, 1)))):
        boxed, whole = both(monkeypatch, fn, *args)
        assert same(boxed, whole) and not boxed.any()


#: a sagittal series of 0.7 x 0.7 mm pixels in 1.2 mm slices: the model grid is resampled back
SAGITTAL_07 = dict(size=[150, 190, 110], spacing=(0.7, 0.7, 1.2), direction=(0.0, 0.0, -1.0, 1.0, 0.0, 0.0,
                                                                          0.0, -1.0, 0.0))


def _phantom_outputs(seed: int, geometry: dict | None = None):
    """A phantom head with skull and 'network outputs' made from its truth: smoothed maps, a
    brain channel that leaks into the scalp and bright false lesions in the scalp and at the
    vertex, so that every step (brain cleaning, gate, scalp drop, small-piece and island removal)
    has work to do (the brain gate's edge included). ``geometry``: the FLAIR resampled onto that
    grid (size, spacing, direction), centred on the phantom."""
    ph = make_phantom(seed, shape=(110, 160, 140), skull=True)
    rng = np.random.default_rng(seed)
    flair = ph.image(corrupt(ph.flair, rng))
    if geometry is not None:
        ref = sitk.Image(geometry["size"], sitk.sitkFloat32)
        ref.SetSpacing(geometry["spacing"])
        ref.SetDirection(geometry["direction"])
        centre = np.array(flair.TransformContinuousIndexToPhysicalPoint([v / 2 for v in flair.GetSize()]))
        half = np.array(geometry["direction"]).reshape(3, 3) @ (np.array(geometry["size"]) * geometry["spacing"] / 2)
        ref.SetOrigin(tuple(centre - half))
        flair = sitk.Resample(flair, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    prep = pp.prepare(flair)
    grid_of = lambda a: sitk.GetArrayFromImage(pp.resample(ph.image(a.astype(np.float32)), prep.grid))  # noqa: E731
    truth = {k: grid_of(v) for k, v in ph.anatomy.items()}
    out = np.zeros((len(OUTPUTS),) + prep.flair.shape, np.float32)
    out[0] = ndi.gaussian_filter(grid_of(ph.lesion), 0.7)
    head = infer.head_mask(prep.flair)
    scalp = head & ~ndi.binary_erosion(head, iterations=3)
    spots = scalp & (rng.random(scalp.shape) < 2e-4)
    out[0][ndi.binary_dilation(spots, iterations=1)] = 0.9
    out[0] += 0.01 * head  # the faint background a network leaves everywhere in the head
    for k, name in enumerate(OUTPUTS):
        if k and name in truth:
            out[k] = ndi.gaussian_filter(truth[name], 1.0)
    out[1][scalp & (rng.random(scalp.shape) < 0.3)] = 0.8  # leaks
    out[OUTPUTS.index("infratentorial")][-8:-4, 60:70, 60:70] = 0.9  # an island at the vertex
    return prep, out


def post(seg, prep, out):
    """What the node makes of the network's output: maps on the source grid, then the lesions."""
    prob, anatomy = seg.to_source(prep, out)
    labels, found, summary = lesions.analyse(prob, prep.source, anatomy)
    return prob, anatomy, labels, found, summary


def found_mask(result, les) -> np.ndarray:
    return result[2] == les.id


def same_post(a, b) -> bool:
    return same(a[:3], b[:3]) and a[3] == b[3] and a[4] == b[4]


@pytest.mark.parametrize("seed, geometry", [(11, None), (12, SAGITTAL_07)])
def test_to_source_equals_on_boxes_and_on_the_whole_grid_phantom_with_skull(monkeypatch, seed, geometry):
    prep, out = _phantom_outputs(seed, geometry)
    assert pp.same_grid(prep.grid, prep.canon) == (geometry is None)
    seg = infer.Segmenter.__new__(infer.Segmenter)  # to_source reads no weights
    boxed, whole = both(monkeypatch, post, seg, prep, out)
    assert same_post(boxed, whole)
    prob, anatomy, _, found, _ = boxed
    assert (prob >= 0.5).any() and anatomy["brain"].any() and anatomy["ventricles"].any()
    assert len(found) >= 3 and any(les.voxels > (prob[found_mask(boxed, les)] >= 0.5).sum() for les in found)


@pytest.mark.shared
def test_to_source_equals_on_boxes_and_on_the_whole_grid_clinical(monkeypatch):
    """The shipped network's output on a raw clinical FLAIR with skull and T1."""
    d = SHARED / "ms" / "clinical2d" / "tabriz104899"
    if not (d / "FLAIR.nii.gz").exists():
        pytest.skip(f"{d} not found (../shared/data absent)")
    seg = infer.Segmenter(device="cpu")
    flair = sitk.ReadImage(str(d / "FLAIR.nii.gz"), sitk.sitkFloat32)
    t1 = sitk.ReadImage(str(d / "T1.nii.gz"), sitk.sitkFloat32)
    prep = pp.prepare(flair, t1)
    out = seg.predict_grid(prep)
    boxed, whole = both(monkeypatch, post, seg, prep, out)
    assert same_post(boxed, whole)
    assert len(boxed[3]) >= 5


def test_scalp_band_measured_across_the_heads_box(monkeypatch):
    """A candidate 8 mm inside a flat face of the head is in the scalp band: its nearest skin lies
    just beyond the head's bounding box, so the distance must be taken with that rim."""
    head = np.zeros((6, 60, 60), bool)
    head[:, 10:50, 10:50] = True
    brain = np.zeros_like(head)
    brain[:, 20:40, 20:40] = True
    flair = np.where(head, 1.0, 0.0).astype(np.float32)
    lesion = np.zeros(head.shape, np.float32)
    lesion[2:4, 29:31, 17:19] = 0.9  # x 17-18: 8-9 mm from x = 9, outside the head
    boxed, whole = both(monkeypatch, infer.drop_scalp_lesions, lesion, flair, brain, (1.0, 1.0, 3.0))
    assert same(boxed, whole) and not boxed.any()
