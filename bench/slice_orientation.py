"""How the model fares on thick slices cut in each plane: patient19 made into thick 2D series.

    .venv/bin/python bench/slice_orientation.py [--weights A.pt B.pt ...] [--thick 3 5]

``../shared/data/ms/cross_sectional/patient19`` (3D, 1 mm) is block-averaged into slabs of
``--thick`` mm along one axis at a time: axial (slices stacked inferior-superior), coronal
(anterior-posterior) or sagittal (left-right), FLAIR and T1 alike, as a thick 2D acquisition
averages the signal across its slice. Every weights file segments every series with the node's
defaults (mirror TTA; lesions at probability 0.5, as the node draws them on thick slices); the
reference is the expert mask averaged the same way (>= 0.5). Printed per plane: voxel Dice,
lesion F1, reference lesions, false lesions (26-connected, >= 3 voxels and >= 10 mm3, as
``python -m ai evaluate``).

The model reads axial slices; a non-axial series reaches it resampled to 1 x 1 mm axial slices,
blurred along one in-plane axis. Weights that trained on patient19 (the shipped model) give a fit,
not a generalisation figure; the fold weights that held patient19 out give the unseen one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASE = ROOT.parent / "shared" / "data" / "ms" / "cross_sectional" / "patient19"
PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}  # numpy axis (z, y, x) the slabs stack along


def slabs(img: sitk.Image, axis: int, k: int) -> sitk.Image:
    """``img`` averaged over blocks of ``k`` voxels along numpy ``axis``: a thick-slice series
    on the same geometry (slab centres, slab spacing)."""
    a = sitk.GetArrayFromImage(img).astype(np.float32)
    n = a.shape[axis] // k * k
    a = np.take(a, range(n), axis=axis)
    shape = list(a.shape)
    shape[axis] = n // k
    shape.insert(axis + 1, k)
    out = sitk.GetImageFromArray(a.reshape(shape).mean(axis + 1))
    sp = list(img.GetSpacing())
    i = 2 - axis  # the sitk index of that axis
    sp[i] *= k
    out.SetSpacing(sp)
    out.SetDirection(img.GetDirection())
    col = np.array(img.GetDirection()).reshape(3, 3)[:, i]
    out.SetOrigin(tuple(np.array(img.GetOrigin()) + col * img.GetSpacing()[i] * (k - 1) / 2))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", nargs="*", default=[None], help="weights files (default: the shipped)")
    ap.add_argument("--thick", nargs="*", type=int, default=[3, 5], help="slab thickness, mm (whole voxels)")
    a = ap.parse_args(argv)
    if not (CASE / "FLAIR.nii.gz").exists():
        print(f"{CASE} not found (../shared/data absent)", file=sys.stderr)
        return 2
    from ai.evaluate import case_metrics
    from ai.infer import Segmenter

    flair = sitk.ReadImage(str(CASE / "FLAIR.nii.gz"), sitk.sitkFloat32)
    t1 = sitk.ReadImage(str(CASE / "T1.nii.gz"), sitk.sitkFloat32)
    mask = sitk.ReadImage(str(CASE / "lesion_mask.nii.gz"), sitk.sitkFloat32)
    print(f"{'weights':<28} {'mm':>3} {'plane':<9} {'Dice':>6} {'F1':>6} {'ref':>4} {'false':>5}")
    for w in a.weights:
        seg = Segmenter(w, device="cpu")
        name = Path(w).name if w else f"shipped {seg.model_version[:8]}"
        for k in a.thick:
            for plane, axis in PLANES.items():
                f, t, m = slabs(flair, axis, k), slabs(t1, axis, k), slabs(mask, axis, k)
                ref = sitk.GetArrayFromImage(m) >= 0.5
                r = seg.segment(f, t)
                met = case_metrics(r.probability, ref, f.GetSpacing()[::-1], 0.5, by_size=False)
                print(f"{name:<28} {k:>3} {plane:<9} {met['dice']:>6.3f} {met['lesion_f1']:>6.3f} "
                      f"{met['n_ref']:>4} {met['fp']:>5}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
