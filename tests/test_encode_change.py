"""Follow-up outputs (issue 11): the change SEG, the SR's change content and the change overlay.

A follow-up result and its :class:`ai.types.ChangeReport` are built by hand from balls on a small
synthetic FLAIR, the way the comparison defines them: follow-up lesion 1 is new, 2 grew out of
prior lesion 1, 3 is prior lesion 2 unchanged, 4 is what is left of prior lesion 4 (shrinking);
prior lesion 3 has vanished. The tests read the objects back the way a viewer or the node would.
"""
from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ai.types import (
    CHANGE_ENLARGING,
    CHANGE_LABELS,
    CHANGE_NEW,
    CHANGE_SHRINKING,
    CHANGE_STABLE,
    ChangeReport,
    LesionChange,
)
from dicom_node.devtools.synthetic import blob_labels, result_from_labels
from dicom_node.devtools.wrap import write_mr_series
from dicom_node.encode import codes as C
from dicom_node.encode import dciodvfy
from dicom_node.encode.change import CHANGE_SEGMENT_TEXT, build_change_seg
from dicom_node.encode.overlay import CHANGE_RGB, LESION_RGB, NEW_RGB, build_overlay
from dicom_node.encode.seg import build_seg, seg_masks_on_volume
from dicom_node.encode.sr import build_sr
from dicom_node.encode.sr_read import read_report
from dicom_node.encode.uids import derive_uid
from dicom_node.run.volume import load_series

SHAPE = (12, 48, 48)
PRIOR_STUDY = "1.2.826.0.1.3680043.99.77"
UID_A, UID_B, UID_C, UID_D = (f"1.2.826.0.1.3680043.99.77.{i}" for i in range(1, 5))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("change")
    z, y, x = np.indices(SHAPE)
    arr = (300 + 150 * np.sin(x / 5.0) * np.cos(y / 6.0) + 4 * z).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 3.0))
    flair = load_series(write_mr_series(img, tmp, study_uid="1.2.826.0.1.3680043.99.78", contrast="FLAIR"))
    # follow-up lesions: 1 new, 2 enlarging, 3 stable, 4 the remainder of a shrinking prior lesion
    labels = blob_labels(SHAPE, [((3, 24, 12), 3.0), ((6, 30, 30), 4.5), ((9, 14, 36), 3.0),
                                 ((8, 38, 12), 2.0)])
    res = result_from_labels(labels, flair.image, ["juxtacortical", "periventricular",
                                                   "deep_white_matter", "infratentorial"])
    # prior lesions on the follow-up grid: 1 inside lesion 2, 2 = lesion 3, 3 vanished, 4 larger
    prior = blob_labels(SHAPE, [((6, 30, 30), 2.5), ((9, 14, 36), 3.0), ((3, 36, 36), 3.0),
                                ((8, 38, 12), 4.0)])
    cmap = np.zeros(SHAPE, np.uint8)
    cmap[labels == 1] = CHANGE_NEW
    cmap[(labels == 2) & (prior == 0)] = CHANGE_ENLARGING
    cmap[(labels > 1) & (prior > 0)] = CHANGE_STABLE
    cmap[(prior > 0) & (labels == 0)] = CHANGE_SHRINKING
    voxel = 3.0
    vol = {f"f{i}": float((labels == i).sum() * voxel) for i in range(1, 5)}
    vol |= {f"p{i}": float((prior == i).sum() * voxel) for i in range(1, 5)}
    change = ChangeReport(
        comparable=True, prior_study_uid=PRIOR_STUDY, prior_study_date="20250301",
        prior_accession="ACC-PRIOR", interval_days=240, n_new=1, n_enlarging=1, n_shrinking=1,
        n_vanished=1, total_volume_prior_mm3=sum(vol[f"p{i}"] for i in range(1, 5)),
        total_volume_now_mm3=res.summary.total_volume_mm3, activity=True,
        registration_head_dice=0.97,
        lesions=[
            LesionChange(1, "follow-up", "new", vol["f1"], None),
            LesionChange(2, "follow-up", "enlarging", vol["f2"], vol["p1"], UID_A, "Lesion 1"),
            LesionChange(3, "follow-up", "stable", vol["f3"], vol["p2"], UID_B, "Lesion 2"),
            LesionChange(4, "follow-up", "stable", vol["f4"], vol["p4"], UID_D, "Lesion 4"),
            LesionChange(3, "prior", "vanished", 0.0, vol["p3"], UID_C, "Lesion 3"),
            LesionChange(4, "prior", "shrinking", vol["f4"], vol["p4"], UID_D, "Lesion 4"),
        ],
        change_map=cmap,
    )
    return flair, res, change, vol


