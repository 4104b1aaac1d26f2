"""bench/samseg_lesions.py: SAMSEG's lesion label lands on the FLAIR grid where it lies in space."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from bench_script import load

sl = load("samseg_lesions")


def test_lesion_label_is_resampled_onto_the_flair_grid(tmp_path):
    # SAMSEG's labels on a 1 mm grid: white matter (2) everywhere, a 4 mm lesion cube (99)
    lab = np.full((20, 40, 40), 2, np.int16)
    lab[8:12, 20:24, 10:14] = sl.SAMSEG_LESION
    seg = sitk.GetImageFromArray(lab)
    seg.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(seg, str(tmp_path / "seg.nii.gz"))
    # a FLAIR grid of 2 mm voxels in-plane and 4 mm slices, shifted by 2 mm in x
    flair = sitk.Image([18, 20, 5], sitk.sitkFloat32)
    flair.SetSpacing((2.0, 2.0, 4.0))
    flair.SetOrigin((2.0, 0.0, 0.0))
    m = sl.samseg_lesion_mask(tmp_path / "seg.nii.gz", flair)
    assert m.shape == (5, 20, 18)
    z, y, x = np.nonzero(m)
    # physical x 10-13 mm -> FLAIR columns (10 - 2) / 2 = 4 .. (13 - 2) / 2 = 5.5;
    # y 20-23 mm -> rows 10-11; z 8-11 mm -> slice 2
    assert set(x) == {4, 5} and set(y) == {10, 11} and set(z) == {2}
