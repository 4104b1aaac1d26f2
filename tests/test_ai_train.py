"""Training smoke run: a few steps on a phantom, checkpoint, resume, export, load the export."""
from __future__ import annotations

import hashlib

import numpy as np
import SimpleITK as sitk
import torch

from ai.infer import Segmenter
from ai.synth import make_phantom
from ai.train import export, train


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