def _not_comparable() -> ChangeReport:
    return ChangeReport(comparable=False, reason="different slice orientation (sagittal prior, axial follow-up)",
                        prior_study_uid=PRIOR_STUDY, prior_study_date="20250301")


def _reread(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path), path


def _concepts(ds) -> set[tuple[str, str]]:
    """(scheme, code value) of every concept name in an SR."""
    return {(str(e.value[0].CodingSchemeDesignator), str(e.value[0].CodeValue))
            for e in ds.iterall() if e.keyword == "ConceptNameCodeSequence"}


# --- change SEG ---------------------------------------------------------------------------------

def test_change_seg_segments_are_the_change_map_classes(case, tmp_path):
    flair, res, change, _ = case
    seg, path = _reread(build_change_seg(change, flair, job_key="job", model_name=res.model_name,
                                         model_version=res.model_version), tmp_path / "cseg.dcm")
    seg = hd.seg.Segmentation.from_dataset(seg)
    assert seg.SeriesNumber == 905 and "RESEARCH USE ONLY" in seg.SeriesDescription
    assert seg.SeriesDescription.startswith("MS lesion change")
    assert seg.StudyInstanceUID == flair.study_uid
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    items = list(seg.SegmentSequence)
    assert [s.SegmentLabel for s in items] == ["New MS lesions", "Enlarging MS lesions", "Stable MS lesions",
                                              "Shrinking MS lesions"]
    assert [s.SegmentNumber for s in items] == [1, 2, 3, 4]
    for s, c in zip(items, CHANGE_LABELS, strict=True):
        assert s.SegmentDescription == CHANGE_SEGMENT_TEXT[c]
        assert s.SegmentedPropertyTypeCodeSequence[0].CodeValue == C.LESION_TYPE.value
        assert s.SegmentedPropertyCategoryCodeSequence[0].CodeValue == C.LESION_CATEGORY.value
        assert list(s.RecommendedDisplayCIELabValue) == list(
            hd.color.CIELabColor.from_rgb(*CHANGE_RGB[c]).value)
    masks = seg_masks_on_volume(seg, flair)
    for j, c in enumerate(CHANGE_LABELS):
        np.testing.assert_array_equal(masks[..., j], (change.change_map == c).astype(np.uint8))
    rep = dciodvfy.validate_file(path)
    assert rep.errors == [], rep.text


def test_change_seg_only_classes_present_and_none_without_change(case):
    flair, res, change, _ = case
    kw = dict(job_key="job", model_name=res.model_name, model_version=res.model_version)
    only = ChangeReport(comparable=True, prior_study_uid=PRIOR_STUDY,
                        change_map=np.where(change.change_map == CHANGE_STABLE, CHANGE_STABLE, 0).astype(np.uint8))
    seg = build_change_seg(only, flair, **kw)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Stable MS lesions"]
    np.testing.assert_array_equal(seg_masks_on_volume(seg, flair)[..., 0], only.change_map == CHANGE_STABLE)
    assert build_change_seg(_not_comparable(), flair, **kw) is None
    empty = ChangeReport(comparable=True, change_map=np.zeros(SHAPE, np.uint8))
    assert build_change_seg(empty, flair, **kw) is None
    a = build_change_seg(change, flair, **kw)
    assert a.SOPInstanceUID == build_change_seg(change, flair, **kw).SOPInstanceUID  # deterministic
    assert a.SOPInstanceUID != build_change_seg(change, flair, **(kw | {"job_key": "other"})).SOPInstanceUID


# --- SR -----------------------------------------------------------------------------------------

