"""Raw clinical 2D FLAIR check: do predicted lesions cover the experts' lesion-change regions?

    .venv/bin/python bench/change_overlap.py [--weights A.pt B.pt ...] [--no-t1]

Data: ``../shared/data/ms/longitudinal`` (Lesjak et al. 2016, CC-BY): per patient two raw
clinical studies (2D FLAIR with skull, about 0.72 x 0.72 x 3-4 mm, T1W on its own grid) and an
expert mask of white-matter lesion CHANGES between them in the dataset's common space, with the
affine that maps each raw FLAIR into that space. The change mask is resampled onto each study's
FLAIR (the inverse of that affine: the file maps FLAIR points into the common space).

A change region is a new, enlarging, shrinking or resolving lesion, often only the rim of a
lesion, so the figure printed is not a sensitivity: it is the number of change regions
(26-connected, >= 10 mm3 on the FLAIR grid) that a predicted lesion overlaps, next to the number
of predicted lesions. Several weights run side by side in one process, on the same inputs, so
their figures compare directly. Nothing here was used to train or select the model.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai.change_eval import change_on_flair  # noqa: E402
from ai.data import SHARED  # noqa: E402

LONGITUDINAL = SHARED / "ms" / "longitudinal"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="*", default=[None], help="weights files (default: the shipped ones)")
    ap.add_argument("--no-t1", action="store_true", help="FLAIR only")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    if not LONGITUDINAL.is_dir():
        print(f"skipped: {LONGITUDINAL} not found (../shared/data absent)")
        return 0

    import numpy as np
    import SimpleITK as sitk

    from ai.infer import Segmenter
    from ai.lesions import components

    segs = [Segmenter(w, device="cpu", threads=a.threads) for w in a.weights]
    names = [s.model_version[:8] for s in segs]
    totals = {n: [0, 0, 0, 0.0] for n in names}  # change regions hit, change regions, predicted lesions, s
    print(f"{'study':24s} {'change':>6s} " + " ".join(f"{n + ' hit':>13s} {'pred':>5s}" for n in names))
    for patient in sorted(p for p in LONGITUDINAL.iterdir() if (p / "change_mask.nii.gz").exists()):
        for study in ("study1", "study2"):
            fp = patient / f"{study}_FLAIR.nii.gz"
            if not fp.exists():
                continue
            flair = sitk.ReadImage(str(fp), sitk.sitkFloat32)
            t1p = patient / f"{study}_T1W.nii.gz"
            t1 = sitk.ReadImage(str(t1p), sitk.sitkFloat32) if (t1p.exists() and not a.no_t1) else None
            sp = flair.GetSpacing()[::-1]
            cl, nc = components(change_on_flair(patient, study, flair), sp)
            row = f"{patient.name + '/' + study:24s} {nc:6d} "
            for n, seg in zip(names, segs, strict=False):
                t0 = time.perf_counter()
                res = seg.segment(flair, t1)
                dt = time.perf_counter() - t0
                hit = len(np.unique(cl[(res.labels > 0) & (cl > 0)]))
                tot = totals[n]
                tot[0] += hit
                tot[1] += nc
                tot[2] += res.summary.lesion_count
                tot[3] += dt
                row += f"{hit:13d} {res.summary.lesion_count:5d} "
            print(row, flush=True)
    print()
    for n, (hit, nc, npred, dt) in totals.items():
        print(f"weights {n}: {hit} of {nc} change regions overlap a predicted lesion; "
              f"{npred} predicted lesions in all; {dt:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
