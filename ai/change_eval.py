"""``python -m ai evaluate-change``: the lesion-change comparison of :mod:`ai.change` scored on
prior / follow-up pairs with expert change masks (the layout of ``../shared/data/ms/longitudinal``),
with self-pairs and rigidly moved self-pairs as checks (image maths only)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ai.change import (
    CHANGE_MIN_CONTRAST,
    CHANGE_MIN_MM3,
    CHANGE_MIN_SIGNAL,
    CHANGE_P_HIGH,
    CHANGE_P_LOW,
    ENLARGE_MIN_MM3,
    ENLARGE_RATIO,
    ENLARGING,
    NET_INNER_MM,
    NET_P,
    NEW,
    NEW_MAX_PRIOR_PROBABILITY,
    NEW_MIN_INPLANE_MM,
    RULE,
    RULES,
    SHRINKING,
    SPACE,
    SPACES,
    SUB_K,
    SUB_MIN_CONTRAST,
    SUB_MIN_MM3,
    SUB_MIN_SIGNAL,
    SUB_P_MIN,
    THICK_SLICE_RATIO,
    compare,
)
from ai.registration import QC_MIN_HEAD_DICE, comparable, moved_copy, register

log = logging.getLogger(__name__)

__all__ = ["change_on_flair", "evaluate_pairs"]


def change_on_flair(patient: Path, study: str, flair: sitk.Image) -> np.ndarray:
    """The dataset's expert change mask (common space) resampled onto one study's FLAIR grid."""
    cm = sitk.ReadImage(str(patient / "change_mask.nii.gz"))
    to_common = sitk.ReadTransform(str(patient / f"{study}_FLAIR_to_common_space.txt"))
    return sitk.GetArrayFromImage(sitk.Resample(cm, flair, to_common.GetInverse(), sitk.sitkNearestNeighbor, 0)) > 0


def _detection(pred: np.ndarray, ref: np.ndarray, spacing_zyx, probability: np.ndarray | None = None) -> dict:
    """Change-region detection: a reference region is found when a predicted change region
    overlaps it, and a predicted region is true when it overlaps a reference region (both:
    26-connected components >= 10 mm3). With ``probability`` (the lesion probability that counts
    as "seen") also ``by_size``, the same per region volume (:func:`ai.evaluate.detection_by_size`)."""
    from ai.evaluate import detection_by_size, lesion_match
    from ai.lesions import components

    pl, npred = components(pred, spacing_zyx)
    rl, nref = components(ref, spacing_zyx)
    out = lesion_match(pl, npred, rl, nref)
    if probability is not None:
        out["by_size"] = detection_by_size(probability, pl, npred, rl, nref, float(np.prod(spacing_zyx)))
    return out


def evaluate_pairs(pairs_dir: Path, weights=None, device: str = "auto", tta: bool = True, bf16: bool | None = None,
                   self_pairs: bool = True, plots: Path | None = None, space: str | None = None,
                   rule: str | None = None, change_weights: Path | None = None) -> dict:
    """Run the comparison on every ``PAIRS_DIR/<patient>/`` holding ``study1_FLAIR.nii.gz`` (prior),
    ``study2_FLAIR.nii.gz`` (follow-up), optional ``studyK_T1W.nii.gz``, ``change_mask.nii.gz`` and
    ``studyK_FLAIR_to_common_space.txt`` (the layout of ``../shared/data/ms/longitudinal``).

    Per pair: detection sensitivity / PPV / F1 of the expert change regions by the predicted change
    (new, enlarging parts, shrinking or vanished parts; the expert masks mark change in both
    directions), the number of new lesions and of false new lesions (overlapping no change
    region); with ``self_pairs``, the new lesions found between the follow-up and itself and
    between it and a rigidly moved copy of itself (zero is the only right answer), and the change
    regions predicted there (any is false). ``by_size`` (per pair and pooled) splits the detection by
    change-region volume, with the regions the model sees at neither time point (lesion probability
    < 0.1 in both studies). ``space`` / ``rule``: the comparison space and voxel
    rule of :func:`compare` (default :data:`SPACE`, :data:`RULE`); ``change_weights``: the change
    net of the rule ``"net"`` (default :data:`ai.change_net.DEFAULT_WEIGHTS`).
    """
    from ai.evaluate import pool_by_size
    from ai.infer import Segmenter

    space, rule = space or SPACE, rule or RULE
    if space not in SPACES:
        raise SystemExit(f"unknown comparison space {space!r} (one of {', '.join(SPACES)})")
    if rule not in RULES:
        raise SystemExit(f"unknown change rule {rule!r} (one of {', '.join(RULES)})")
    seg = Segmenter(weights, device=device, tta=tta, bf16=bf16)
    net = None
    if rule == "net":
        from ai.change_net import DEFAULT_WEIGHTS, load_change_net

        path = Path(change_weights) if change_weights else DEFAULT_WEIGHTS
        if not path.exists():
            raise SystemExit(f"no change-net weights at {path} (train them: python -m ai train-change)")
        net = load_change_net(path)
    pairs = sorted(p for p in Path(pairs_dir).iterdir() if (p / "study1_FLAIR.nii.gz").exists()
                   and (p / "study2_FLAIR.nii.gz").exists() and (p / "change_mask.nii.gz").exists())
    if not pairs:
        raise SystemExit(f"no pairs (study1_FLAIR, study2_FLAIR, change_mask) under {pairs_dir}")
    res: dict = {}
    for p in pairs:
        img = {k: sitk.ReadImage(str(p / f"{k}_FLAIR.nii.gz"), sitk.sitkFloat32) for k in ("study1", "study2")}
        t1 = {k: sitk.ReadImage(str(p / f"{k}_T1W.nii.gz"), sitk.sitkFloat32)
              if (p / f"{k}_T1W.nii.gz").exists() else None for k in ("study1", "study2")}
        prior, follow = img["study1"], img["study2"]
        m: dict = {"comparable": True}
        why = comparable(prior, follow)
        reg = register(prior, follow) if why is None else None
        if why is None and reg is not None and not reg.ok:
            why = reg.reason
        sp = follow.GetSpacing()[::-1]
        rf = seg.segment(follow, t1["study2"])
        if why is not None:
            m.update(comparable=False, reason=why)
            res[p.name] = m
            log.info("%s: no comparable prior: %s", p.name, why)
            continue
        assert reg is not None  # comparable pairs were registered above
        rp = seg.segment(prior, t1["study1"])
        ch = compare(rp.labels, prior, rf.labels, follow, reg.transform, rp.probability,
                     follow_probability=rf.probability, space=space, rule=rule, change_net=net)
        ref = change_on_flair(p, "study2", follow)
        pred = _predicted_change(ch.change_map)
        # by change-region volume; "not seen": the model's lesion probability stays < 0.1 there at
        # both time points (the prior's carried onto the follow-up grid)
        assert ch.prior_probability is not None  # compare() carries the prior's map onto the follow-up grid
        seen = np.maximum(rf.probability, ch.prior_probability)
        m.update(_detection(pred, ref, sp, seen))
        new_ids = [j for j, s in ch.follow_status.items() if s == "new"]
        m["head_dice"] = reg.head_dice
        m["n_new"], m["n_enlarging"] = ch.n_new, ch.n_enlarging
        m["n_shrinking_or_vanished"] = sum(s != "stable" for s in ch.prior_status.values())
        m["false_new"] = int(sum(not (ref & (rf.labels == j)).any() for j in new_ids))
        if self_pairs:
            same = compare(rf.labels, follow, rf.labels, follow, sitk.Transform(3, sitk.sitkIdentity), rf.probability,
                           follow_probability=rf.probability, space=space, rule=rule, change_net=net)
            moved = moved_copy(follow)  # the whole study moves: its T1 with its FLAIR
            moved_t1 = moved_copy(t1["study2"], centre_of=follow) if t1["study2"] is not None else None
            rm = seg.segment(moved, moved_t1)
            reg_m = register(moved, follow)
            moved_ch = compare(rm.labels, moved, rf.labels, follow, reg_m.transform, rm.probability,
                               follow_probability=rf.probability, space=space, rule=rule, change_net=net)
            m["self_pair_new"] = same.n_new
            m["moved_pair_new"] = moved_ch.n_new
            m["moved_pair_enlarging"] = moved_ch.n_enlarging
            m["self_pair_change_regions"] = _n_regions(same.change_map, sp)
            m["moved_pair_change_regions"] = _n_regions(moved_ch.change_map, sp)
        res[p.name] = m
        if plots:
            _plot(Path(plots) / f"change_{p.name}.png", sitk.GetArrayFromImage(follow), ref, ch.change_map, p.name)
        log.info("%s: change F1 %.3f, %d new (%d false), %d enlarging", p.name, m["lesion_f1"], ch.n_new,
                 m["false_new"], ch.n_enlarging)
    done = [c for c in res if res[c]["comparable"]]
    pooled: dict = {k: int(sum(res[c][k] for c in done)) for k in ("n_ref", "n_pred", "tp_ref", "tp_pred", "false_new")}
    s = pooled["tp_ref"] / pooled["n_ref"] if pooled["n_ref"] else 1.0
    q = pooled["tp_pred"] / pooled["n_pred"] if pooled["n_pred"] else 0.0
    pooled["by_size"] = pool_by_size([res[c]["by_size"] for c in done])
    overall = {"n_pairs": len(done), "pooled": pooled, "sensitivity": s, "ppv": q,
               "f1": 2 * s * q / (s + q) if s + q else 0.0,
               "mean_f1": float(np.mean([res[c]["lesion_f1"] for c in done])) if done else None}
    if self_pairs and done:
        overall["self_pair_new"] = int(sum(res[c]["self_pair_new"] for c in done))
        overall["moved_pair_new"] = int(sum(res[c]["moved_pair_new"] for c in done))
        overall["moved_pair_change_regions"] = int(sum(res[c]["moved_pair_change_regions"] for c in done))
    return {"overall": overall, "pairs": res, "model_version": seg.model_version, "space": space, "rule": rule,
            "change_net_version": net.version if net is not None else None,
            "rules": {"enlarge_ratio": ENLARGE_RATIO, "enlarge_min_mm3": ENLARGE_MIN_MM3,
                      "new_min_inplane_mm": NEW_MIN_INPLANE_MM, "new_max_prior_probability": NEW_MAX_PRIOR_PROBABILITY,
                      "thick_slice_ratio": THICK_SLICE_RATIO, "qc_min_head_dice": QC_MIN_HEAD_DICE,
                      "change_p_high": CHANGE_P_HIGH, "change_p_low": CHANGE_P_LOW,
                      "change_min_mm3": CHANGE_MIN_MM3, "change_min_contrast": CHANGE_MIN_CONTRAST,
                      "change_min_signal": CHANGE_MIN_SIGNAL, "sub_k": SUB_K, "sub_min_contrast": SUB_MIN_CONTRAST,
                      "sub_p_min": SUB_P_MIN, "sub_min_signal": SUB_MIN_SIGNAL, "sub_min_mm3": SUB_MIN_MM3,
                      "net_p": NET_P, "net_inner_mm": NET_INNER_MM}}


def _predicted_change(change_map: np.ndarray) -> np.ndarray:
    """The predicted change that is scored: new lesions, enlarging parts, shrinking or vanished
    parts (the expert masks mark change in both directions)."""
    return np.isin(change_map, (NEW, ENLARGING, SHRINKING))


def _n_regions(change_map: np.ndarray, spacing_zyx) -> int:
    """Predicted change regions (:func:`_predicted_change`) as scored."""
    from ai.lesions import components

    return int(components(_predicted_change(change_map), spacing_zyx)[1])


def _plot(path: Path, img: np.ndarray, ref: np.ndarray, cmap: np.ndarray, name: str) -> None:
    """Four follow-up slices with the most change: expert change (green), new (red), enlarging
    parts (orange), shrinking or vanished parts (blue)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    order = np.argsort((ref | (cmap > 0)).sum((1, 2)))[::-1][:4]
    fig, ax = plt.subplots(1, len(order), figsize=(4.2 * len(order), 4.6))
    for a, z in zip(np.atleast_1d(ax), sorted(order), strict=False):
        a.imshow(img[z], cmap="gray", vmax=np.percentile(img, 99.5))
        for mask, c in ((ref, "lime"), (cmap == NEW, "red"), (cmap == ENLARGING, "orange"),
                        (cmap == SHRINKING, "deepskyblue")):
            if mask[z].any():
                a.contour(mask[z].astype(float), [0.5], colors=c, linewidths=0.8)
        a.set_title(f"{name} slice {z}", fontsize=9)
        a.axis("off")
    fig.suptitle("green: expert change; red: new, orange: enlarging part, blue: shrinking/vanished part", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