def test_sr_reports_change_per_lesion_and_in_the_summary(case, tmp_path):
    flair, res, change, vol = case
    seg = build_seg(res, flair, job_key="job")
    cseg = build_change_seg(change, flair, job_key="job", model_name=res.model_name,
                            model_version=res.model_version)
    sr, path = _reread(build_sr(res, flair, seg, job_key="job", change=change, change_seg=cseg),
                       tmp_path / "sr.dcm")
    rep = read_report(sr)

    by_id = {les["id"]: les for les in rep["lesions"]}
    assert sorted(by_id) == [1, 2, 3, 4]
    assert {i: les["status"] for i, les in by_id.items()} == {1: "new", 2: "enlarging", 3: "stable", 4: "stable"}
    for i, p in ((2, "p1"), (3, "p2"), (4, "p4")):
        assert by_id[i]["volume_mm3"] == pytest.approx(vol[f"f{i}"])
        assert by_id[i]["volume_prior_mm3"] == pytest.approx(vol[p])
    assert by_id[1]["volume_prior_mm3"] is None
    # tracked lesions keep the prior report's tracking UID and identifier; the new one gets its
    # own UID and an identifier no tracked lesion uses ("Lesion 1" is the prior's lesion 1 now)
    assert [by_id[i]["tracking_uid"] for i in (2, 3, 4)] == [UID_A, UID_B, UID_D]
    assert [by_id[i]["tracking_id"] for i in (2, 3, 4)] == ["Lesion 1", "Lesion 2", "Lesion 4"]
    assert by_id[1]["tracking_uid"] == derive_uid("job", "lesion", "1")
    assert by_id[1]["tracking_id"] == "Lesion 5"
    # the lesion SEG is still what each lesion group references
    assert {les["seg_sop_instance_uid"] for les in rep["lesions"]} == {seg.SOPInstanceUID}

    ch = rep["change"]
    assert ch["comparable"] is True and ch["reason"] == ""
    assert ch["prior_study_uid"] == PRIOR_STUDY and ch["prior_study_date"] == "20250301"
    assert ch["prior_accession"] == "ACC-PRIOR" and ch["interval_days"] == 240
    assert (ch["n_new"], ch["n_enlarging"], ch["n_shrinking"], ch["n_vanished"]) == (1, 1, 1, 1)
    assert ch["total_volume_prior_mm3"] == pytest.approx(change.total_volume_prior_mm3)
    assert ch["total_volume_now_mm3"] == pytest.approx(res.summary.total_volume_mm3)
    assert ch["activity"] is True and ch["registration_head_dice"] == pytest.approx(0.97)
    prior = {les["id"]: les for les in ch["lesions"] if les["timepoint"] == "prior"}
    assert prior[3] == {"id": 3, "timepoint": "prior", "status": "vanished", "volume_now_mm3": 0.0,
                        "volume_prior_mm3": pytest.approx(vol["p3"]), "tracking_uid": UID_C,
                        "tracking_id": "Lesion 3"}
    assert prior[4]["status"] == "shrinking" and prior[4]["tracking_uid"] == UID_D
    assert prior[4]["volume_prior_mm3"] == pytest.approx(vol["p4"])
    follow = [les for les in ch["lesions"] if les["timepoint"] == "follow-up"]
    assert [les["status"] for les in sorted(follow, key=lambda les: les["id"])] == [
        "new", "enlarging", "stable", "stable"]
    # the single-study summary is still there, and the change SEG is in the evidence
    assert rep["summary"]["lesion_count"] == 4
    evidence = {item.ReferencedSOPInstanceUID
                for st in sr.CurrentRequestedProcedureEvidenceSequence
                for se in st.ReferencedSeriesSequence for item in se.ReferencedSOPSequence}
    assert {seg.SOPInstanceUID, cseg.SOPInstanceUID} <= evidence
    assert "RESEARCH USE ONLY" in sr.SeriesDescription
    assert dciodvfy.validate_file(path).errors == []


def test_sr_no_activity_is_reported_as_no(case):
    flair, res, change, _ = case
    quiet = ChangeReport(**(change.to_dict() | {"n_new": 0, "n_enlarging": 0, "activity": False, "lesions": []}))
    rep = read_report(build_sr(res, flair, build_seg(res, flair, job_key="j"), job_key="j", change=quiet))
    assert rep["change"]["activity"] is False and rep["change"]["n_new"] == 0
    assert all(les["status"] is None for les in rep["lesions"])


