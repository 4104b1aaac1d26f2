"""Weight averaging (SWA-style) of exported weights from one training trajectory.

``python -m ai average A.pt B.pt --out AVG.pt [--bn-batches 100 --hold-out CASE,...]``

The floating-point tensors of the state dicts are averaged (equal weights). BatchNorm running
statistics of an average are not the average of the running statistics, so with
``--bn-batches N`` they are recomputed: the averaged model runs in train mode, without
gradients, over N batches of training crops drawn by the training sampler
(:class:`ai.train.Sampler`, same groups, group weights and augmentation as training) from the
training volumes with the ``--hold-out`` cases left out, and each BatchNorm layer keeps the
cumulative mean of its batch statistics. The metadata records which files were averaged (path
and SHA-256), how the BatchNorm statistics were obtained and the cases the sources trained on.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ai.data import CLINICAL2D, MNI_MASKS, REAL_CASE
from ai.infer import sha256
from ai.model import UNet2D, in_channels, without_anatomy_head

log = logging.getLogger(__name__)


def average_state(states: list[dict]) -> dict:
    """Mean of floating-point tensors; integer tensors (``num_batches_tracked``) from the first."""
    out = {}
    for k, v in states[0].items():
        if torch.is_floating_point(v):
            out[k] = sum(s[k].double() for s in states).div(len(states)).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


@torch.no_grad()
def recompute_bn(model: torch.nn.Module, sampler, n_batches: int, batch: int = 12) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative mean) from
    ``n_batches`` batches of the sampler, the model in train mode without gradients."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    moms = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    for _ in range(n_batches):
        x = sampler.batch(batch)[0]
        model(x)
    for m, mo in zip(bns, moms, strict=True):
        m.momentum = mo
    model.eval()


def average(paths: list[Path], out: Path, bn_batches: int = 0, held_out: frozenset[str] = frozenset(),
            seed: int = 0, threads: int | None = None, batch: int = 12) -> str:
    """Write the average of the exported weights ``paths`` to ``out`` and return its SHA-256
    (module docstring). ``bn_batches`` 0 keeps the averaged running statistics."""
    if threads:
        torch.set_num_threads(threads)
    sts = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    metas = [s.get("meta", {}) for s in sts]
    for k in ("base", "context", "outputs"):
        if len({str(m.get(k)) for m in metas}) != 1:
            raise ValueError(f"weights differ in {k}: cannot average")
    state = average_state([without_anatomy_head(s["state_dict"], str(p)) for s, p in zip(sts, paths, strict=True)])
    cfgs = [m.get("train_config", {}) for m in metas]
    trained = sorted(set().union(*(set(c.get("trained_on") or []) for c in cfgs)))
    held = sorted(set.intersection(*(set(c.get("held_out") or []) for c in cfgs)))
    missing = sorted(set(held_out) - set(held))
    if missing:
        raise ValueError(f"--hold-out {missing}: some averaged weights trained on them")
    bn = "running statistics averaged with the weights"
    if bn_batches:
        from ai.train import GROUP_WEIGHTS, Sampler, training_groups

        torch.manual_seed(seed)
        gw = dict(GROUP_WEIGHTS, **(cfgs[0].get("group_weights") or {}))
        groups = training_groups(frozenset(held_out), seed=seed, n_phantoms=int(cfgs[0].get("n_phantoms", 12)),
                                 real_case=REAL_CASE, clinical=CLINICAL2D, mni_masks=MNI_MASKS,
                                 ignore_painted=bool(cfgs[0].get("ignore_painted")))
        sampler = Sampler(groups, seed=seed + 7, crop=int(cfgs[0].get("crop", 128)),
                          lesion_sampling=cfgs[0].get("lesion_sampling", "component"),
                          context=int(metas[0].get("context", 0)), weights=gw)
        model = UNet2D(in_ch=in_channels(int(metas[0].get("context", 0))), base=int(metas[0].get("base", 12)))
        model.load_state_dict(state)
        recompute_bn(model, sampler, bn_batches, batch)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        bn = (f"recomputed: cumulative mean over {bn_batches} batches of {batch} training crops "
              f"(ai.train.Sampler, seed {seed + 7}, group weights {gw}, held out {sorted(held_out)}), "
              f"model in train mode without gradients")
    config = {"average_of": [{"path": str(p), "sha256": sha256(p), "iter": m.get("iter")}
                             for p, m in zip(paths, metas, strict=True)],
              "batchnorm": bn, "trained_on": trained, "held_out": held,
              "base": metas[0].get("base"), "context": metas[0].get("context", 0)}
    lineage = [dict(c, iter=m.get("iter"), path=str(p), lineage=m.get("lineage", []))
               for p, c, m in zip(paths, cfgs, metas, strict=True)]
    meta = {k: v for k, v in metas[0].items() if k in ("name", "outputs", "base", "context")}
    meta.update(iter=None, train_config=config, lineage=lineage)
    from ai.train import write_weights

    return write_weights(out, state, meta)
