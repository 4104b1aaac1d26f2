"""A small 2D UNet on axial slices: FLAIR (+T1) in, lesion + anatomy probabilities out."""
from __future__ import annotations

import torch
from torch import nn

from ai.synth import ANATOMY

#: output channels: lesion first, then the anatomy maps used for location classes
OUTPUTS: tuple[str, ...] = ("lesion",) + ANATOMY
IN_CHANNELS = 2  #: FLAIR, T1 (zeros when absent)


def in_channels(context: int = 0) -> int:
    """Input channels for ``context`` neighbouring slices on each side (2.5D input).

    The layout is FLAIR at z-context..z+context, then T1 at the same offsets; ``context=0`` is
    the plain 2D input (FLAIR, T1).
    """
    return IN_CHANNELS * (2 * context + 1)


def expand_first_conv(state: dict, context: int) -> dict:
    """Return a copy of a state dict whose first convolution takes the 2.5D input of ``context``.

    The state may be 2D (2 input channels) or 2.5D with a smaller context: the channels it has
    keep their weights at their slice offsets, the added outer neighbours start at zero, so the
    expanded model computes exactly what the given one did until it is fine-tuned."""
    key = "down.0.0.weight"
    w = state[key]
    n = 2 * context + 1
    if w.shape[1] == in_channels(context):
        return dict(state)
    n_old = w.shape[1] // IN_CHANNELS
    if w.shape[1] % IN_CHANNELS or n_old % 2 == 0 or n_old > n:
        raise ValueError(f"cannot expand a first convolution with {w.shape[1]} input channels "
                         f"to context {context} ({in_channels(context)} channels)")
    c_old = (n_old - 1) // 2
    new = torch.zeros((w.shape[0], in_channels(context)) + tuple(w.shape[2:]), dtype=w.dtype)
    lo = context - c_old
    new[:, lo:lo + n_old] = w[:, :n_old]  # FLAIR, the offsets the given model had
    new[:, n + lo:n + lo + n_old] = w[:, n_old:]  # T1, the same offsets
    out = dict(state)
    out[key] = new
    return out


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet2D(nn.Module):
    """Classic UNet (conv-BN-ReLU x2 per level, max-pool down, transposed-conv up).

    Parameters
    ----------
    base : int
        Channels of the first level; level ``k`` has ``base * 2**k``.
    depth : int
        Number of poolings (input sides must be multiples of ``2**depth``).
    """

    def __init__(self, in_ch: int = IN_CHANNELS, out_ch: int = len(OUTPUTS), base: int = 16, depth: int = 4):
        super().__init__()
        self.depth = depth
        ch = [base * 2 ** k for k in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_ch, ch[0])] + [_block(ch[k], ch[k + 1]) for k in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[k + 1], ch[k], 2, stride=2) for k in range(depth)])
        self.dec = nn.ModuleList([_block(2 * ch[k], ch[k]) for k in range(depth)])
        self.head = nn.Conv2d(ch[0], out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> logits (B, out, H, W)
        skips = []
        for k, blk in enumerate(self.down):
            x = blk(x)
            if k < self.depth:
                skips.append(x)
                x = self.pool(x)
        for k in reversed(range(self.depth)):
            x = self.up[k](x)
            x = self.dec[k](torch.cat([x, skips[k]], 1))
        return self.head(x)
