"""SAMSEG label volumes (FreeSurfer label values) to the model's anatomy channels."""
from __future__ import annotations

import numpy as np

from ai.data import samseg_anatomy


def test_samseg_labels_map_to_the_anatomy_channels():
    """Brain is everything inside the skull (CSF included; skull, scalp, eyes and background
    not); lateral ventricles with their inferior horns, cerebral cortex of both sides, and
    cerebellum, brainstem and 4th ventricle as infratentorial; white matter is brain only."""
    names = {0: "unknown", 165: "skull", 258: "soft non-brain", 259: "eyes", 24: "CSF", 2: "L WM",
             41: "R WM", 3: "L cortex", 42: "R cortex", 4: "L lat vent", 43: "R lat vent", 5: "L inf lat vent",
             14: "3rd vent", 8: "L cerebellum cortex", 47: "R cerebellum cortex", 16: "brainstem",
             15: "4th vent", 10: "L thalamus"}
    seg = np.array(list(names), np.int16).reshape(1, 1, -1)
    a = samseg_anatomy(seg)
    got = {k: {names[v] for v in seg.ravel() if a[k].ravel()[list(seg.ravel()).index(v)]} for k in a}
    assert got["brain"] == set(names.values()) - {"unknown", "skull", "soft non-brain", "eyes"}
    assert got["ventricles"] == {"L lat vent", "R lat vent", "L inf lat vent"}
    assert got["cortex"] == {"L cortex", "R cortex"}
    assert got["infratentorial"] == {"L cerebellum cortex", "R cerebellum cortex", "brainstem", "4th vent"}
    assert all(m.dtype == bool and m.shape == seg.shape for m in a.values())


def test_samseg_labels_become_the_clinical_cases_anatomy_targets(tmp_path, caplog):
    """``ai train --samseg``: a clinical case's brain, cortex and infratentorial targets become
    SAMSEG's (and count in the loss), the cortex leaving the manual lesions and a voxel around
    them out; its lesion and manual ventricle labels are not touched; a case without SAMSEG labels
    keeps no anatomy target and says so."""
    import logging

    import SimpleITK as sitk
    from scipy import ndimage as ndi

    from ai.data import training_volumes
    from ai.model import OUTPUTS
    from ai.synth import make_phantom, write_case

    ph = make_phantom(5, shape=(40, 96, 96))
    cases = tmp_path / "clinical"
    for name in ("a", "b"):
        write_case(ph, cases / name, slice_thickness=4)
        sitk.WriteImage(sitk.ReadImage(str(cases / name / "lesion_mask.nii.gz")),
                        str(cases / name / "ventricle_mask.nii.gz"))  # any manual mask will do
    flair = sitk.ReadImage(str(cases / "a" / "FLAIR.nii.gz"))
    f = sitk.GetArrayFromImage(flair)
    seg = np.where(f > 0.1 * f.max(), 2, 0).astype(np.int16)     # white matter
    zz, yy, xx = np.indices(seg.shape)
    seg[(seg == 2) & (xx < seg.shape[2] // 2)] = 3                # "cortex": the left half
    seg[(seg == 2) & (zz < 6)] = 16                                # "brainstem": the lowest slices
    img = sitk.GetImageFromArray(seg)
    img.CopyInformation(flair)
    (tmp_path / "samseg" / "a").mkdir(parents=True)
    sitk.WriteImage(img, str(tmp_path / "samseg" / "a" / "seg.nii.gz"))

    plain = {v.name: v for v in training_volumes(real_case=None, clinical=cases, mni_masks=None)["clinical"]}
    with caplog.at_level(logging.WARNING, logger="ai.data"):
        got = {v.name: v for v in training_volumes(real_case=None, clinical=cases, mni_masks=None,
                                                   samseg=tmp_path / "samseg")["clinical"]}
    a, b = got["a"], got["b"]
    assert a.valid.tolist() == [1, 1, 1, 1, 1] and b.valid.tolist() == plain["b"].valid.tolist()
    assert plain["a"].valid.tolist() == [1, 0, 1, 0, 0]
    assert "b: no SAMSEG labels" in caplog.text
    for name in ("lesion", "ventricles"):
        k = OUTPUTS.index(name)
        assert np.array_equal(a.labels[k], plain["a"].labels[k])
    on_grid = sitk.GetArrayFromImage(sitk.Resample(img, a.grid, sitk.Transform(), sitk.sitkNearestNeighbor))
    lesion = a.labels[OUTPUTS.index("lesion")] > 0
    assert lesion.any()
    cortex = a.labels[OUTPUTS.index("cortex")] > 0
    assert np.array_equal(cortex, (on_grid == 3) & ~ndi.binary_dilation(lesion))
    assert np.array_equal(a.labels[OUTPUTS.index("infratentorial")] > 0, on_grid == 16)
    assert np.array_equal(a.labels[OUTPUTS.index("brain")] > 0, on_grid > 0)
    assert not b.labels[OUTPUTS.index("cortex")].any()
