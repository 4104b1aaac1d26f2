"""Training smoke run: a few steps on a phantom, checkpoint, resume, export, load the export."""
from __future__ import annotations

import functools
import hashlib

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ai.data import phantom_volume
from ai.infer import Segmenter
from ai.synth import make_phantom
from ai.train import export, train

#: the training runs below draw their crops from seeded phantoms, each 10-15 s to make on 2 cores;
#: a seed's phantom is made once in this module and handed to every run that asks for that seed
#: (training only reads it: the determinism test below would see a changed one)
_phantom_once = functools.cache(phantom_volume)


@pytest.fixture(scope="module")
def _phantom_cache():
    yield _phantom_once
    _phantom_once.cache_clear()  # ~70 MB a phantom: not kept for the rest of the worker's tests


@pytest.fixture(autouse=True)
def _phantoms_made_once(monkeypatch, _phantom_cache):
    monkeypatch.setattr("ai.train.phantom_volume", _phantom_cache)


def test_phantom_generator_is_seeded_and_labels_are_consistent():
    a, b = make_phantom(5, shape=(96, 128, 112)), make_phantom(5, shape=(96, 128, 112))
    assert np.array_equal(a.flair, b.flair) and np.array_equal(a.lesion, b.lesion)
    assert not np.array_equal(a.flair, make_phantom(6, shape=(96, 128, 112)).flair)
    assert a.lesion.any() and ((a.location > 0) == (a.lesion > 0)).all()
    brain = a.anatomy["brain"] > 0
    assert (a.lesion <= brain).all() and (a.anatomy["ventricles"] <= brain).all()
    # lesions are FLAIR-hyperintense against the brain
    assert np.median(a.flair[a.lesion > 0]) > 1.3 * np.median(a.flair[brain & (a.lesion == 0)])


def test_one_step_training_checkpoint_resume_and_export(tmp_path):
    out = tmp_path / "run"
    ckpt = train(out, iters=1, batch=2, crop=64, n_phantoms=1, real_case=None, ckpt_every=1, progress=False,
                 threads=1)
    st = torch.load(ckpt, weights_only=False)
    assert st["iter"] == 1
    ckpt = train(out, iters=2, batch=2, crop=64, n_phantoms=1, real_case=None, ckpt_every=1, progress=False,
                 threads=1, resume=True)
    assert torch.load(ckpt, weights_only=False)["iter"] == 2
    dest = tmp_path / "w.pt"
    digest = export(ckpt, dest)
    assert digest == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert (tmp_path / "w.pt.sha256").read_text().split()[0] == digest
    seg = Segmenter(dest, device="cpu")
    assert seg.model_version == digest
    img = sitk.GetImageFromArray(np.random.default_rng(0).random((4, 32, 32)).astype(np.float32))
    res = seg.segment(img)
    assert res.labels.shape == (4, 32, 32) and res.probability.dtype == np.float32


def test_2d_weights_expanded_to_25d_compute_the_same_and_fine_tune_from_them(tmp_path):
    """A 2D model expanded to 2.5D input (zero weights for the neighbour slices) gives the same
    outputs as the 2D model; a fine-tuning run starts from them and the export records the
    context, which inference then builds from neighbouring slices."""
    from ai.model import UNet2D, expand_first_conv, in_channels

    torch.manual_seed(0)
    m2 = UNet2D(base=4).eval()
    m25 = UNet2D(in_ch=in_channels(1), base=4).eval()
    m25.load_state_dict(expand_first_conv(m2.state_dict(), 1))
    x = torch.randn(3, 2, 32, 32)
    x25 = torch.cat([torch.randn(3, 1, 32, 32), x[:, :1], torch.randn(3, 1, 32, 32),
                     torch.randn(3, 1, 32, 32), x[:, 1:], torch.randn(3, 1, 32, 32)], 1)
    with torch.no_grad():
        assert torch.allclose(m2(x), m25(x25), atol=1e-5)

    init = tmp_path / "w2d.pt"
    export(train(tmp_path / "a", iters=1, batch=2, crop=64, n_phantoms=1, real_case=None, progress=False,
                 threads=1, base=4), init)
    ckpt = train(tmp_path / "b", iters=1, batch=2, crop=64, n_phantoms=1, real_case=None, progress=False,
                 threads=1, base=4, init=init, context=1, lesion_sampling="component")
    st = torch.load(ckpt, weights_only=False)
    assert st["config"]["context"] == 1 and st["config"]["init"]["sha256"]
    assert st["model"]["down.0.0.weight"].shape[1] == 6
    dest = tmp_path / "w25.pt"
    export(ckpt, dest)
    seg = Segmenter(dest, device="cpu")
    assert seg.context == 1
    img = sitk.GetImageFromArray(np.random.default_rng(0).random((5, 32, 32)).astype(np.float32))
    assert seg.segment(img).labels.shape == (5, 32, 32)


