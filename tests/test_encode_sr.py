"""TID 1500 SR encoder: reads back to the same lesions and summary, references the SEG, dciodvfy-clean."""
from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk

from ai.types import LOCATIONS
from dicom_node.devtools.synthetic import blob_labels, result_from_labels
from dicom_node.devtools.wrap import write_mr_series
from dicom_node.encode import dciodvfy
from dicom_node.encode.seg import build_seg, seg_masks_on_volume
from dicom_node.encode.sr import build_sr
from dicom_node.encode.sr_read import read_report
from dicom_node.run.volume import load_series


@pytest.fixture(scope="module")
def flair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flair")
    img = sitk.GetImageFromArray((np.random.default_rng(5).random((18, 40, 44)) * 600).astype(np.float32))
    img.SetSpacing((1.0, 0.8, 2.0))
    return load_series(write_mr_series(img, tmp, study_uid="1.2.826.0.1.3680043.99.2", contrast="FLAIR"))


def _result(vol, locations):
    shape = sitk.GetArrayViewFromImage(vol.image).shape
    blobs = [((3, 10, 10), 2.0), ((8, 25, 30), 3.5), ((13, 15, 20), 2.5), ((6, 32, 8), 1.5),
             ((15, 30, 35), 2.0)]
    labels = blob_labels(shape, blobs[: len(locations)])
    return result_from_labels(labels, vol.image, list(locations))


def _reread(ds, tmp_path):
    path = tmp_path / "sr.dcm"
    ds.save_as(path)
    return hd.sr.srread(path), path


