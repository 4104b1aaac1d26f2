"""The overlay step: the same series whether it reuses the main step's FLAIR or reads it again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from dicom_node.devtools.synthetic import blob_labels, result_from_labels
from dicom_node.devtools.wrap import write_mr_series
from dicom_node.run import pipeline
from dicom_node.run.volume import load_series


def _job(tmp_path: Path) -> dict:
    img = sitk.GetImageFromArray(np.full((6, 24, 24), 100.0, np.float32))
    paths = write_mr_series(img, tmp_path / "flair", study_uid="2.25.7", series_number=1,
                            series_description="FLAIR", contrast="FLAIR")
    flair = load_series(paths)
    res = result_from_labels(blob_labels((6, 24, 24), [((3, 12, 12), 3.0)]), flair.image)
    out = tmp_path / "out"
    out.mkdir()
    np.savez_compressed(out / "labels.npz", labels=res.labels)
    (out / "result.json").write_text(json.dumps({
        "job_key": "k", "model": {"name": res.model_name, "version": res.model_version},
        "spacing_mm": list(res.spacing_mm), "summary": res.summary.to_dict(),
        "lesions": [les.to_dict() for les in res.lesions], "files": [], "timings_s": {}}))
    return {"job_id": "j1", "out_dir": str(out), "inputs": {"flair": [str(p) for p in paths]}}


def _overlay_bytes(res: dict) -> list[bytes]:
    return [pydicom.dcmread(f["path"]).PixelData for f in res["files"] if f["kind"] == "OVERLAY"]


def test_overlay_from_the_kept_flair_equals_the_one_from_a_fresh_read(tmp_path):
    job = _job(tmp_path)
    pipeline._LAST_FLAIR.clear()
    fresh = _overlay_bytes(pipeline.run_overlay(job))
    pipeline._LAST_FLAIR[job["job_id"]] = load_series([Path(p) for p in job["inputs"]["flair"]])
    kept = _overlay_bytes(pipeline.run_overlay(job))
    assert fresh and kept == fresh
    assert job["job_id"] not in pipeline._LAST_FLAIR  # used once, then released
    overlay = [f for f in json.loads((Path(job["out_dir"]) / "result.json").read_text())["files"]
               if f["kind"] == "OVERLAY"]
    assert all(f["sop_class_uid"] and f["transfer_syntax_uid"] for f in overlay)