def test_export_of_a_fine_tuning_run_records_the_earlier_stages(tmp_path, caplog):
    """The shipped file says what every earlier stage trained on (e.g. which part of the real
    case a stage held out), read from the init weights while they still match the SHA-256
    recorded when fine-tuning started; a changed init file is reported, not trusted."""
    kw = dict(iters=1, batch=2, crop=64, n_phantoms=1, real_case=None, progress=False, threads=1, base=4)
    stage1 = tmp_path / "s1.pt"
    export(train(tmp_path / "a", seed=1, **kw), stage1)
    stage2 = tmp_path / "s2.pt"
    export(train(tmp_path / "b", seed=2, init=stage1, **kw), stage2)
    ckpt3 = train(tmp_path / "c", seed=3, init=stage2, **kw)
    stage3 = tmp_path / "s3.pt"
    export(ckpt3, stage3)
    lineage = torch.load(stage3, weights_only=False)["meta"]["lineage"]
    assert [s["seed"] for s in lineage] == [2, 1]
    assert lineage[0]["init"]["path"] == str(stage1) and lineage[0]["iter"] == 1

    stage2.write_bytes(stage1.read_bytes())  # the init file was replaced after training
    export(ckpt3, tmp_path / "s3b.pt")
    assert torch.load(tmp_path / "s3b.pt", weights_only=False)["meta"]["lineage"] == []
    assert "lineage not recorded" in caplog.text


def test_training_and_inference_are_deterministic_for_a_seed_on_cpu(tmp_path):
    """Same seed, same device: the same weights after training steps and the same probability
    map from them; another seed gives other weights."""
    kw = dict(iters=2, batch=2, crop=64, n_phantoms=1, real_case=None, progress=False, threads=1, base=4)
    w = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        dest = tmp_path / f"{name}.pt"
        export(train(tmp_path / name, seed=seed, **kw), dest)
        w.append(torch.load(dest, weights_only=False)["state_dict"])
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    assert not all(torch.equal(w[0][k], w[2][k]) for k in w[0])

    img = sitk.GetImageFromArray(np.random.default_rng(3).random((6, 40, 40)).astype(np.float32))
    p1 = Segmenter(tmp_path / "a.pt", device="cpu").segment(img).probability
    p2 = Segmenter(tmp_path / "b.pt", device="cpu").segment(img).probability
    assert np.array_equal(p1, p2)


def test_25d_weights_widened_to_more_neighbours_compute_the_same():
    """A 2.5D model (one neighbour each side) widened to two neighbours keeps its weights at the
    same slice offsets and gives the same outputs; a first convolution that is not a narrower
    2.5D one (an even slice count, or a wider one) is refused with a clear error."""
    from ai.model import UNet2D, expand_first_conv, in_channels

    torch.manual_seed(0)
    m1 = UNet2D(in_ch=in_channels(1), base=4).eval()
    m2 = UNet2D(in_ch=in_channels(2), base=4).eval()
    m2.load_state_dict(expand_first_conv(m1.state_dict(), 2))
    x = torch.randn(3, 6, 32, 32)  # FLAIR z-1, z, z+1, T1 z-1, z, z+1
    noise = [torch.randn(3, 1, 32, 32) for _ in range(4)]
    x2 = torch.cat([noise[0], x[:, 0:3], noise[1], noise[2], x[:, 3:6], noise[3]], 1)
    with torch.no_grad():
        assert torch.allclose(m1(x), m2(x2), atol=1e-5)
    with pytest.raises(ValueError, match="cannot expand"):
        expand_first_conv(m2.state_dict(), 1)
    bad = dict(m1.state_dict())
    bad["down.0.0.weight"] = torch.zeros(4, 4, 3, 3)
    with pytest.raises(ValueError, match="cannot expand"):
        expand_first_conv(bad, 2)