@pytest.mark.parametrize("per_lesion", [False, True])
def test_sr_values_and_segment_references(flair, tmp_path, per_lesion):
    res = _result(flair, ["periventricular", "juxtacortical", "periventricular", "infratentorial",
                          "deep_white_matter"])
    seg = build_seg(res, flair, job_key="job", per_lesion=per_lesion)
    sr, _ = _reread(build_sr(res, flair, seg, job_key="job"), tmp_path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert sr.StudyInstanceUID == flair.study_uid
    assert "RESEARCH USE ONLY" in sr.SeriesDescription
    rep = read_report(sr)
    assert [les["id"] for les in rep["lesions"]] == [1, 2, 3, 4, 5]
    masks = seg_masks_on_volume(seg, flair)
    voxel = float(np.prod(flair.image.GetSpacing()))
    for les, got in zip(sorted(res.lesions, key=lambda lesion: lesion.id), rep["lesions"], strict=False):
        assert got["location"] == les.location
        assert got["volume_mm3"] == pytest.approx(les.volume_mm3, abs=1e-3)
        assert got["seg_sop_instance_uid"] == seg.SOPInstanceUID
        # the referenced segment contains this lesion
        assert masks[..., got["segment_number"] - 1][res.labels == les.id].all()
    s = rep["summary"]
    assert s["lesion_count"] == 5
    assert s["total_volume_mm3"] == pytest.approx(res.summary.total_volume_mm3, abs=1e-3)
    # total volume = SEG lesion voxels x voxel volume
    assert s["total_volume_mm3"] == pytest.approx(masks.any(axis=-1).sum() * voxel, rel=1e-6)
    assert s["counts_by_location"] == {"periventricular": 2, "juxtacortical": 1, "infratentorial": 1,
                                      "deep_white_matter": 1}
    for loc in LOCATIONS:
        assert s["volume_by_location_mm3"][loc] == pytest.approx(res.summary.volume_by_location_mm3[loc], abs=1e-3)
    assert s["load_category"] == res.summary.load_category
    assert s["dis_met"] is True


def test_sr_on_fractional_seg_references_the_probability_segment(flair):
    res = _result(flair, ["periventricular", "infratentorial"])
    seg = build_seg(res, flair, job_key="j", fractional=True)
    rep = read_report(build_sr(res, flair, seg, job_key="j"))
    assert [les["segment_number"] for les in rep["lesions"]] == [1, 1]
    assert rep["summary"]["lesion_count"] == 2


def test_observer_device_and_evidence(flair, tmp_path):
    res = _result(flair, ["periventricular"])  # single-segment SEG (highdicom pitfall)
    res.model_version = "9f" * 32  # a SHA-256
    seg = build_seg(res, flair, job_key="j")
    sr, _ = _reread(build_sr(res, flair, seg, job_key="j"), tmp_path)
    evidence = {item.ReferencedSOPInstanceUID
                for st in sr.CurrentRequestedProcedureEvidenceSequence
                for se in st.ReferencedSeriesSequence for item in se.ReferencedSOPSequence}
    assert evidence == {ds.SOPInstanceUID for ds in flair.datasets} | {seg.SOPInstanceUID}
    texts = {str(e.value) for e in sr.iterall() if e.keyword in ("TextValue", "UID")}
    assert res.model_version in texts and res.model_name in texts
    assert read_report(sr)["lesions"][0]["segment_number"] == 1


def test_no_lesions_report_says_zero(flair, tmp_path):
    res = result_from_labels(np.zeros(sitk.GetArrayViewFromImage(flair.image).shape, np.uint16), flair.image)
    assert build_seg(res, flair, job_key="j") is None
    sr, path = _reread(build_sr(res, flair, None, job_key="j"), tmp_path)
    rep = read_report(sr)
    assert rep["lesions"] == []
    assert rep["summary"]["lesion_count"] == 0 and rep["summary"]["total_volume_mm3"] == 0
    assert rep["summary"]["dis_met"] is False and rep["summary"]["load_category"] == "none"
    assert dciodvfy.validate_file(path).errors == []


def test_sr_requires_matching_seg(flair):
    res = _result(flair, ["periventricular", "infratentorial"])
    other = _result(flair, ["juxtacortical"])
    with pytest.raises(ValueError):
        build_sr(res, flair, build_seg(other, flair, job_key="j"), job_key="j")
    with pytest.raises(ValueError):
        build_sr(res, flair, None, job_key="j")


def test_sr_uid_deterministic(flair):
    res = _result(flair, ["periventricular"])
    seg = build_seg(res, flair, job_key="j")
    a = build_sr(res, flair, seg, job_key="j")
    b = build_sr(res, flair, seg, job_key="j")
    assert a.SOPInstanceUID == b.SOPInstanceUID
    assert a.SOPInstanceUID != build_sr(res, flair, seg, job_key="k").SOPInstanceUID


def test_sr_dciodvfy_no_errors(flair, tmp_path):
    res = _result(flair, ["periventricular", "juxtacortical", "infratentorial"])
    seg = build_seg(res, flair, job_key="j")
    rep = dciodvfy.validate_dataset(build_sr(res, flair, seg, job_key="j"))
    assert rep.errors == [], rep.text


def test_sr_carries_lesion_confidence_and_the_low_confidence_count(flair, tmp_path):
    """Each lesion group holds the model's mean and maximum probability; the summary says how many
    lesions fall below the low-confidence cut, and which cut that was."""
    from ai.lesions import summarise

    shape = sitk.GetArrayViewFromImage(flair.image).shape
    labels = blob_labels(shape, [((4, 12, 12), 2.5), ((12, 28, 30), 2.5)])
    prob = np.where(labels == 1, 0.95, np.where(labels == 2, 0.55, 0.0)).astype(np.float32)
    prob[labels == 2] = np.linspace(0.5, 0.7, int((labels == 2).sum()))
    res = result_from_labels(labels, flair.image, ["periventricular", "deep_white_matter"], probability=prob)
    res.summary = summarise(res.lesions, confidence_cut=0.8)
    seg = build_seg(res, flair, job_key="c")
    sr, path = _reread(build_sr(res, flair, seg, job_key="c"), tmp_path)
    rep = read_report(sr)
    by_id = {les["id"]: les for les in rep["lesions"]}
    assert by_id[1]["mean_probability"] == pytest.approx(0.95, abs=1e-3)
    assert by_id[2]["mean_probability"] == pytest.approx(0.6, abs=2e-3)
    assert by_id[2]["max_probability"] == pytest.approx(0.7, abs=1e-3)
    assert rep["summary"]["low_confidence_count"] == 1 and rep["summary"]["confidence_cut"] == pytest.approx(0.8)
    assert dciodvfy.validate_file(path).errors == []


def test_every_report_states_the_detection_limits_after_the_notes(flair, tmp_path):
    """Small lesions are often missed: the SR says so in a Comment, with or without lesions,
    after the remarks on how the result was made."""
    from ai.types import DETECTION_LIMITS

    def comments(ds):
        return [str(it.TextValue) for it in ds.ContentSequence
                if it.ValueType == "TEXT" and it.ConceptNameCodeSequence[0].CodeValue == "121106"]

    res = _result(flair, ["juxtacortical", "deep_white_matter"])
    seg = build_seg(res, flair, job_key="lim")
    sr, path = _reread(build_sr(res, flair, seg, job_key="lim", notes=["T1 series not used (test)"]), tmp_path)
    got = comments(sr)
    assert got == ["T1 series not used (test)", DETECTION_LIMITS]
    assert "50 mm3" in got[-1] and "often missed" in got[-1]
    assert dciodvfy.validate_file(path).errors == []
    empty = result_from_labels(np.zeros(sitk.GetArrayViewFromImage(flair.image).shape, np.uint16), flair.image)
    sr0, _ = _reread(build_sr(empty, flair, None, job_key="lim0"), tmp_path)
    assert comments(sr0) == [DETECTION_LIMITS]