def test_sr_without_comparable_prior_says_why_and_no_numbers(case, tmp_path):
    flair, res, _, _ = case
    seg = build_seg(res, flair, job_key="job")
    sr, path = _reread(build_sr(res, flair, seg, job_key="job", change=_not_comparable()), tmp_path / "sr.dcm")
    ch = read_report(sr)["change"]
    assert ch["comparable"] is False
    assert ch["reason"] == "different slice orientation (sagittal prior, axial follow-up)"
    assert ch["prior_study_uid"] == PRIOR_STUDY
    assert all(ch[k] is None for k in ("n_new", "n_enlarging", "n_shrinking", "n_vanished",
                                        "total_volume_prior_mm3", "total_volume_now_mm3",
                                        "interval_days", "activity"))
    assert ch["lesions"] == []
    texts = [str(e.value) for e in sr.iterall() if e.keyword == "TextValue"]
    assert any(t.startswith("No comparable prior: different slice orientation") for t in texts)
    concepts = _concepts(sr)
    assert (C.COMPARISON_DONE.scheme_designator, C.COMPARISON_DONE.value) in concepts
    changes = {C.NUMBER_NEW, C.NUMBER_ENLARGING, C.NUMBER_SHRINKING, C.NUMBER_VANISHED, C.VOLUME_PRIOR,
               C.INTERVAL, C.NEW_ACTIVITY, C.CHANGE_STATUS}
    assert not {(c.scheme_designator, c.value) for c in changes} & concepts
    answers = {str(e.value[0].CodeValue) for e in sr.iterall() if e.keyword == "ConceptCodeSequence"}
    assert C.NOT_PERFORMED.value in answers
    assert dciodvfy.validate_file(path).errors == []


def test_sr_without_change_has_no_change_content_and_its_own_uids(case):
    flair, res, change, _ = case
    seg = build_seg(res, flair, job_key="job")
    plain = build_sr(res, flair, seg, job_key="job")
    assert read_report(plain)["change"] is None
    assert plain.SOPInstanceUID == derive_uid("job", "sr")
    assert not {(C.CHANGE_STATUS.scheme_designator, C.CHANGE_STATUS.value),
                (C.COMPARISON_DONE.scheme_designator, C.COMPARISON_DONE.value)} & _concepts(plain)
    with_change = build_sr(res, flair, seg, job_key="job", change=change)
    assert with_change.SOPInstanceUID != plain.SOPInstanceUID
    assert with_change.SOPInstanceUID == build_sr(res, flair, seg, job_key="job", change=change).SOPInstanceUID


# --- overlay ------------------------------------------------------------------------------------

def _colour(px: np.ndarray, rgb) -> np.ndarray:
    return np.all(px == np.array(rgb, np.uint8), axis=-1)


def test_overlay_colours_lie_exactly_on_their_change_class(case):
    flair, res, change, _ = case
    out = build_overlay(res, flair, job_key="job", change=change)
    slices, summary = out[:-1], out[-1]
    assert len(slices) == flair.n_slices
    cmap = change.change_map
    stable = (cmap == CHANGE_STABLE) | ((res.labels > 0) & (cmap == 0))
    where = {CHANGE_NEW: cmap == CHANGE_NEW, CHANGE_ENLARGING: cmap == CHANGE_ENLARGING,
             CHANGE_STABLE: stable, CHANGE_SHRINKING: cmap == CHANGE_SHRINKING}
    seen = set()
    for k, ds in enumerate(slices):
        px = ds.pixel_array
        s = px.shape[0] // SHAPE[1]
        for c, rgb in CHANGE_RGB.items():
            hit = _colour(px, rgb)
            assert hit.any() == bool(where[c][k].any()), (k, c)
            if hit.any():
                seen.add(c)
                rows, cols = np.nonzero(hit)
                assert where[c][k][rows // s, cols // s].all(), (k, c)
        new = _colour(px, NEW_RGB)
        if new.any():  # magenta is the new lesions' outline (where no text covers it)
            m = np.repeat(np.repeat(where[CHANGE_NEW][k], s, axis=0), s, axis=1)
            outline = m & ~ndimage.binary_erosion(m, border_value=0)
            assert not (new & ~outline).any(), k
            assert (new & outline).sum() >= 0.8 * outline.sum(), k
    assert seen == set(CHANGE_RGB)
    assert LESION_RGB == CHANGE_RGB[CHANGE_STABLE]
    assert not any(_colour(summary.pixel_array, rgb).any() for rgb in CHANGE_RGB.values())
    plain = build_overlay(res, flair, job_key="job")
    assert not np.array_equal(summary.pixel_array, plain[-1].pixel_array)  # the change lines
    assert summary.SOPInstanceUID != plain[-1].SOPInstanceUID
    for ds in (slices[3], summary):
        rep = dciodvfy.validate_dataset(ds)
        assert rep.errors == [], rep.text


def test_overlay_without_comparable_prior_keeps_the_slices(case):
    flair, res, _, _ = case
    plain = build_overlay(res, flair, job_key="job")
    nc = build_overlay(res, flair, job_key="job", change=_not_comparable())
    for a, b in zip(plain[:-1], nc[:-1], strict=True):
        np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
    assert not np.array_equal(plain[-1].pixel_array, nc[-1].pixel_array)  # says why
