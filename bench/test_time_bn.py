"""Test-time BatchNorm statistics (AdaBN), measured across patients (variant tbn20; research script).

The model's BatchNorms normalise with statistics gathered on the training crops. A study from
another site may sit elsewhere in feature space (the 3D site under-calls: fold A's lesion
sensitivity 0.33 against PPV 0.89). Here, per study and before the node's usual inference, the
network runs once with its BatchNorms in train mode (cumulative averages) over at most
``--slices`` evenly spaced axial slices of the study's head crop (no mirror images), and each
BatchNorm's running mean and variance become ``alpha * trained + (1 - alpha) * study``
(variant tbn20). Setting ``rel`` (variant tbn20b) keeps the trained statistics and shifts them by
how the study differs from the real studies the file trained on, measured the same way
(:func:`reference_cases`). No weight changes and nothing is trained.

    python bench/test_time_bn.py --alpha 0,0.5,rel --json runs/tbn/tbn.json [--what folds,change]

``folds``: the shipped fold files on the cases they never saw (clinical folds B and C through
``ai.crossval``; folds A and A' on patient19 through ``ai.evaluate``), node defaults otherwise
(mirror TTA, thresholds, the 3D rule). ``change``: the two real pairs of ``longitudinal/``
(``ai.change_eval``, shipped weights). Each setting is printed beside the shipped inference
(``alpha`` 1 is the shipped model: its statistics are kept).

The adoption rules were written before each was scored (model card, "Variants tbn20 and tbn20b").
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai import preprocess as pp  # noqa: E402
from ai.infer import Segmenter, slice_input  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ms"
FOLDS = ROOT / "ai" / "weights" / "folds"


def reference_cases(weights: Path) -> list[Path]:
    """The real studies a file trained on, whose statistics variant tbn20b measures the scored
    study against (``runs/tbn/CRITERION_b.txt``)."""
    from ai.crossval import FOLDS as CASES

    clinical = list(CASES["B"]) + list(CASES["C"])
    p19 = list(CASES["A"])
    return {"foldA.pt": clinical, "foldA_prime.pt": clinical + p19, "foldB.pt": list(CASES["C"]) + p19,
            "foldC.pt": list(CASES["B"]) + p19}.get(Path(weights).name, clinical + p19)


class AdaptiveSegmenter(Segmenter):
    """A :class:`~ai.infer.Segmenter` whose BatchNorm statistics are re-estimated on each study.

    ``alpha``: the trained statistics' share (1: the shipped behaviour). ``relative`` (variant
    tbn20b): instead, shift the trained statistics by how the study's differ from those of the
    real studies the file trained on (:func:`reference_cases`), all measured the same way:
    mean_trained + (mean_study - mean_ref), var_trained * var_study / var_ref."""

    #: studies adapted by any instance (the report shows the patched evaluation really used it)
    studies_adapted = 0

    def __init__(self, *args, alpha: float = 0.0, slices: int = 32, relative: bool = False, **kw):
        super().__init__(*args, **kw)
        if self.fused:
            raise ValueError("test-time BatchNorm statistics need the BatchNorms unfused")
        self.alpha = float(alpha)
        self.slices = int(slices)
        self.adapt_s: list[float] = []
        self.bns = [m for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        self.reference: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if relative:
            self.reference = self.reference_statistics(reference_cases(self.weights))

    def study_statistics(self, prep: pp.Prepared) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each BatchNorm's (mean, variance) over at most ``slices`` evenly spaced slices of the
        study's head crop, in train mode (cumulative); the trained statistics are left as they were."""
        saved = self._snapshot()
        x = slice_input(prep, self.context, 2 ** self.model.depth)
        z = x.shape[0]
        idx = np.unique(np.linspace(0, z - 1, min(z, self.slices)).round().astype(int))
        for m in self.bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
            m.train()
        try:
            with torch.no_grad():
                for s in range(0, len(idx), 8):
                    xb = torch.from_numpy(x[idx[s:s + 8]]).to(self.device)
                    if self.channels_last:
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    self.model(xb)
            return [(m.running_mean.clone(), m.running_var.clone()) for m in self.bns]
        finally:
            self._restore(saved)

    def reference_statistics(self, cases: list[Path]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`study_statistics` averaged over case folders (FLAIR, optional T1)."""
        from ai.evaluate import load_study

        stats = [self.study_statistics(pp.prepare(*load_study(d))) for d in cases]
        return [(torch.stack([s[k][0] for s in stats]).mean(0), torch.stack([s[k][1] for s in stats]).mean(0))
                for k in range(len(self.bns))]

    def _snapshot(self) -> list[tuple[torch.Tensor, torch.Tensor, float | None]]:
        """Each BatchNorm's running statistics and momentum, for :meth:`_restore`."""
        return [(m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in self.bns]

    def _restore(self, saved) -> None:
        for m, (rm, rv, mom) in zip(self.bns, saved, strict=True):
            m.running_mean.copy_(rm)
            m.running_var.copy_(rv)
            m.momentum = mom
            m.eval()

    def predict_grid(self, prep: pp.Prepared) -> np.ndarray:
        if self.alpha >= 1.0 and self.reference is None:
            return super().predict_grid(prep)
        t0 = time.perf_counter()
        study = self.study_statistics(prep)
        saved = self._snapshot()
        try:
            for k, (m, (mean_s, var_s)) in enumerate(zip(self.bns, study, strict=True)):
                if self.reference is None:
                    m.running_mean.mul_(self.alpha).add_((1.0 - self.alpha) * mean_s)
                    m.running_var.mul_(self.alpha).add_((1.0 - self.alpha) * var_s)
                else:
                    mean_r, var_r = self.reference[k]
                    m.running_mean.add_(mean_s - mean_r)
                    m.running_var.mul_(var_s / var_r.clamp_min(1e-6))
            self.adapt_s.append(time.perf_counter() - t0)
            AdaptiveSegmenter.studies_adapted += 1
            return super().predict_grid(prep)
        finally:
            self._restore(saved)


def _patched(setting: str, slices: int):
    """Make ``ai.evaluate`` and ``ai.change_eval`` build :class:`AdaptiveSegmenter` (the latter
    imports ``Segmenter`` from ``ai.infer`` when it runs); ``setting``: an alpha, or ``rel``."""
    import ai.evaluate
    import ai.infer

    kw = {"relative": True} if setting == "rel" else {"alpha": float(setting)}
    factory = functools.partial(AdaptiveSegmenter, slices=slices, **kw)
    ai.evaluate.Segmenter = factory  # type: ignore[misc]
    ai.infer.Segmenter = factory  # type: ignore[misc]


def _summary(u: dict) -> dict:
    keys = ("dice", "lesion_f1", "lesion_sensitivity", "lesion_ppv", "max_fp_per_true_lesion", "fp", "tp_ref",
            "n_ref")
    return {k: u.get(k) for k in keys if k in u}


def run_folds(setting: str, slices: int) -> dict:
    from ai.crossval import crossval
    from ai.evaluate import evaluate_cases

    _patched(setting, slices)
    n0 = AdaptiveSegmenter.studies_adapted
    out: dict = {}
    p19 = SHARED / "cross_sectional" / "patient19"
    for tag, w in (("A", FOLDS / "foldA.pt"), ("A_prime", FOLDS / "foldA_prime.pt")):
        res = evaluate_cases([p19], weights=w, device="cpu")
        out[tag] = _summary(res["cases"]["patient19"]) | {"unseen": not res["cases"]["patient19"]["trained_on"]}
    cv = crossval({"B": FOLDS / "foldB.pt", "C": FOLDS / "foldC.pt"}, device="cpu")
    out["clinical"] = _summary(cv["all"]) | {
        "false_lesions": int(sum(m["fp"] for m in cv["cases"].values())),
        "worst_fp_per_true": max(m["fp_per_true_lesion"] for m in cv["cases"].values()),
        "cases": {c: _summary(m) for c, m in sorted(cv["cases"].items())}}
    out["studies_adapted"] = AdaptiveSegmenter.studies_adapted - n0
    return out


def run_change(setting: str, slices: int) -> dict:
    from ai.change_eval import evaluate_pairs

    _patched(setting, slices)
    n0 = AdaptiveSegmenter.studies_adapted
    res = evaluate_pairs(SHARED / "longitudinal", device="cpu")
    o = res["overall"]
    return {"studies_adapted": AdaptiveSegmenter.studies_adapted - n0,
            "f1": o["f1"], "sensitivity": o.get("sensitivity"), "ppv": o.get("ppv"),
            "false_new": o["pooled"]["false_new"],
            "self_new": sum(m["self_pair_new"] for m in res["pairs"].values()),
            "moved_new": sum(m["moved_pair_new"] for m in res["pairs"].values())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alpha", default="0,0.5",
                    help="comma-separated settings: an alpha (1 = the shipped statistics) or rel (tbn20b)")
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--what", default="folds,change")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if not SHARED.is_dir():
        print(f"{SHARED} not found", file=sys.stderr)
        return 2
    res: dict = {"slices": a.slices, "settings": {}}
    for alpha in a.alpha.split(","):
        r: dict = {}
        if "folds" in a.what:
            r["folds"] = run_folds(alpha, a.slices)
            for k, v in r["folds"].items():
                if not isinstance(v, dict):
                    continue
                nan = float("nan")
                print(f"alpha {alpha}: {k}: Dice {v['dice']:.3f} F1 {v['lesion_f1']:.3f} "
                      f"sens {v.get('lesion_sensitivity', nan):.3f} ppv {v.get('lesion_ppv', nan):.3f}", flush=True)
        if "change" in a.what:
            r["change"] = run_change(alpha, a.slices)
            print(f"alpha {alpha}: change {r['change']}", flush=True)
        res["settings"][alpha] = r
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