def test_per_crop_lesion_dice_weighs_a_missed_small_lesion_as_much_as_a_found_large_one():
    """With the batch Dice a missed 4-voxel lesion beside a perfectly found 400-voxel one costs
    little; with the per-crop Dice (``image``) its crop costs a whole Dice term, and ``both`` lies
    between. All three agree when every lesion is found, and an unknown mode is refused."""
    from ai.train import loss_fn

    y = torch.zeros(2, 8, 32, 32)
    valid = torch.ones(2, 8)
    y[0, 0, 4:24, 4:24] = 1
    y[1, 0, 10:12, 10:12] = 1
    missed = torch.full_like(y, -8.0)
    missed[0, 0, 4:24, 4:24] = 8.0
    b, i, both = (float(loss_fn(missed, y, valid, m)) for m in ("batch", "image", "both"))
    assert i > both > b and i - b > 0.3
    found = torch.where(y > 0, 20.0, -20.0)
    assert np.allclose([float(loss_fn(found, y, valid, m)) for m in ("batch", "image", "both")],
                       float(loss_fn(found, y, valid)), atol=1e-3)
    with pytest.raises(ValueError, match="lesion_dice"):
        loss_fn(found, y, valid, "voxel")


def test_blob_loss_weighs_each_lesion_alone():
    """The lesion-wise Dice (``blob``): a missed 9-voxel lesion beside a found 100-voxel one costs
    about as much as missing the large one (the batch Dice barely notices the small one), a false
    lesion costs too, a perfect prediction costs nothing, and 0 leaves the loss as it was."""
    from ai.train import blob_dice, loss_fn

    t = torch.zeros(2, 32, 32)
    t[0, 2:5, 2:5] = 1
    t[0, 20:30, 20:30] = 1
    assert float(blob_dice(t.clone(), t)) == pytest.approx(0.0, abs=1e-6)
    small_missed, large_missed, false = t.clone(), t.clone(), t.clone()
    small_missed[0, 2:5, 2:5] = 0
    large_missed[0, 20:30, 20:30] = 0
    false[0, 10:13, 10:13] = 1
    s, big = float(blob_dice(small_missed, t)), float(blob_dice(large_missed, t))
    assert s > 0.4 and abs(s - big) < 0.1
    assert float(blob_dice(false, t)) > 0.1
    assert blob_dice(t, torch.zeros_like(t)) is None  # no labelled lesion: no term
    y = torch.zeros(2, 5, 32, 32)
    y[:, 0] = t
    valid = torch.ones(2, 5)
    pred = torch.where(y > 0, 8.0, -8.0)
    pred[0, 0, 2:5, 2:5] = -8.0  # the small lesion missed
    base = float(loss_fn(pred, y, valid))
    assert float(loss_fn(pred, y, valid, blob=0.0)) == base
    assert float(loss_fn(pred, y, valid, blob=1.0)) > base + 0.4


def test_lesion_weight_leaves_pixels_out_of_the_lesion_loss():
    """All-ones weight: the loss without weight, for every Dice mode. A false lesion drawn where the
    weight is 0 costs nothing: the loss equals that of the same prediction without it; where the
    weight is 1 it costs."""
    from ai.train import loss_fn

    y = torch.zeros(2, 5, 32, 32)
    valid = torch.ones(2, 5)
    y[0, 0, 4:12, 4:12] = 1
    y[:, 1, 2:30, 2:30] = 1
    pred = torch.where(y > 0, 6.0, -6.0)
    ones = torch.ones(2, 32, 32)
    for mode in ("batch", "image", "both"):
        assert float(loss_fn(pred, y, valid, mode, ones)) == pytest.approx(float(loss_fn(pred, y, valid, mode)),
                                                                         abs=1e-5)
    false = pred.clone()
    false[1, 0, 20:28, 20:28] = 6.0
    w = ones.clone()
    w[1, 18:30, 18:30] = 0
    for mode in ("batch", "image", "both"):
        assert float(loss_fn(false, y, valid, mode, w)) == pytest.approx(float(loss_fn(pred, y, valid, mode, w)),
                                                                          abs=1e-5)
        assert float(loss_fn(false, y, valid, mode, ones)) > float(loss_fn(pred, y, valid, mode, ones)) + 0.05


def test_plane_slabs_average_across_the_slice_and_keep_the_other_axis():
    """A coronal/sagittal thick-slice series as the node reads it: a thin line across the slab
    axis is spread over about a slab and dimmed; a line along it, and any linear ramp, stay."""
    from ai.train import plane_slabs

    img = np.zeros((64, 64), np.float32)
    img[:, 30] = 1.0  # a 1-voxel line along y
    sag = plane_slabs(img, 1, 5)  # slabs stacked along x
    assert sag[:, 30].max() < 0.5 and (sag[10] > 0.01).sum() >= 5
    assert np.allclose(plane_slabs(img, 0, 5), img)  # slabs along y do not touch a line along y
    ramp = np.tile(np.linspace(0, 2, 64, dtype=np.float32), (64, 1))
    inner = slice(5, 58)
    assert np.allclose(plane_slabs(ramp, 1, 4, 0.5)[:, inner], ramp[:, inner], atol=1e-5)
    assert plane_slabs(img, 1, 6, 0.3).shape == img.shape


