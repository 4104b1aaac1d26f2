"""Weight averaging (``python -m ai average``): floats are averaged, the metadata says what was
averaged, a hold-out the sources trained on is refused, and re-estimated BatchNorm statistics are
those of the batches shown."""
from __future__ import annotations

import pytest
import torch

from ai.average import average, recompute_bn
from ai.model import OUTPUTS, UNet2D


def _export(path, seed, trained_on, held_out):
    torch.manual_seed(seed)
    m = UNet2D(base=4)
    for mod in m.modules():  # distinct running statistics per file
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
    cfg = {"trained_on": trained_on, "held_out": held_out, "seed": seed}
    torch.save({"state_dict": m.state_dict(),
                "meta": {"name": "ms_unet2d", "outputs": list(OUTPUTS), "base": 4, "context": 0, "iter": 5,
                         "train_config": cfg, "lineage": [{"seed": seed - 1}]}}, path)
    return m.state_dict()


def test_average_of_two_files_and_its_metadata(tmp_path):
    a = _export(tmp_path / "a.pt", 1, ["p1", "p2"], ["p3"])
    b = _export(tmp_path / "b.pt", 2, ["p1", "p2"], ["p3"])
    digest = average([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "avg.pt", held_out=frozenset({"p3"}))
    st = torch.load(tmp_path / "avg.pt", weights_only=False)
    for k, v in st["state_dict"].items():
        if torch.is_floating_point(v):
            assert torch.allclose(v, (a[k] + b[k]) / 2, atol=1e-6), k
    cfg = st["meta"]["train_config"]
    assert [s["path"] for s in cfg["average_of"]] == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    assert cfg["trained_on"] == ["p1", "p2"] and cfg["held_out"] == ["p3"]
    assert "averaged" in cfg["batchnorm"]
    assert [s["seed"] for s in st["meta"]["lineage"]] == [1, 2]
    assert (tmp_path / "avg.pt.sha256").read_text().split()[0] == digest
    with pytest.raises(ValueError, match="trained on"):
        average([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "x.pt", held_out=frozenset({"p1"}))


def test_recomputed_batchnorm_statistics_are_those_of_the_batches():
    """After re-estimation on one repeated batch, eval mode computes what train mode computes on it
    (up to the unbiased variance the running statistics keep)."""
    torch.manual_seed(0)
    m = UNet2D(base=4)
    x = torch.randn(6, 2, 32, 32) + 3.0

    class Fixed:
        def batch(self, n):
            return x, None, None

    recompute_bn(m, Fixed(), n_batches=3, batch=6)
    assert not m.training
    bn = m.down[0][1]
    with torch.no_grad():
        h = m.down[0][0](x)
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(bn.running_var, h.var((0, 2, 3), unbiased=True), rtol=1e-3, atol=1e-5)
    assert bn.momentum == 0.1
