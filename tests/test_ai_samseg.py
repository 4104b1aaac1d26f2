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
