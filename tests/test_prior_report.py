"""The prior's tracking UIDs taken from the node's own SR of the prior (issue 11), when the node
no longer holds its result folder: the SR's lesions are mapped to the prior as segmented again
(same model version, same FLAIR, the same lesions), and an SR that does not fit is not used."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from ai.types import ChangeReport, LesionChange
from dicom_node.devtools.synthetic import blob_labels, result_from_labels
from dicom_node.devtools.wrap import write_mr_series
from dicom_node.encode.seg import build_seg
from dicom_node.encode.sr import build_sr, lesion_tracking
from dicom_node.encode.sr_read import read_report
from dicom_node.run import pipeline
from dicom_node.run.followup import prior_report_tracking
from dicom_node.run.volume import load_series

SHAPE = (12, 64, 64)
BLOBS = [((4, 20, 22), 2.5), ((6, 40, 38), 3.0), ((8, 30, 45), 2.0)]
OTHER_MODEL = "1" * 64


def _head() -> sitk.Image:
    """A head-like ellipsoid with three bright lesions (what the fake segmenter finds)."""
    zz, yy, xx = np.indices(SHAPE)
    arr = np.where(((yy - 32) / 26.0) ** 2 + ((xx - 32) / 24.0) ** 2 + ((zz - 6) / 7.0) ** 2 <= 1,
                   300.0, 5.0).astype(np.float32)
    arr[blob_labels(SHAPE, BLOBS) > 0] = 900.0
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 3.0))
    return img


def _series(tmp: Path, tag: str, date: str):
    return write_mr_series(_head(), tmp / tag, study_uid=f"2.25.77{len(tag)}{date}",
                           series_number=3, series_description="FLAIR", contrast="FLAIR",
                           study_date=date)


def _prior_sr(tmp: Path, vol, model_version: str = "0" * 64) -> tuple[Path, dict]:
    """The node's SR of the prior, written when that prior was itself a follow-up: its lesion 1
    continues an older lesion ("Lesion 7"), so identifiers and labels differ."""
    res = result_from_labels(blob_labels(SHAPE, BLOBS), vol.image, model_version=model_version)
    older = ChangeReport(True, prior_study_uid="2.25.70", prior_study_date="20180101",
                         lesions=[LesionChange(1, "follow-up", "stable", 50.0, 49.0,
                                               "2.25.1234567", "Lesion 7")])
    seg = build_seg(res, vol, job_key="prior-job")
    path = tmp / "prior_sr.dcm"
    build_sr(res, vol, seg, job_key="prior-job", change=older).save_as(path)
    return path, lesion_tracking(res, "prior-job", older)


def test_the_sr_lesions_map_to_the_resegmented_prior_by_label(tmp_path, caplog):
    vol = load_series(_series(tmp_path, "prior", "20190305"))
    path, written = _prior_sr(tmp_path, vol)
    res = result_from_labels(blob_labels(SHAPE, BLOBS), vol.image)  # the prior segmented again
    prior = {"study_uid": "2.25.71", "series": {"flair": vol.series_uid},
             "own_reports": [str(path)]}
    caplog.set_level(logging.INFO, logger="dicom_node.run.followup")
    got = prior_report_tracking(prior, res.model_version, vol, res.lesions, "j1")
    assert got == written
    assert got[1] == ("2.25.1234567", "Lesion 7")  # by label, not by the identifier's number
    assert "tracking UIDs of 3 prior lesion(s) taken from the node's SR" in caplog.text

    # the same SR against other lesions, another FLAIR, or an unreadable file: not used
    fewer = result_from_labels(blob_labels(SHAPE, BLOBS[:2]), vol.image)
    assert prior_report_tracking(prior, res.model_version, vol, fewer.lesions, "j1") == {}
    assert "it lists 3 lesion(s), the prior segmented now has 2" in caplog.text
    grown = result_from_labels(blob_labels(SHAPE, [BLOBS[0], (BLOBS[1][0], 3.5), BLOBS[2]]),
                               vol.image)
    assert prior_report_tracking(prior, res.model_version, vol, grown.lesions, "j1") == {}
    assert "lesion 2: " in caplog.text and "mm3 now" in caplog.text
    other = {**prior, "series": {"flair": "2.25.99"}}
    assert prior_report_tracking(other, res.model_version, vol, res.lesions, "j1") == {}
    assert "not made on the prior's FLAIR series 2.25.99" in caplog.text
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    junk = {**prior, "own_reports": [str(tmp_path / "junk.dcm"), str(path)]}
    assert prior_report_tracking(junk, res.model_version, vol, res.lesions, "j1") == written
    assert "is unreadable" in caplog.text


class _FakeSegmenter:
    """Finds the three bright blobs; deterministic, no torch."""

    def segment(self, image, t1=None, **_kw):
        arr = sitk.GetArrayFromImage(image)
        labels = blob_labels(arr.shape, BLOBS) * (arr > 600)
        return result_from_labels(labels.astype(np.uint16), image,
                                  probability=(labels > 0).astype(np.float32) * 0.9)


def _follow_up(tmp_path: Path, monkeypatch, sr_model: str) -> tuple[dict, dict, list[dict]]:
    monkeypatch.setattr(pipeline, "_segmenter", lambda device, opts: _FakeSegmenter())
    pvol = load_series(_series(tmp_path, "prior", "20190305"))
    sr_path, _ = _prior_sr(tmp_path, pvol, model_version=sr_model)
    prior_lesions = read_report(pydicom.dcmread(sr_path))["lesions"]
    follow = _series(tmp_path, "follow", "20200611")
    job = {"job_id": "jf", "job_key": "kf", "out_dir": str(tmp_path / "out"), "device": "cpu",
           "inputs": {"flair": [str(p) for p in follow]},
           "options": {"overlay": False, "tta": False},
           "prior": {"study_uid": pvol.study_uid, "study_date": "20190305",
                     "inputs": {"flair": [str(d.filename) for d in pvol.datasets]},
                     "series": {"flair": pvol.series_uid}, "reuse_result_dir": None,
                     "own_reports": [str(sr_path)]}}
    res = pipeline.run_ms_lesions(job)
    sr = next(f for f in res["files"] if f["kind"] == "SR")
    return res, read_report(pydicom.dcmread(sr["path"])), prior_lesions


def test_a_follow_up_continues_the_tracking_uids_of_the_prior_sr(tmp_path, monkeypatch):
    res, follow, prior = _follow_up(tmp_path, monkeypatch, sr_model="0" * 64)
    assert res["change"]["comparable"] is True and res["change"]["n_new"] == 0
    assert {les["tracking_uid"] for les in follow["lesions"]} == \
        {les["tracking_uid"] for les in prior}


def test_an_sr_of_another_model_version_is_not_used_and_the_job_succeeds(tmp_path, monkeypatch,
                                                                        caplog):
    caplog.set_level(logging.INFO, logger="dicom_node.run.followup")
    res, follow, prior = _follow_up(tmp_path, monkeypatch, sr_model=OTHER_MODEL)
    assert res["change"]["comparable"] is True  # the comparison stands, with new UIDs
    assert len(follow["lesions"]) == 3
    assert not {les["tracking_uid"] for les in follow["lesions"]} & \
        {les["tracking_uid"] for les in prior}
    assert f"not used for tracking: made by model version {OTHER_MODEL}" in caplog.text


def test_the_fetcher_knows_the_node_s_own_reports_by_their_header(tmp_path):
    from dicom_node.encode.seg import MANUFACTURER, MODEL_NAME
    from dicom_node.retrieve.prior import (
        OWN_SR_DESCRIPTION,
        OWN_SR_MANUFACTURER,
        OWN_SR_MODEL_NAME,
        _own_report_header,
    )

    assert (OWN_SR_MANUFACTURER, OWN_SR_MODEL_NAME) == (MANUFACTURER, MODEL_NAME)
    path, _ = _prior_sr(tmp_path, load_series(_series(tmp_path, "prior", "20190305")))
    ds = pydicom.dcmread(path)
    assert str(ds.SeriesDescription).startswith(OWN_SR_DESCRIPTION)
    assert _own_report_header(path) == (str(ds.ContentDate), str(ds.ContentTime))
    ds.Manufacturer = "another vendor"
    ds.save_as(tmp_path / "theirs.dcm")
    assert _own_report_header(tmp_path / "theirs.dcm") is None


def test_a_prior_result_is_reused_only_when_its_lesions_were_cut_out_the_same_way(tmp_path, caplog):
    """The node's own result of the prior stands for segmenting it again only under the same
    lesion rule (threshold, sizes, 3D growth): a prior cut at another threshold, or by a node
    that recorded no rule, would make lesions look enlarged or shrunk that did not change."""
    import json

    from dicom_node.run.followup import reused_prior
    from dicom_node.run.options import PipelineOptions

    version = "a" * 64
    opts = PipelineOptions()
    d = tmp_path / "prior-result"
    d.mkdir()
    np.savez_compressed(d / "labels.npz", labels=np.zeros(SHAPE, np.uint16))
    np.savez_compressed(d / "probability.npz", probability=np.zeros(SHAPE, np.uint8))
    base = {"model": {"version": version}, "flair_series_uid": "1.2.3", "lesions": [], "tracking": {}}
    prior = {"reuse_result_dir": str(d), "series": {"flair": "1.2.3"}}

    def reused(rule_in_result, job_opts=opts):
        res = dict(base, **({"lesion_rule": rule_in_result} if rule_in_result is not None else {}))
        (d / "result.json").write_text(json.dumps(res))
        return reused_prior(prior, version, job_opts.lesion_rule())

    assert reused(opts.lesion_rule()) is not None
    with caplog.at_level(logging.INFO, logger="dicom_node.run.followup"):
        assert reused(PipelineOptions(thin_slice_grow=None).lesion_rule()) is None
    assert "not reused: lesion rule" in caplog.text
    assert reused(PipelineOptions(threshold=0.6).lesion_rule()) is None
    assert reused(None) is None  # a result from before the rule was recorded
    assert reused(opts.lesion_rule(), PipelineOptions(min_volume_mm3=20.0)) is None
