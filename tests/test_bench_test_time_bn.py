"""bench/test_time_bn.py: test-time BatchNorm statistics change what the network sees of a study
only for that study; the trained statistics come back afterwards, and alpha 1 is the shipped
inference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from bench_script import load

from ai import preprocess as pp
from ai.infer import Segmenter
from ai.synth import corrupt, make_phantom

tbn = load("test_time_bn")


def _bn_buffers(seg) -> list[torch.Tensor]:
    return [b.clone() for m in seg.model.modules() if isinstance(m, torch.nn.BatchNorm2d)
            for b in (m.running_mean, m.running_var)]


@pytest.fixture(scope="module")
def study():
    """A small phantom study, prepared, and the shipped network's maps of it (fp32)."""
    ph = make_phantom(7, shape=(40, 128, 112), n_lesions=6)
    rng = np.random.default_rng(7)
    flair = ph.image(corrupt(ph.flair, rng))
    flair = flair * 0.5 + 30.0  # another scanner's scale; the normalisation divides by the median
    prep = pp.prepare(flair, None)
    return prep, Segmenter(device="cpu", bf16=False).predict_grid(prep)


def test_study_statistics_change_the_output_and_the_trained_ones_come_back(study):
    prep, shipped = study

    same = tbn.AdaptiveSegmenter(device="cpu", bf16=False, alpha=1.0)
    assert np.array_equal(same.predict_grid(prep), shipped) and same.adapt_s == []

    seg = tbn.AdaptiveSegmenter(device="cpu", bf16=False, alpha=0.0, slices=8)
    before = _bn_buffers(seg)
    adapted = seg.predict_grid(prep)
    after = _bn_buffers(seg)
    assert len(seg.adapt_s) == 1
    # the trained statistics are back, bit for bit, and every BatchNorm is in eval mode
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert not any(m.training for m in seg.model.modules())
    # the study's own statistics moved the lesion map, and the maps stay probabilities
    assert np.abs(adapted[0] - shipped[0]).max() > 1e-3
    assert adapted.min() >= 0.0 and adapted.max() <= 1.0
    # half-way statistics land between the two
    half = tbn.AdaptiveSegmenter(device="cpu", bf16=False, alpha=0.5, slices=8).predict_grid(prep)
    d_full, d_half = np.abs(adapted - shipped).mean(), np.abs(half - shipped).mean()
    assert 0 < d_half < d_full


def test_relative_statistics_leave_a_study_like_the_reference_as_shipped(study):
    """Variant tbn20b shifts the trained statistics by how a study differs from the reference
    studies: a study measured against itself gets the trained statistics back, so the shipped
    output; against a reference that differs from it the output moves."""
    prep, shipped = study
    seg = tbn.AdaptiveSegmenter(device="cpu", bf16=False, slices=8)
    seg.reference = seg.study_statistics(prep)
    assert np.abs(seg.predict_grid(prep) - shipped).max() < 1e-4
    seg.reference = [(m + 0.5, v * 2.0) for m, v in seg.study_statistics(prep)]
    assert np.abs(seg.predict_grid(prep) - shipped).max() > 1e-3
