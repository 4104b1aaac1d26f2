"""A change detector that sees both time points: a small 2D UNet on (follow-up FLAIR, registered
and quantile-matched prior FLAIR, their difference), trained on the synthetic pairs of
:mod:`ai.change_synth`, giving per voxel the probability of lesion growth and of lesion loss.

``python -m ai train-change OUT`` trains it (recipes ``ai/recipes/change_net1.sh``,
``change_net2.sh``); ``python -m ai evaluate-change PAIRS --rule net --change-weights OUT``
scores it on the real pairs. Measured and not adopted (``ai/weights/MODEL_CARD.md``, "Change
net"); no weights ship. Model grid: 1 mm in-plane, the study's own slices.
"""
from __future__ import annotations

import hashlib
import io
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from ai.change_synth import Pair
from ai.model import UNet2D

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_WEIGHTS", "ChangeNet", "IN_CH", "OUTPUTS", "load_change_net", "train_change"]

OUTPUTS = ("grown", "lost")
IN_CH = 3  #: follow-up, matched prior, follow-up - matched prior
INPLANE_MM = 1.0
BASE = 16
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "change_net.pt"


def _inputs(follow: np.ndarray, prior: np.ndarray) -> np.ndarray:
    f = np.clip(follow.astype(np.float32), 0, 4)
    p = np.clip(prior.astype(np.float32), 0, 4)
    return np.stack([f, p, f - p])


class ChangeNet:
    """A trained change detector (weights file: state dict and metadata)."""

    def __init__(self, model: UNet2D, meta: dict, version: str):
        self.model, self.meta, self.version = model.eval(), meta, version

    @torch.no_grad()
    def probability(self, follow: np.ndarray, prior: np.ndarray, spacing_zyx, tta: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(growth, loss) probabilities (z, y, x) on the grid of ``follow`` (FLAIR in units of its
        median brain signal) and ``prior`` (matched to it, on the same grid)."""
        shape = follow.shape[1:]
        # (slice, channel, y, x) on the net's in-plane grid: each slice zoomed in-plane only
        xs = ndi.zoom(_inputs(follow, prior).transpose(1, 0, 2, 3),
                      (1, 1, spacing_zyx[1] / INPLANE_MM, spacing_zyx[2] / INPLANE_MM), order=1)
        h, w = xs.shape[2:]
        ph, pw = (-h) % 16, (-w) % 16
        t = torch.from_numpy(np.pad(xs, ((0, 0), (0, 0), (0, ph), (0, pw))))
        out = np.zeros((xs.shape[0], 2, h, w), np.float32)
        for i in range(0, len(t), 8):
            b = t[i:i + 8]
            p = torch.sigmoid(self.model(b))
            if tta:
                p = (p + torch.sigmoid(self.model(b.flip(-1))).flip(-1)) / 2
            out[i:i + 8] = p[:, :, :h, :w].numpy()
        back = ndi.zoom(out, (1, 1, shape[0] / h, shape[1] / w), order=1)[:, :, : shape[0], : shape[1]]
        return back[:, 0], back[:, 1]


def load_change_net(path: Path) -> ChangeNet:
    raw = Path(path).read_bytes()
    ck = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)
    model = UNet2D(in_ch=IN_CH, out_ch=len(OUTPUTS), base=ck["meta"].get("base", BASE))
    model.load_state_dict(ck["state"])
    return ChangeNet(model, ck["meta"], hashlib.sha256(raw).hexdigest()[:12])


class _Slices:
    """Random 2D crops of the pairs, half of them centred on change."""

    def __init__(self, pairs: list[Pair], crop: int, seed: int):
        self.pairs, self.crop = pairs, crop
        self.rng = np.random.default_rng(seed)
        self.change = [np.argwhere(p.grown | p.lost) for p in pairs]
        self.brain = [np.argwhere(p.region[:, ::4, ::4]) * np.array([1, 4, 4]) for p in pairs]

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        c = self.crop
        while len(xs) < batch:
            i = int(self.rng.integers(len(self.pairs)))
            p = self.pairs[i]
            pts = self.change[i] if (self.rng.random() < 0.5 and len(self.change[i])) else self.brain[i]
            if not len(pts):
                continue
            z, y, x = pts[int(self.rng.integers(len(pts)))]
            y0 = int(np.clip(y - c // 2 + self.rng.integers(-c // 4, c // 4 + 1), 0, max(0, p.follow.shape[1] - c)))
            x0 = int(np.clip(x - c // 2 + self.rng.integers(-c // 4, c // 4 + 1), 0, max(0, p.follow.shape[2] - c)))
            sl = (int(z), slice(y0, y0 + c), slice(x0, x0 + c))
            xin = _inputs(p.follow[sl], p.prior[sl])
            y_ = np.stack([p.grown[sl], p.lost[sl]]).astype(np.float32)
            if xin.shape[1] < c or xin.shape[2] < c:
                pad = ((0, 0), (0, c - xin.shape[1]), (0, c - xin.shape[2]))
                xin, y_ = np.pad(xin, pad), np.pad(y_, pad)
            scale = self.rng.uniform(0.9, 1.1)
            xin = xin * scale
            if self.rng.random() < 0.5:
                xin, y_ = xin[:, :, ::-1], y_[:, :, ::-1]
            if self.rng.random() < 0.5:
                xin, y_ = xin[:, ::-1], y_[:, ::-1]
            k = int(self.rng.integers(4))
            xin, y_ = np.rot90(xin, k, (1, 2)), np.rot90(y_, k, (1, 2))
            xs.append(np.ascontiguousarray(xin))
            ys.append(np.ascontiguousarray(y_))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, y)
    p = torch.sigmoid(logits)
    inter = (p * y).sum((0, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((0, 2, 3)) + y.sum((0, 2, 3)) + 1)
    return bce + dice.mean()


def train_change(pairs: list[Pair], out: Path, iters: int = 1500, batch: int = 16, crop: int = 128,
                 lr: float = 1e-3, seed: int = 0, meta: dict | None = None) -> str:
    """Train on ``pairs``; write ``out`` (state dict + metadata); return its sha256."""
    torch.manual_seed(seed)
    model = UNet2D(in_ch=IN_CH, out_ch=len(OUTPUTS), base=BASE)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=iters, pct_start=0.05)
    data = _Slices(pairs, crop, seed)
    t0, run = time.time(), 0.0
    model.train()
    for it in range(1, iters + 1):
        x, y = data.sample(batch)
        loss = _loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        lv = float(loss.detach())
        run = 0.98 * run + 0.02 * lv if it > 1 else lv
        if it % 50 == 0:
            log.info("it %d loss %.4f (%.2f s/it)", it, run, (time.time() - t0) / it)
    m = dict(meta or {}, iters=iters, batch=batch, crop=crop, lr=lr, seed=seed, base=BASE, outputs=list(OUTPUTS),
             inplane_mm=INPLANE_MM, n_pairs=len(pairs))
    buf = io.BytesIO()
    torch.save({"state": model.state_dict(), "meta": m}, buf)
    Path(out).write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()
