"""Benchmark the AI engine: seconds and peak RSS for preprocessing, inference and post-processing.

    .venv/bin/python bench/inference.py [--device cpu|cuda|all] [--no-t1] [--threads 2] [--real] [--hires] [--compare]
                                        [--weights A.pt,B.pt] [--batch N,M] [--fuse on,off] [--repeat K]
                                        [--allocator tuned,system]

Rows run with the node's defaults (mirror TTA on, precision auto: bf16 on CPUs that have it
natively, fp32 otherwise, fp16 on CUDA); ``--compare`` adds CPU fp32 rows with and without TTA;
``--weights`` runs every row with each weights file in turn (default: the shipped ones), side by
side; ``--batch`` likewise with each number of slices per forward pass (default: the node's);
``--allocator`` likewise with each way of getting memory (:func:`ai.memory.tune`; default
``tuned``, the node's ``runner.allocator``: the timed run then starts from a released heap, as
a study does on the node's idle worker).

Input: a synthetic phantom resampled to a 176 x 256 x 256 grid (sagittal 3D FLAIR geometry,
1 mm, permuted direction so the orientation step does real work) plus a T1 on its own grid, and
(with ``--real`` and when ``../shared/data`` exists) the real labelled case and a raw clinical 2D
FLAIR; with ``--hires`` the phantom as a 3D FLAIR reconstructed at 0.5 mm (448 x 448 x 300), the
grid that is mapped back from the 1 mm model grid. Each stage is timed separately; the peak RSS is
the process high-water mark (``resource.getrusage``), so every configuration runs in its own
subprocess.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _phantom_inputs(with_t1: bool):
    import numpy as np
    import SimpleITK as sitk

    from ai.synth import corrupt, make_phantom

    ph = make_phantom(7, shape=(180, 230, 180))
    rng = np.random.default_rng(7)
    f = ph.image(corrupt(ph.flair, rng))
    # sagittal acquisition: 176 slices (x) of 256 x 256 (y, z), 1 mm
    sag_dir = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    ref = sitk.Image([256, 256, 176], sitk.sitkFloat32)
    ref.SetDirection(sag_dir)
    ref.SetSpacing((1.0, 1.0, 1.0))
    centre = np.array(f.TransformContinuousIndexToPhysicalPoint([s / 2 for s in f.GetSize()]))
    d = np.array(sag_dir).reshape(3, 3)
    ref.SetOrigin(tuple(centre - d @ np.array([128.0, 128.0, 88.0])))
    flair = sitk.Resample(f, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    t1 = None
    if with_t1:
        t = ph.image(corrupt(ph.t1, rng))
        t1 = sitk.Resample(t, [192, 256, 176], sitk.Transform(), sitk.sitkLinear, t.GetOrigin(),
                           (1.0, 1.0, 1.2), t.GetDirection(), 0.0, sitk.sitkFloat32)
    return flair, t1


def _hires_inputs(with_t1: bool):
    """A 3D FLAIR reconstructed at 0.5 x 0.5 x 0.6 mm (448 x 448 x 300, axial), as scanners that
    interpolate their 3D FLAIR to a 512 matrix send it; the T1 as in the phantom case."""
    import numpy as np
    import SimpleITK as sitk

    from ai.synth import corrupt, make_phantom

    ph = make_phantom(7, shape=(180, 230, 180), skull=True)
    rng = np.random.default_rng(7)
    f = ph.image(corrupt(ph.flair, rng))
    ref = sitk.Image([448, 448, 300], sitk.sitkFloat32)
    ref.SetSpacing((0.5, 0.5, 0.6))
    centre = np.array(f.TransformContinuousIndexToPhysicalPoint([s / 2 for s in f.GetSize()]))
    ref.SetOrigin(tuple(centre - np.array([112.0, 112.0, 90.0])))
    flair = sitk.Resample(f, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return flair, (ph.image(corrupt(ph.t1, rng)) if with_t1 else None)


def _real_inputs(which: str, with_t1: bool):
    import SimpleITK as sitk

    from ai.data import SHARED

    if which == "real3d":
        d = SHARED / "ms" / "cross_sectional" / "patient19"
        f, t = d / "FLAIR.nii.gz", d / "T1.nii.gz"
    else:
        d = SHARED / "ms" / "longitudinal" / "patient01"
        f, t = d / "study1_FLAIR.nii.gz", d / "study1_T1W.nii.gz"
    if not f.exists():
        return None, None
    return sitk.ReadImage(str(f), sitk.sitkFloat32), (sitk.ReadImage(str(t), sitk.sitkFloat32) if with_t1 else None)


def run_one(case: str, device: str, with_t1: bool, threads: int, bf16: bool | None, tta: bool = True,
            weights: str | None = None, batch: int | None = None, fuse: bool = False,
            allocator: str = "tuned") -> dict:
    """Run one configuration in this process and return its figures."""
    from ai import memory

    memory.tune(allocator)  # as the node's worker does at start-up (runner.allocator)
    import numpy as np
    import torch

    from ai import preprocess as pp
    from ai.infer import Segmenter

    if case == "phantom":
        flair, t1 = _phantom_inputs(with_t1)
    elif case == "hires":
        flair, t1 = _hires_inputs(with_t1)
    else:
        flair, t1 = _real_inputs(case, with_t1)
    if flair is None:
        return {"case": case, "skipped": "shared data not found"}
    seg = Segmenter(weights, device=device, threads=threads, bf16=bf16, tta=tta, batch=batch, fuse=fuse)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seg.segment(flair, t1)  # warm-up (first call pays allocator / kernel selection)
    if allocator == "tuned":
        memory.release()  # the node's idle worker returns its kept heap before the next study
    res = seg.segment(flair, t1)  # the timed run: the stages as the node runs them
    times = {k: float(v) for k, v in res.timings_s.items()}
    prep = pp.prepare(flair, t1)  # for the figures below only (grid, slices run)
    lesions, prob = res.lesions, res.probability
    times["total"] = sum(times.values())
    return {"case": case, "device": str(seg.device), "t1": with_t1, "threads": threads,
            "weights": seg.model_version[:8], "batch": seg.batch, "fused": seg.fused,
            "precision": seg.precision, "tta": tta, "allocator": allocator,
            "size_xyz": list(flair.GetSize()), "model_grid_zyx": list(prep.flair.shape),
            "slices_run": int(prep.crop[0].stop - prep.crop[0].start),
            "seconds": {k: round(v, 2) for k, v in times.items()}, "lesions": len(lesions),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_after_model_load_mb": round(rss0, 1),
            "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if seg.device.type == "cuda" else None,
            "mean_prob": float(np.mean(prob))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="all", help="cpu, cuda or all (cuda only when available)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-t1", action="store_true")
    p.add_argument("--compare", action="store_true",
                   help="besides the node's defaults (TTA on, precision auto), time CPU fp32 with and "
                        "without TTA")
    p.add_argument("--real", action="store_true", help="also the real cases from ../shared/data")
    p.add_argument("--hires", action="store_true",
                   help="also a phantom FLAIR reconstructed at 0.5 x 0.5 x 0.6 mm (448 x 448 x 300)")
    p.add_argument("--weights", default=None, help="comma-separated weights files, each run in turn "
                                                   "(default: the shipped weights)")
    p.add_argument("--batch", default=None, help="comma-separated slices per forward pass, each run in turn "
                                                 "(default: the node's)")
    p.add_argument("--fuse", default=None, help="comma-separated on/off: BatchNorm folded into the convolutions "
                                                "(ai.model.fuse_conv_bn), each run in turn (default: off, the node's)")
    p.add_argument("--allocator", default=None,
                   help="comma-separated tuned/system: how the process gets memory (ai.memory.tune), each "
                        "run in turn (default: tuned, the node's runner.allocator)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the whole set of rows this many times, interleaved (on a noisy machine the "
                        "rows then share its slow and quiet minutes), and print each row's median")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        cfg = json.loads(a.one)
        print(json.dumps(run_one(**cfg)))
        return 0
    import torch

    devices = ["cpu", "cuda"] if a.device == "all" else [a.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    cases = ["phantom"] + (["hires"] if a.hires else []) + (["real3d", "real2d"] if a.real else [])
    weights = a.weights.split(",") if a.weights else [None]
    batches = [int(x) for x in a.batch.split(",")] if a.batch else [None]
    fuses = [{"on": True, "off": False}[x] for x in a.fuse.split(",")] if a.fuse else [False]
    from ai.memory import ALLOCATORS

    allocators = a.allocator.split(",") if a.allocator else ["tuned"]
    bad = [x for x in allocators if x not in ALLOCATORS]
    if bad:
        p.error(f"--allocator: one of {', '.join(ALLOCATORS)}, not {', '.join(bad)}")
    t1s = [False] if a.no_t1 else [True, False]
    configs = []
    for w, b, fu, al, case, dev, t1 in itertools.product(weights, batches, fuses, allocators, cases, devices, t1s):
        row = dict(case=case, device=dev, with_t1=t1, threads=a.threads, weights=w, batch=b, fuse=fu,
                   allocator=al)
        configs.append(dict(row, bf16=None, tta=True))
        if a.compare and dev == "cpu":
            configs += [dict(row, bf16=False, tta=tta) for tta in (True, False)]
    print(f"{'weights':8} {'batch':5} {'fuse':4} {'alloc':6} {'case':8} {'device':6} {'T1':3} {'prec':4} {'tta':3} "
          f"{'prep s':>7} {'infer s':>8} {'post s':>7} "
          f"{'total s':>8} "
          f"{'peak RSS MB':>11}  grid")
    totals: dict[str, list[tuple[float, float]]] = {}
    for cfg in configs * max(1, a.repeat):
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        r = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg)], capture_output=True, text=True,
                           env=env, cwd=ROOT)
        if r.returncode != 0:
            print(f"{cfg['case']:8} {cfg['device']:6} failed: {r.stderr.strip().splitlines()[-1:]}")
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        if "skipped" in res:
            print(f"{res['case']:8} skipped: {res['skipped']}")
            continue
        s = res["seconds"]
        key = (f"{res['weights']:8} {res['batch']:5} {'on' if res['fused'] else 'off':4} {res['allocator']:6} "
               f"{res['case']:8} "
               f"{res['device']:6} {'yes' if res['t1'] else 'no':3} {res['precision']:4} "
               f"{'on' if res['tta'] else 'off':3}")
        print(f"{key} {s['preprocess']:7.2f} {s['inference']:8.2f} {s['postprocess']:7.2f} {s['total']:8.2f} "
              f"{res['peak_rss_mb']:11.0f}  {res['model_grid_zyx']} ({res['slices_run']} slices run)")
        totals.setdefault(key, []).append((s["inference"], s["total"]))
    if a.repeat > 1:
        import statistics

        print(f"\nmedians over {a.repeat} interleaved runs: inference s, total s (min-max)")
        for key, v in totals.items():
            inf, tot = [x[0] for x in v], [x[1] for x in v]
            print(f"{key}  {statistics.median(inf):8.2f} {statistics.median(tot):8.2f} "
                  f"({min(tot):.2f}-{max(tot):.2f}, n={len(v)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
