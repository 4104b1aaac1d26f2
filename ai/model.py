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


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a convolution in a :class:`torch.nn.Sequential` into that
    convolution (``torch.nn.utils.fusion.fuse_conv_bn_eval``; the BatchNorm becomes an
    ``Identity``), in place, for inference only: the model must be in eval mode, and it computes
    what it did to float rounding (about 1e-4 in the logits) with one pass over each feature map
    fewer. Returns ``model``."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("fuse_conv_bn folds the BatchNorm running statistics: call model.eval() first")
    for mod in model.modules():
        if not isinstance(mod, nn.Sequential):
            continue
        items = list(mod._modules.items())
        for (name_c, conv), (name_b, bn) in zip(items, items[1:], strict=False):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                mod._modules[name_c] = fuse_conv_bn_eval(conv, bn)
                mod._modules[name_b] = nn.Identity()
    return model


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class AnatomyHead(nn.Module):
    """A small convolutional read-out of anatomy maps from the UNet's last decoder features:
    conv 3x3, ReLU, conv 3x3 (dilation 2), ReLU, conv 1x1 (it sees 3 pixels further on each side
    than the features do). Trained on frozen features by :mod:`ai.anatomy_head`, so the lesion
    channel is untouched."""

    def __init__(self, cin: int, cout: int, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class UNet2D(nn.Module):
    """Classic UNet (conv-BN-ReLU x2 per level, max-pool down, transposed-conv up).

    Parameters
    ----------
    base : int
        Channels of the first level; level ``k`` has ``base * 2**k``.
    depth : int
        Number of poolings (input sides must be multiples of ``2**depth``).
    anatomy_head : sequence of str
        Output channels (names of :data:`OUTPUTS`, not the lesion) that an :class:`AnatomyHead`
        computes instead of the 1x1 head; empty: none (the 1x1 head gives every channel).
    head_width : int
        Width of the anatomy head.
    """

    def __init__(self, in_ch: int = IN_CHANNELS, out_ch: int = len(OUTPUTS), base: int = 16, depth: int = 4,
                 anatomy_head: tuple[str, ...] | list[str] = (), head_width: int = 16):
        super().__init__()
        self.depth = depth
        ch = [base * 2 ** k for k in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_ch, ch[0])] + [_block(ch[k], ch[k + 1]) for k in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[k + 1], ch[k], 2, stride=2) for k in range(depth)])
        self.dec = nn.ModuleList([_block(2 * ch[k], ch[k]) for k in range(depth)])
        self.head = nn.Conv2d(ch[0], out_ch, 1)
        self.anatomy_channels = tuple(anatomy_head)
        self.anat: AnatomyHead | None = None
        if self.anatomy_channels:
            bad = [k for k in self.anatomy_channels if k not in OUTPUTS[1:]]
            if bad:
                raise ValueError(f"anatomy head channels {bad} are not anatomy outputs {OUTPUTS[1:]}")
            self.anat = AnatomyHead(ch[0], len(self.anatomy_channels), head_width)
            idx = torch.tensor([OUTPUTS.index(k) for k in self.anatomy_channels])
            self.register_buffer("anat_index", idx, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> logits (B, out, H, W)
        f = self.features(x)
        y = self.head(f)
        if self.anat is not None:
            y = y.index_copy(1, self.anat_index, self.anat(f).to(y.dtype))
        return y

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last decoder level's features (B, ``base`` channels, H, W), before the heads."""
        skips = []
        for k, blk in enumerate(self.down):
            x = blk(x)
            if k < self.depth:
                skips.append(x)
                x = self.pool(x)
        for k in reversed(range(self.depth)):
            x = self.up[k](x)
            x = self.dec[k](torch.cat([x, skips[k]], 1))
        return x


def model_from_meta(meta: dict) -> UNet2D:
    """The UNet a weights file's ``meta`` describes (context, base, anatomy head), untrained."""
    ah = meta.get("anatomy_head") or {}
    return UNet2D(in_ch=in_channels(int(meta.get("context", 0))), base=int(meta.get("base", 12)),
                  anatomy_head=tuple(ah.get("channels", ())), head_width=int(ah.get("width", 16)))


def without_anatomy_head(state: dict, what: str) -> dict:
    """``state`` without an anatomy head's tensors (``anat.*``), logged: training or averaging
    changes the features the head reads, so it would no longer match them (retrain it with
    ``python -m ai train-anatomy``)."""
    keys = [k for k in state if k.startswith("anat.")]
    if keys:
        import logging

        logging.getLogger(__name__).warning("%s: the anatomy head is dropped (it reads features this changes); "
                                            "retrain it with 'python -m ai train-anatomy'", what)
    return {k: v for k, v in state.items() if k not in keys}
