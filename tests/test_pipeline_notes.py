"""What the ``ms-lesions`` pipeline says about its input in the report: a FLAIR of thick coronal or
sagittal slices gets a caveat in the result's notes and the SR; an axial one does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dicom_node.devtools.wrap import write_mr_series
from dicom_node.run import pipeline

# direction cosines (row-major 3x3, columns = voxel axes i, j, k)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
SAGITTAL = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # i: A->P, j: S->I, slices along L-R
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)  # i: R->L, j: S->I, slices along A-P


def _run(tmp_path: Path, direction, thick: float) -> dict:
    arr = np.full((10, 48, 48), 200.0, np.float32)
    arr[4:7, 20:28, 20:28] = 900.0
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, thick))
    img.SetDirection(direction)
    paths = write_mr_series(img, tmp_path / "flair", study_uid="2.25.91", series_number=3,
                            series_description="FLAIR", contrast="FLAIR")
    job = {"job_id": "jn", "job_key": "kn", "out_dir": str(tmp_path / "out"), "device": "cpu",
           "inputs": {"flair": [str(p) for p in paths]}, "options": {"overlay": False, "tta": False}}
    return pipeline.run_ms_lesions(job)


def _sr_comments(res: dict) -> list[str]:
    sr = pydicom.dcmread(next(f for f in res["files"] if f["kind"] == "SR")["path"])
    return [str(it.TextValue) for it in sr.ContentSequence
            if it.ValueType == "TEXT" and it.ConceptNameCodeSequence[0].CodeValue == "121106"]


@pytest.mark.parametrize(("direction", "plane"), [(SAGITTAL, "sagittal"), (CORONAL, "coronal")])
def test_thick_non_axial_flair_carries_a_caveat_in_the_notes_and_the_sr(tmp_path, caplog, direction, plane):
    res = _run(tmp_path, direction, 5.0)
    [note] = res["notes"]
    assert note.startswith(f"FLAIR of {plane} slices 5.0 mm thick") and "more false lesions" in note
    assert note in _sr_comments(res)
    assert f"FLAIR series {res['flair_series_uid']}: FLAIR of {plane} slices" in caplog.text


@pytest.mark.parametrize(("direction", "thick"), [(AXIAL, 5.0), (SAGITTAL, 1.0)])
def test_axial_or_thin_flair_has_no_slice_caveat(tmp_path, direction, thick):
    res = _run(tmp_path, direction, thick)
    assert res["notes"] == []
    assert not any("slices" in c and "thick" in c for c in _sr_comments(res))
