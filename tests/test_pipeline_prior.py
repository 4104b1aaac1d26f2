"""The ``ms-lesions`` pipeline with ``job["prior"]``: whatever the prior, the follow-up's own result
is written, and the report says why there is no comparison when there is none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from dicom_node.devtools.wrap import write_mr_series
from dicom_node.encode.sr_read import read_report
from dicom_node.run import pipeline


def _job(tmp_path: Path, prior: dict) -> dict:
    arr = np.full((8, 48, 48), 200.0, np.float32)
    arr[3:6, 20:28, 20:28] = 900.0
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 3.0))
    paths = write_mr_series(img, tmp_path / "flair", study_uid="2.25.81", series_number=3,
                            series_description="FLAIR", contrast="FLAIR", study_date="20200611")
    return {"job_id": "jp", "job_key": "kp", "out_dir": str(tmp_path / "out"), "device": "cpu",
            "inputs": {"flair": [str(p) for p in paths]},
            "options": {"overlay": False, "tta": False}, "prior": prior}


def _sr_change(res: dict) -> dict:
    sr = next(f for f in res["files"] if f["kind"] == "SR")
    return read_report(pydicom.dcmread(sr["path"]))["change"]


def test_no_prior_is_said_in_the_result_and_the_sr(tmp_path):
    res = pipeline.run_ms_lesions(_job(tmp_path, {"reason": "no earlier MR study of the patient "
                                                            "within 1825 days at PACS"}))
    assert res["change"]["comparable"] is False
    assert "no earlier MR study" in res["change"]["reason"]
    sr = _sr_change(res)
    assert sr["comparable"] is False and "no earlier MR study" in sr["reason"]
    assert sr["n_new"] is None and sr["activity"] is None  # no change figure without a prior
    assert not any("change" in pydicom.dcmread(f["path"]).SeriesDescription.lower()
                   for f in res["files"] if f["kind"] == "SEG")


def test_a_comparison_that_breaks_leaves_the_follow_up_result_standing(tmp_path):
    # a prior whose inputs cannot even be listed: the comparison raises inside the pipeline
    res = pipeline.run_ms_lesions(_job(tmp_path, {"study_uid": "2.25.80", "study_date": "20190305",
                                                  "inputs": {"flair": 5}}))
    assert res["change"]["comparable"] is False
    assert res["change"]["reason"].startswith("comparison with the prior failed: TypeError")
    assert res["change"]["prior_study_uid"] == "2.25.80"
    assert _sr_change(res)["comparable"] is False
    assert any(f["kind"] == "SR" for f in res["files"])


def test_a_comparison_that_cannot_be_encoded_is_not_reported_but_the_study_is(tmp_path,
                                                                              monkeypatch):
    from ai.types import ChangeReport

    def wrong_grid(job, flair, result, seg, opts):  # a change map that is not on the FLAIR grid
        return ChangeReport(True, prior_study_uid="2.25.80", prior_study_date="20190305",
                            interval_days=464, n_new=1, activity=True,
                            change_map=np.ones((2, 5, 5), np.uint8))

    monkeypatch.setattr(pipeline, "compare_with_prior", wrong_grid)
    res = pipeline.run_ms_lesions(_job(tmp_path, {"study_uid": "2.25.80"}))
    assert res["change"]["comparable"] is False
    assert res["change"]["reason"].startswith("comparison could not be encoded")
    assert res["change"]["prior_study_uid"] == "2.25.80"
    sr = _sr_change(res)
    assert sr["comparable"] is False and sr["n_new"] is None
    assert not (Path(res["files"][0]["path"]).parent / "seg_change.dcm").exists()
