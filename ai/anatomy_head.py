"""The anatomy head: brain, cortex and infratentorial maps read from the trained UNet's features
and trained on SAMSEG's anatomy of the real labelled cases.

``python -m ai train-anatomy WEIGHTS --out OUT.pt --samseg runs/samseg [--hold-out CASE,...]``

The UNet's own anatomy channels learned their brain, cortex and infratentorial maps from
heuristics on one skull-stripped brain (:func:`ai.data.real_case_volume`) and from phantoms; on
the clinical series, which have a skull and 6-8 mm slices, its cortex agrees with SAMSEG's at a
Dice of about 0.3 (model card, "Against SAMSEG's anatomy"). Here the UNet is frozen (weights,
BatchNorm statistics) and a small :class:`ai.model.AnatomyHead` is trained on its last decoder
features against SAMSEG's labels of every real case that has them
(``ai/recipes/samseg_anatomy.sh``: ``<samseg>/<case>/seg.nii.gz``, FreeSurfer labels mapped by
:func:`ai.data.samseg_anatomy`). The reference cortex leaves out the manual lesions and a voxel
around them (SAMSEG without its lesion mode labels some lesion voxels grey matter). The head then
replaces the 1x1 head's output for those channels; the lesion and ventricle channels are the
UNet's own, bit for bit. The ventricles stay the UNet's: against the manual ventricle masks they
are better than SAMSEG's on these series (0.80 against 0.74).

Training: every slice of every case, and its left-right mirror image (inference averages both),
passes once through the frozen UNet; the head then learns from random crops of those features
(binary cross-entropy plus a soft Dice per channel, Adam). SAMSEG is a training-time tool only:
the node never needs it.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ai import preprocess as pp
from ai.data import CLINICAL2D, REAL_CASE, SAMSEG_CHANNELS, samseg_reference
from ai.infer import mirror_images, sha256, slice_input
from ai.model import AnatomyHead, UNet2D, model_from_meta, without_anatomy_head

log = logging.getLogger(__name__)

#: the channels the head computes (the ventricles stay the UNet's, see the module docstring)
CHANNELS: tuple[str, ...] = SAMSEG_CHANNELS


@torch.no_grad()
def case_features(model: UNet2D, prep: pp.Prepared, context: int, batch: int = 8) -> torch.Tensor:
    """The frozen UNet's last decoder features for every slice of the head crop and then for its
    mirror image, as inference computes them: (2 Z, base, H, W) float32."""
    x = slice_input(prep, context, 2 ** model.depth)
    Z, H, W = prep.flair[prep.crop].shape
    out = []
    for mirror in (False, True):
        for s in range(0, Z, batch):
            xb = torch.from_numpy(x[s:s + batch])
            if mirror:
                xb = mirror_images(xb, W)
            out.append(model.features(xb)[..., :H, :W].clone())
    return torch.cat(out)


def anatomy_cases(model: UNet2D, context: int, samseg: Path, held_out: frozenset[str] = frozenset(),
                  cases: list[Path] | None = None) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, features, labels) of every case with SAMSEG labels that is not held out; the
    labels (2 Z, 3, H, W) float32 follow :func:`case_features` (mirror images second)."""
    if cases is None:
        cases = [REAL_CASE] + (sorted(d for d in CLINICAL2D.iterdir() if d.is_dir()) if CLINICAL2D.is_dir() else [])
    out = []
    for d in cases:
        seg = Path(samseg) / d.name / "seg.nii.gz"
        if d.name in held_out or not seg.exists() or not (d / "FLAIR.nii.gz").exists():
            continue
        flair = sitk.ReadImage(str(d / "FLAIR.nii.gz"), sitk.sitkFloat32)
        t1p = d / "T1.nii.gz"
        prep = pp.prepare(flair, sitk.ReadImage(str(t1p), sitk.sitkFloat32) if t1p.exists() else None)
        ref = samseg_reference(d, seg, prep.grid)[(slice(None),) + prep.crop].transpose(1, 0, 2, 3)
        y = torch.from_numpy(np.concatenate([ref, ref[..., ::-1]]).astype(np.float32))
        out.append((d.name, case_features(model, prep, context), y))
        log.info("%s: %d slices and their mirror images", d.name, y.shape[0] // 2)
    return out


def head_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus the mean over channels of a soft Dice loss over the batch."""
    p = torch.sigmoid(logits)
    inter = (p * y).sum((0, 2, 3))
    dice = (2 * inter + 1) / (p.sum((0, 2, 3)) + y.sum((0, 2, 3)) + 1)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + (1 - dice).mean()


def train_anatomy(weights: Path, out: Path, samseg: Path, held_out: frozenset[str] = frozenset(),
                  iters: int = 600, batch: int = 8, crop: int = 128, lr: float = 3e-3, seed: int = 0,
                  width: int = 8, threads: int | None = None, cases: list[Path] | None = None) -> str:
    """Train an anatomy head on ``weights``' frozen features and write the weights with it to
    ``out`` (module docstring); returns the SHA-256 of ``out``."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    st = torch.load(weights, map_location="cpu", weights_only=False)
    meta = {k: v for k, v in st.get("meta", {}).items() if k != "anatomy_head"}
    state = without_anatomy_head(st["state_dict"], str(weights))
    model = model_from_meta(meta)
    model.load_state_dict(state)
    model.eval().requires_grad_(False)
    t0 = time.perf_counter()
    data = anatomy_cases(model, int(meta.get("context", 0)), samseg, held_out, cases)
    if not data:
        raise ValueError(f"no case with SAMSEG labels under {samseg} (ai/recipes/samseg_anatomy.sh) "
                         f"outside the held-out {sorted(held_out)}")
    log.info("features of %d cases in %.0f s", len(data), time.perf_counter() - t0)
    head = AnatomyHead(model.head.in_channels, len(CHANNELS), width)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    for it in range(iters):
        xs, ys = [], []
        for _ in range(batch):
            _, f, y = data[int(rng.integers(len(data)))]
            z = int(rng.integers(f.shape[0]))
            ch, cw = min(crop, f.shape[2]), min(crop, f.shape[3])
            y0, x0 = int(rng.integers(f.shape[2] - ch + 1)), int(rng.integers(f.shape[3] - cw + 1))
            xs.append(torch.nn.functional.pad(f[z, :, y0:y0 + ch, x0:x0 + cw], (0, crop - cw, 0, crop - ch)))
            ys.append(torch.nn.functional.pad(y[z, :, y0:y0 + ch, x0:x0 + cw], (0, crop - cw, 0, crop - ch)))
        loss = head_loss(head(torch.stack(xs)), torch.stack(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (it + 1) % 100 == 0:
            log.info("anatomy head: iteration %d/%d, loss %.4f", it + 1, iters, loss.item())
    state.update({f"anat.{k}": v.detach().clone() for k, v in head.state_dict().items()})
    meta["anatomy_head"] = {
        "channels": list(CHANNELS), "width": width, "iters": iters, "batch": batch, "crop": crop, "lr": lr,
        "seed": seed, "reference": "SAMSEG (ai/recipes/samseg_anatomy.sh), cortex without the manual lesions",
        "samseg": str(samseg), "trained_on": [n for n, _, _ in data], "held_out": sorted(held_out),
        "features_of": {"path": str(weights), "sha256": sha256(Path(weights))},
    }
    from ai.train import write_weights

    return write_weights(Path(out), state, meta)
