"""Command line: ``python -m ai train|train-anatomy|export|evaluate|evaluate-change|crossval|synth ...``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ai.types import LESION_DICE, THIN_SLICE_GROW, THIN_SLICE_MM

GROW_HELP = (f"on thin-slice grids (every spacing <= {THIN_SLICE_MM} mm) lesions found at the threshold are drawn "
             f"to voxels >= this (the node's default {THIN_SLICE_GROW}); a value >= the threshold: the plain cut")


def _fade(text: str) -> tuple[float, float]:
    """``--lesion-fade P[,ALPHA]`` -> (P, ALPHA)."""
    parts = [float(x) for x in text.split(",") if x]
    p, lo = (parts + [0.5])[:2] if parts else (0.0, 1.0)
    if not (0.0 <= p <= 1.0 and 0.0 < lo <= 1.0):
        raise SystemExit(f"--lesion-fade: probability in [0, 1] and alpha in (0, 1] expected, not {text!r}")
    return (p, lo)


def _train(a: argparse.Namespace) -> int:
    from ai.train import export, train

    ckpt = train(Path(a.out), iters=a.iters, batch=a.batch, crop=a.crop, lr=a.lr, seed=a.seed,
                 n_phantoms=a.phantoms, base=a.base, threads=a.threads, resume=a.resume,
                 real_case=None if a.no_real else Path(a.real_case), ckpt_every=a.ckpt_every,
                 holdout=a.holdout_hemisphere, progress=not a.no_progress,
                 lesion_sampling=a.lesion_sampling, init=Path(a.init) if a.init else None, warmup=a.warmup,
                 context=a.context, clinical=None if a.no_clinical else Path(a.clinical),
                 mni_masks=None if a.no_masks else Path(a.mni_masks),
                 held_out={c for c in a.hold_out.split(",") if c},
                 group_weights={k: float(v) for k, v in (kv.split("=") for kv in a.group_weights.split(",") if kv)},
                 lesion_fade=_fade(a.lesion_fade), lesion_dice=a.lesion_dice,
                 ignore_painted=a.ignore_painted, plane_thick=a.plane_thick,
                 blob=a.blob, samseg=Path(a.samseg) if a.samseg else None,
                 loss_channels=tuple(c for c in a.loss_channels.split(",") if c) if a.loss_channels else None)
    print(f"checkpoint: {ckpt}")
    if a.export:
        digest = export(ckpt, Path(a.export), {"command": " ".join(sys.argv)})
        print(f"exported {a.export} sha256 {digest}")
    return 0


def _export(a: argparse.Namespace) -> int:
    from ai.train import export

    digest = export(Path(a.checkpoint), Path(a.dest), {"command": a.command or ""})
    print(f"exported {a.dest} sha256 {digest}")
    return 0


def _evaluate(a: argparse.Namespace) -> int:
    from ai.evaluate import evaluate, format_by_size
    from ai.infer import bf16_for

    res = evaluate(Path(a.cases), weights=a.weights, plots=Path(a.plots) if a.plots else None,
                   threshold=a.threshold, device=a.device, tta=not a.no_tta,
                   bf16=bf16_for(a.precision), baseline=a.baseline, grow=a.grow)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2))
    o = res["overall"]
    print(f"cases={o['n_cases']} dice={o['dice']:.3f} lesion_f1={o['lesion_f1']:.3f} "
          f"sens={o['lesion_sensitivity']:.3f} ppv={o['lesion_ppv']:.3f}")
    print(f"  all cases, lesions {format_by_size(o['pooled']['by_size'])}")
    for name, c in res["cases"].items():
        extra = ""
        if "holdout" in c:
            extra = f" | held-out part: dice={c['holdout']['dice']:.3f} f1={c['holdout']['lesion_f1']:.3f}"
        if "baseline" in c:
            extra += f" | baseline: dice={c['baseline']['dice']:.3f} f1={c['baseline']['lesion_f1']:.3f}"
        seen = " (trained on)" if c.get("trained_on") else ""
        print(f"  {name}{seen}: dice={c['dice']:.3f} lesion_f1={c['lesion_f1']:.3f} "
              f"false/true lesions={c['fp']}/{c['n_ref']}{extra}")
    for site, u in res["unseen"]["by_site"].items():
        print(f"unseen {site}: cases={u['n_cases']} dice={u['dice']:.3f} lesion_f1={u['lesion_f1']:.3f} "
              f"max false per true lesion={u['max_fp_per_true_lesion']:.2f}")
    if "baseline" in res:
        b = res["baseline"]["all"]
        print(f"baseline ({res['baseline']['rule']}): dice={b['dice']:.3f} lesion_f1={b['lesion_f1']:.3f}")
    return 0


def _crossval(a: argparse.Namespace) -> int:
    from ai.crossval import FOLDS, crossval, print_report
    from ai.infer import bf16_for

    weights = {}
    for item in a.weights.split(","):
        fold, _, path = item.partition("=")
        if fold not in FOLDS or not path:
            raise SystemExit(f"--weights takes FOLD=PATH items with FOLD in {sorted(FOLDS)}, not {item!r}")
        weights[fold] = Path(path)
    res = crossval(weights, threshold=a.threshold, tta=not a.no_tta, bf16=bf16_for(a.precision), device=a.device,
                   grow=a.grow)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2))
    print_report(res)
    return 0


def _evaluate_change(a: argparse.Namespace) -> int:
    from ai.change_eval import evaluate_pairs
    from ai.evaluate import format_by_size
    from ai.infer import bf16_for

    res = evaluate_pairs(Path(a.pairs), weights=a.weights, device=a.device, tta=not a.no_tta,
                         bf16=bf16_for(a.precision), self_pairs=not a.no_self_pairs,
                         plots=Path(a.plots) if a.plots else None, space=a.space, rule=a.rule,
                         change_weights=Path(a.change_weights) if a.change_weights else None)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2))
    for name, m in res["pairs"].items():
        if not m["comparable"]:
            print(f"  {name}: no comparable prior ({m['reason']})")
            continue
        extra = (f" | self-pair new {m['self_pair_new']}, moved-pair new {m['moved_pair_new']}"
                 f" (change regions {m['self_pair_change_regions']}, {m['moved_pair_change_regions']})"
                 if "self_pair_new" in m else "")
        print(f"  {name}: change regions found {m['tp_ref']}/{m['n_ref']}, predicted change regions true "
              f"{m['tp_pred']}/{m['n_pred']}, F1 {m['lesion_f1']:.3f}; new {m['n_new']} (false {m['false_new']}), "
              f"enlarging {m['n_enlarging']}{extra}")
    o = res["overall"]
    print(f"space={res['space']} rule={res['rule']} pairs={o['n_pairs']} change F1 (pooled)={o['f1']:.3f} "
          f"sens={o['sensitivity']:.3f} ppv={o['ppv']:.3f}")
    print(f"  change regions {format_by_size(o['pooled']['by_size'])} (not seen: at either time point)")
    return 0


def _train_change(a: argparse.Namespace) -> int:
    import torch

    from ai.change_net import train_change
    from ai.change_synth import NET1, NET2, synthetic_pairs

    torch.set_num_threads(a.threads)
    opts = {"net1": NET1, "net2": NET2}[a.synthesis]
    pairs = synthetic_pairs(a.mask_pairs, a.clinical_pairs, seed=a.pair_seed, opts=opts)
    if not pairs:
        raise SystemExit("no synthetic pairs: ../shared/data/ms is needed")
    print(f"{len(pairs)} synthetic pairs")
    digest = train_change(pairs, Path(a.out), iters=a.iters, seed=a.seed,
                          meta={"mask_pairs": a.mask_pairs, "clinical_pairs": a.clinical_pairs,
                                "pair_seed": a.pair_seed, "synthesis": a.synthesis,
                                "pairs": [p.name for p in pairs]})
    print(f"{a.out} sha256 {digest}")
    return 0


def _average(a: argparse.Namespace) -> int:
    from ai.average import average

    held = frozenset(x for x in a.hold_out.split(",") if x)
    digest = average([Path(w) for w in a.weights], Path(a.out), bn_batches=a.bn_batches, held_out=held,
                     seed=a.seed, threads=a.threads)
    print(f"{a.out}: sha256 {digest}")
    return 0


def _train_anatomy(a: argparse.Namespace) -> int:
    from ai.anatomy_head import train_anatomy

    try:
        digest = train_anatomy(Path(a.weights), Path(a.out), Path(a.samseg),
                               held_out=frozenset(x for x in a.hold_out.split(",") if x), iters=a.iters,
                               seed=a.seed, width=a.width, threads=a.threads)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.out}: sha256 {digest}")
    return 0


def _synth(a: argparse.Namespace) -> int:
    from ai.synth import make_phantom, write_case

    for i in range(a.n):
        seed = a.seed + i
        thick = a.thickness if a.thickness else (1 if i % 2 == 0 else 3)
        write_case(make_phantom(seed), Path(a.out) / f"phantom{seed:04d}_z{thick}", slice_thickness=thick, seed=seed)
    print(f"wrote {a.n} phantom cases to {a.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from ai.data import CLINICAL2D, MNI_MASKS, REAL_CASE

    p = argparse.ArgumentParser(prog="python -m ai", description="MS lesion AI engine (research use only)")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the UNet (phantoms + the labelled real case when present)")
    t.add_argument("--out", default="runs/ms_unet")
    t.add_argument("--iters", type=int, default=6000)
    t.add_argument("--batch", type=int, default=12)
    t.add_argument("--crop", type=int, default=128)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--phantoms", type=int, default=12)
    t.add_argument("--base", type=int, default=12)
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--ckpt-every", type=int, default=100)
    t.add_argument("--real-case", default=str(REAL_CASE))
    t.add_argument("--no-real", action="store_true", help="without the 3D real case (and its mask synthesis)")
    t.add_argument("--clinical", default=str(CLINICAL2D), help="clinical 2D labelled cases (clinical2d layout)")
    t.add_argument("--no-clinical", action="store_true", help="without the clinical 2D cases")
    t.add_argument("--mni-masks", default=str(MNI_MASKS),
                   help="lesion masks in the real case's MNI space, written into it (real-mask synthesis)")
    t.add_argument("--no-masks", action="store_true", help="without real-mask synthesis")
    t.add_argument("--hold-out", default="", metavar="CASE[,CASE...]",
                   help="case folder names training must not see (a cross-validation fold)")
    t.add_argument("--holdout-hemisphere", action="store_true",
                   help="hold out the 3D real case's left hemisphere (the earlier validation scheme)")
    t.add_argument("--no-holdout", action="store_true", help=argparse.SUPPRESS)  # the default since v2
    t.add_argument("--resume", action="store_true")
    t.add_argument("--lesion-sampling", choices=["voxel", "component"], default="voxel",
                   help="lesion-centred crops: on a random lesion voxel, or on a random lesion component")
    t.add_argument("--init", default=None, help="start from these exported weights (fine-tuning)")
    t.add_argument("--context", type=int, default=0,
                   help="neighbouring slices on each side given to the model (0: 2D, 1: 2.5D)")
    t.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up iterations")
    t.add_argument("--group-weights", default="", metavar="GROUP=W[,GROUP=W...]",
                   help="override how often each group is drawn (clinical, masksynth, real3d, phantoms; "
                        "defaults: ai.train.GROUP_WEIGHTS)")
    t.add_argument("--lesion-fade", default="0", metavar="P[,ALPHA]",
                   help="make the lesions of that share of lesion crops fainter: their excess FLAIR signal "
                        "scaled by an alpha drawn in [ALPHA, 1] (default ALPHA 0.5; 0: off)")
    t.add_argument("--lesion-dice", choices=LESION_DICE, default="batch",
                   help="the lesion channel's soft Dice: over the batch (default), per crop (small lesions "
                        "weigh as much as large ones), or the mean of the two")
    t.add_argument("--ignore-painted", action="store_true",
                   help="leave the real case's painted-out lesions (and 2 voxels around them) out of the "
                        "real-mask volumes' lesion loss: the inpainting leaves lesion-like residue there")
    t.add_argument("--plane-thick", type=float, default=0.0, metavar="P",
                   help="make that share of the thin-slice volumes' crops coronal or sagittal thick-slice "
                        "series (3-6 mm slabs, linearly resampled back, as the node reads them; 0: off)")
    t.add_argument("--blob", type=float, default=0.0, metavar="W",
                   help="add W x a lesion-wise Dice to the lesion loss (each labelled lesion of a crop its "
                        "own Dice, the other lesions masked out: small lesions weigh as much as large "
                        "ones; 0: off)")
    t.add_argument("--samseg", default=None, metavar="DIR",
                   help="SAMSEG labels (DIR/<case>/seg.nii.gz, ai/recipes/samseg_anatomy.sh): the real cases' "
                        "brain, cortex and infratentorial targets (default: heuristics on patient19, none on "
                        "the clinical cases)")
    t.add_argument("--loss-channels", default=None, metavar="NAME[,NAME...]",
                   help="only these outputs count in the loss (e.g. lesion,ventricles: brain, cortex and "
                        "infratentorial left to an anatomy head); default: every output")
    t.add_argument("--export", default=None, help="write shipped weights here after training")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(fn=_train)
    x = sub.add_parser("export", help="checkpoint -> shipped weights file (+ .sha256)")
    x.add_argument("checkpoint")
    x.add_argument("dest", nargs="?", default=str(Path(__file__).parent / "weights" / "ms_unet.pt"))
    x.add_argument("--command", default=None, help="training command to record in the metadata")
    x.set_defaults(fn=_export)
    e = sub.add_parser("evaluate", help="run the shipped model on CASES_DIR/<case>/FLAIR.nii.gz ...")
    e.add_argument("cases")
    e.add_argument("--json", required=True)
    e.add_argument("--plots", default=None)
    e.add_argument("--weights", default=None)
    e.add_argument("--threshold", type=float, default=0.5)
    e.add_argument("--grow", type=float, default=THIN_SLICE_GROW, help=GROW_HELP)
    e.add_argument("--device", default="auto")
    e.add_argument("--no-tta", action="store_true", help="no mirror-image test-time augmentation")
    e.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="CPU arithmetic (auto: bf16 where the CPU has it natively)")
    e.add_argument("--baseline", action="store_true",
                   help="also report a trivial FLAIR-threshold baseline on the same cases")
    e.set_defaults(fn=_evaluate)
    c = sub.add_parser("crossval", help="evaluate cross-patient folds, each on the cases its weights never saw")
    c.add_argument("--weights", required=True, help="FOLD=PATH[,FOLD=PATH...] (folds: ai.crossval.FOLDS)")
    c.add_argument("--json", required=True)
    c.add_argument("--threshold", type=float, default=0.5)
    c.add_argument("--grow", type=float, default=THIN_SLICE_GROW, help=GROW_HELP)
    c.add_argument("--device", default="auto")
    c.add_argument("--no-tta", action="store_true")
    c.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    c.set_defaults(fn=_crossval)
    g = sub.add_parser("evaluate-change", help="new / enlarging / shrinking lesions on prior + follow-up pairs")
    g.add_argument("pairs", help="folder of <patient>/study1_FLAIR.nii.gz, study2_FLAIR.nii.gz, change_mask.nii.gz ...")
    g.add_argument("--json", required=True)
    g.add_argument("--plots", default=None)
    g.add_argument("--weights", default=None)
    g.add_argument("--device", default="auto")
    g.add_argument("--no-tta", action="store_true")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    g.add_argument("--no-self-pairs", action="store_true", help="skip the follow-up-against-itself checks")
    g.add_argument("--space", choices=["follow", "halfway"], default=None,
                   help="where the voxel change rule runs: the follow-up's grid, or a halfway space between "
                        "the two registered studies (default: ai.change.SPACE)")
    g.add_argument("--rule", choices=["joint", "subtraction", "net"], default=None,
                   help="voxel change rule: the joint probability rule alone, with the FLAIR subtraction "
                        "channel for change where no lesion is segmented, or with the change net that sees both "
                        "time points (default: ai.change.RULE)")
    g.add_argument("--change-weights", default=None, help="change-net weights for --rule net "
                   "(default: ai/weights/change_net.pt)")
    g.set_defaults(fn=_evaluate_change)
    tc = sub.add_parser("train-change", help="train the change net on synthetic prior / follow-up pairs")
    tc.add_argument("out")
    tc.add_argument("--mask-pairs", type=int, default=32, help="pairs on patient19's brain with the MNI masks")
    tc.add_argument("--clinical-pairs", type=int, default=72,
                    help="pairs on the clinical and unlabelled longitudinal FLAIRs")
    tc.add_argument("--iters", type=int, default=1500)
    tc.add_argument("--synthesis", choices=["net1", "net2"], default="net2",
                    help="synthesis options (ai.change_synth.NET1 / NET2)")
    tc.add_argument("--seed", type=int, default=0, help="training seed")
    tc.add_argument("--pair-seed", type=int, default=11, help="synthesis seed (the clinical pairs use it + 1)")
    tc.add_argument("--threads", type=int, default=2)
    tc.set_defaults(fn=_train_change)
    s = sub.add_parser("synth", help="write synthetic phantom cases (evaluation layout)")
    s.add_argument("out")
    s.add_argument("--n", type=int, default=4)
    s.add_argument("--seed", type=int, default=90000)
    s.add_argument("--thickness", type=int, default=0, help="slice thickness mm (0: alternate 1 and 3)")
    s.set_defaults(fn=_synth)
    v = sub.add_parser("average", help="average exported weights of one trajectory (SWA-style), BN re-estimated")
    v.add_argument("weights", nargs="+")
    v.add_argument("--out", required=True)
    v.add_argument("--bn-batches", type=int, default=0,
                   help="re-estimate BatchNorm statistics over this many training batches (0: average them)")
    v.add_argument("--hold-out", default="", metavar="CASE[,CASE...]",
                   help="cases the BatchNorm batches must not see (the sources' held-out fold)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--threads", type=int, default=None)
    v.set_defaults(fn=_average)
    n = sub.add_parser("train-anatomy", help="train the anatomy head (brain, cortex, infratentorial) on SAMSEG "
                                             "labels over the frozen weights' features")
    n.add_argument("weights")
    n.add_argument("--out", required=True)
    n.add_argument("--samseg", default="runs/samseg", help="SAMSEG labels: SAMSEG/<case>/seg.nii.gz "
                                                           "(ai/recipes/samseg_anatomy.sh)")
    n.add_argument("--hold-out", default="", metavar="CASE[,CASE...]", help="cases the head must not see")
    n.add_argument("--iters", type=int, default=600)
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--width", type=int, default=8,
                   help="the head's channels (8: the shipped heads; 16: variant ah1, over the speed budget)")
    n.add_argument("--threads", type=int, default=None)
    n.set_defaults(fn=_train_anatomy)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ai.memory import tune

    tune()  # as the node's workers (runner.allocator: tuned); results are the same either way
    return a.fn(a)


if __name__ == "__main__":
    raise SystemExit(main())