def test_sampler_plane_thick_blurs_thin_volumes_in_plane_and_leaves_labels_and_stream_alone():
    """``plane_thick`` 0 draws exactly the crops of a sampler without it (earlier recipes
    reproduce); 1 blurs a thin-slice volume's crops along one in-plane axis, same labels; a
    thick-slice (clinical) volume is never made a coronal/sagittal series."""
    from ai.data import Volume
    from ai.train import Sampler

    rng = np.random.default_rng(3)
    flair = rng.uniform(0.5, 1.5, (12, 200, 200)).astype(np.float32)  # crops never reach the edge
    labels = np.zeros((5,) + flair.shape, np.uint8)
    labels[0, :, 95:105, 95:105] = 1
    labels[1, :, 60:-60, 60:-60] = 1

    def vol(slice_mm):
        return Volume("v", flair, None, labels, np.ones(5, np.float32), np.ones(flair.shape, bool),
                      slice_mm=slice_mm)

    s0 = Sampler({"real3d": [vol(1.0)]}, seed=5, crop=64)
    s1 = Sampler({"real3d": [vol(1.0)]}, seed=5, crop=64, plane_thick=0.0)
    for _ in range(4):
        (x0, y0, *_), (x1, y1, *_) = s0._one(), s1._one()
        assert np.array_equal(x0, x1) and np.array_equal(y0, y1)

    def roughness(x):  # mean absolute neighbour difference along y and along x, FLAIR channel
        return np.abs(np.diff(x[0], axis=0)).mean(), np.abs(np.diff(x[0], axis=1)).mean()

    plain = Sampler({"real3d": [vol(1.0)]}, seed=7, crop=64)
    thick = Sampler({"real3d": [vol(1.0)]}, seed=7, crop=64, plane_thick=1.0)
    def anisotropy(x):
        ry, rx = roughness(x)
        return min(ry, rx) / max(ry, rx)

    rp, rt = [], []
    for _ in range(8):
        (xp, yp, *_), (xt, yt, *_) = plain._one(), thick._one()
        rp.append(anisotropy(xp))
        rt.append(anisotropy(xt))
        assert yt.shape == yp.shape and set(np.unique(yt[0])) <= {0.0, 1.0}
    # plain crops are as rough along y as along x; thick ones smooth along one axis
    assert min(rp) > 0.8 and np.mean(rt) < 0.5 and max(rt) < 0.7
    clin = Sampler({"clinical": [vol(6.0)]}, seed=7, crop=64, plane_thick=1.0)
    assert min(anisotropy(clin._one()[0]) for _ in range(4)) > 0.8


def test_loss_channels_leave_the_other_outputs_out_of_the_loss():
    """``train --loss-channels lesion,ventricles``: brain, cortex and infratentorial count in no
    loss (their targets may say anything), lesion and ventricles still do; an unknown name is
    refused."""
    import torch

    from ai.model import OUTPUTS
    from ai.train import loss_fn, only_loss_channels, phantom_volume

    vol = phantom_volume(7)
    only_loss_channels({"phantoms": [vol]}, ("lesion", "ventricles"))
    assert vol.valid.tolist() == [float(n in ("lesion", "ventricles")) for n in OUTPUTS]
    torch.manual_seed(0)
    logits = torch.randn(2, len(OUTPUTS), 16, 16)
    y = (torch.rand(2, len(OUTPUTS), 16, 16) > 0.5).float()
    valid = torch.from_numpy(vol.valid).expand(2, -1)
    base = loss_fn(logits, y, valid)
    other = y.clone()
    other[:, [OUTPUTS.index("brain"), OUTPUTS.index("cortex"), OUTPUTS.index("infratentorial")]] = 0
    assert torch.allclose(loss_fn(logits, other, valid), base)
    other[:, OUTPUTS.index("ventricles")] = 0
    assert not torch.allclose(loss_fn(logits, other, valid), base)
    with pytest.raises(ValueError, match="not among the outputs"):
        only_loss_channels({"phantoms": [vol]}, ("lesion", "white matter"))
