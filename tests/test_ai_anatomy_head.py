"""The anatomy head (``python -m ai train-anatomy``): it replaces only its own channels, leaves
the lesion channel bit for bit, learns SAMSEG-style labels it is given, keeps held-out cases out,
and a weights file without usable labels is refused with a clear error."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ai import preprocess as pp
from ai.__main__ import main
from ai.anatomy_head import CHANNELS, train_anatomy
from ai.evaluate import dice
from ai.infer import WEIGHTS, Segmenter
from ai.model import OUTPUTS, UNet2D, model_from_meta, without_anatomy_head
from ai.synth import make_phantom, write_case


def test_the_head_replaces_only_its_channels():
    torch.manual_seed(0)
    plain = UNet2D(base=4).eval()
    withh = UNet2D(base=4, anatomy_head=("brain", "cortex")).eval()
    missing, unexpected = withh.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith("anat.") for k in missing) and not unexpected
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        y0, y1 = plain(x), withh(x)
        own = withh.anat(withh.features(x))
    for k, name in enumerate(OUTPUTS):
        if name in ("brain", "cortex"):
            assert torch.equal(y1[:, k], own[:, ("brain", "cortex").index(name)])
        else:
            assert torch.equal(y1[:, k], y0[:, k]), name
    with pytest.raises(ValueError, match="not anatomy outputs"):
        UNet2D(base=4, anatomy_head=("lesion",))
    # continued training and averaging drop the head, leaving a plain UNet's state
    UNet2D(base=4).load_state_dict(without_anatomy_head(withh.state_dict(), "test"))


def _case(tmp_path):
    """A thick-slice phantom case with a SAMSEG-style label volume on its FLAIR grid whose
    "cortex" (label 3) is drawn on the phantom's ventricles: a target the shipped UNet's own
    cortex channel does not give, so the head must learn it from the labels."""
    ph = make_phantom(3, shape=(60, 112, 96))
    d = tmp_path / "cases" / "ph3"
    write_case(ph, d, slice_thickness=3)
    flair = sitk.ReadImage(str(d / "FLAIR.nii.gz"))
    a = {k: sitk.GetArrayFromImage(sitk.Resample(ph.image(v, sitk.sitkUInt8), flair, sitk.Transform(),
                                                 sitk.sitkNearestNeighbor)) > 0 for k, v in ph.anatomy.items()}
    seg = np.zeros(a["brain"].shape, np.int16)
    seg[a["brain"]] = 2             # white matter
    seg[a["ventricles"]] = 3        # "cortex"
    seg[a["infratentorial"]] = 16   # brainstem
    img = sitk.GetImageFromArray(seg)
    img.CopyInformation(flair)
    (tmp_path / "samseg" / "ph3").mkdir(parents=True)
    sitk.WriteImage(img, str(tmp_path / "samseg" / "ph3" / "seg.nii.gz"))
    return d, a


def test_train_anatomy_learns_the_labels_and_leaves_the_lesions(tmp_path):
    d, ref = _case(tmp_path)
    w0 = WEIGHTS  # the shipped UNet's features (its anatomy head is dropped and a new one trained)
    w1 = tmp_path / "head.pt"
    train_anatomy(w0, w1, tmp_path / "samseg", iters=150, crop=64, threads=2, cases=[d])
    meta = torch.load(w1, weights_only=False)["meta"]
    assert meta["anatomy_head"]["channels"] == list(CHANNELS)
    assert meta["anatomy_head"]["trained_on"] == ["ph3"] and meta["anatomy_head"]["held_out"] == []
    assert model_from_meta(meta).anat is not None
    # the shipped weights' own head is replaced, not stacked: the new one reads the same UNet
    assert meta["anatomy_head"]["features_of"]["sha256"] == Segmenter(w0).model_version
    assert meta["anatomy_head"]["iters"] == 150

    flair = sitk.ReadImage(str(d / "FLAIR.nii.gz"), sitk.sitkFloat32)
    t1 = sitk.ReadImage(str(d / "T1.nii.gz"), sitk.sitkFloat32)
    prep = pp.prepare(flair, t1)
    before, after = Segmenter(w0, tta=True).predict_grid(prep), Segmenter(w1, tta=True).predict_grid(prep)
    for name in ("lesion", "ventricles"):
        k = OUTPUTS.index(name)
        assert np.array_equal(before[k], after[k]), name
    seg_img = sitk.ReadImage(str(tmp_path / "samseg" / "ph3" / "seg.nii.gz"), sitk.sitkInt16)
    seg = sitk.GetArrayFromImage(sitk.Resample(seg_img, prep.grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                               sitk.sitkInt16))
    grid_ref = {"cortex": seg == 3, "infratentorial": seg == 16}
    k = OUTPUTS.index("cortex")  # learnt from the labels: the UNet's own channel is far from them
    d0, d1 = dice(before[k] >= 0.5, grid_ref["cortex"]), dice(after[k] >= 0.5, grid_ref["cortex"])
    assert d1 > max(d0 + 0.2, 0.5), (d0, d1)
    k = OUTPUTS.index("infratentorial")  # labels it agrees with stay drawn
    assert dice(after[k] >= 0.5, grid_ref["infratentorial"]) > 0.8

    with pytest.raises(ValueError, match="no case with SAMSEG labels"):
        train_anatomy(w0, tmp_path / "x.pt", tmp_path / "samseg", held_out=frozenset({"ph3"}), iters=1, cases=[d])
    assert main(["train-anatomy", str(w0), "--out", str(tmp_path / "y.pt"),
                 "--samseg", str(tmp_path / "nowhere"), "--iters", "1"]) == 2
    assert not (tmp_path / "y.pt").exists()
