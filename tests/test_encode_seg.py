"""DICOM-SEG encoder: frames map to the source slices, read back to the same labels, dciodvfy-clean."""
from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ai.types import LOCATIONS
from dicom_node.devtools.synthetic import blob_labels, result_from_labels
from dicom_node.devtools.wrap import write_mr_series
from dicom_node.encode import dciodvfy
from dicom_node.encode.seg import build_seg, seg_masks_on_volume, segment_plan
from dicom_node.run.volume import load_series

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"



def _flair(tmp_path, shape=(20, 48, 40), direction=None):
    rng = np.random.default_rng(3)
    img = sitk.GetImageFromArray((rng.random(shape) * 800).astype(np.float32))
    img.SetSpacing((0.9, 1.1, 1.5))
    img.SetOrigin((10.0, -40.0, 5.0))
    if direction is not None:
        img.SetDirection(direction)
    return load_series(write_mr_series(img, tmp_path / "flair", study_uid="1.2.826.0.1.3680043.99.1",
                                       contrast="FLAIR"))


def _result(vol, locations=("periventricular", "periventricular", "infratentorial")):
    shape = sitk.GetArrayViewFromImage(vol.image).shape
    blobs = [((4, 12, 10), 2.5), ((10, 30, 25), 4.0), ((16, 20, 30), 3.0), ((7, 35, 8), 2.0)]
    labels = blob_labels(shape, blobs[: len(locations)])
    return result_from_labels(labels, vol.image, list(locations))


def _roundtrip(ds, tmp_path) -> hd.seg.Segmentation:
    path = tmp_path / "seg.dcm"
    ds.save_as(path)
    return hd.seg.segread(path)


def _expected_stack(res, plans):
    return np.stack([np.isin(res.labels, p.lesion_ids) for p in plans], axis=-1).astype(np.uint8)


def test_binary_seg_reads_back_to_same_masks_per_location(tmp_path):
    vol = _flair(tmp_path)
    res = _result(vol)
    seg = _roundtrip(build_seg(res, vol, job_key="job-1"), tmp_path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.segmentation_type.value == "BINARY"
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["MS lesions Periventricular", "MS lesions Infratentorial"]
    got = seg_masks_on_volume(seg, vol)
    assert np.array_equal(got, _expected_stack(res, segment_plan(res)))
    # only slices with lesions are stored, each refers to its own source slice
    with_lesions = {k for k in range(vol.n_slices) if res.labels[k].any()}
    refs = {fr.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for fr in seg.PerFrameFunctionalGroupsSequence}
    assert refs == {vol.slice_refs[k][0] for k in with_lesions}
    for fr in seg.PerFrameFunctionalGroupsSequence:
        uid = fr.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        src = next(ds for ds in vol.datasets if ds.SOPInstanceUID == uid)
        assert np.allclose([float(v) for v in fr.PlanePositionSequence[0].ImagePositionPatient],
                           [float(v) for v in src.ImagePositionPatient], atol=1e-3)
    # study, frame of reference, referenced series and research-use labelling
    assert seg.StudyInstanceUID == vol.study_uid
    assert seg.FrameOfReferenceUID == vol.frame_of_reference_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == vol.series_uid
    assert "RESEARCH USE ONLY" in seg.SeriesDescription
    alg = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert alg.AlgorithmVersion == res.model_version
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    assert seg.SegmentSequence[0].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"


def test_single_segment_and_per_lesion(tmp_path):
    vol = _flair(tmp_path)
    res = _result(vol, ("deep_white_matter",))
    seg = _roundtrip(build_seg(res, vol, job_key="j"), tmp_path)
    assert seg.number_of_segments == 1
    assert np.array_equal(seg_masks_on_volume(seg, vol)[..., 0], (res.labels > 0).astype(np.uint8))

    res4 = _result(vol, LOCATIONS)
    seg4 = _roundtrip(build_seg(res4, vol, job_key="j", per_lesion=True), tmp_path)
    assert seg4.number_of_segments == 4
    got = seg_masks_on_volume(seg4, vol)
    for n, les in enumerate(sorted(res4.lesions, key=lambda les: les.id)):
        assert np.array_equal(got[..., n], (res4.labels == les.id).astype(np.uint8))


def test_fractional_probability_map_compressed(tmp_path):
    vol = _flair(tmp_path)
    res = _result(vol)
    prob = np.clip(np.random.default_rng(0).random(res.labels.shape), 0, 1).astype(np.float32)
    prob[res.labels > 0] = 0.97
    res.probability = prob
    ds = build_seg(res, vol, job_key="j", fractional=True)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    seg = _roundtrip(ds, tmp_path)
    assert seg.segmentation_type.value == "FRACTIONAL"
    got = seg_masks_on_volume(seg, vol)[..., 0]
    assert np.abs(got - prob).max() <= 0.5 / 255 + 1e-6


def test_no_lesions_no_seg(tmp_path):
    vol = _flair(tmp_path)
    res = result_from_labels(np.zeros(sitk.GetArrayViewFromImage(vol.image).shape, np.uint16), vol.image)
    assert build_seg(res, vol, job_key="j") is None


def test_uids_deterministic_per_job(tmp_path):
    vol = _flair(tmp_path)
    res = _result(vol)
    a, b = build_seg(res, vol, job_key="A"), build_seg(res, vol, job_key="A")
    c = build_seg(res, vol, job_key="B")
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert c.SOPInstanceUID != a.SOPInstanceUID


def test_result_not_on_flair_grid_is_refused(tmp_path):
    vol = _flair(tmp_path)
    res = _result(vol)
    res.labels = res.labels[:-1]
    with pytest.raises(ValueError, match="grid"):
        build_seg(res, vol, job_key="j")


@pytest.mark.parametrize("kw", [{}, {"per_lesion": True}, {"fractional": True}])
def test_dciodvfy_no_errors(tmp_path, kw):
    vol = _flair(tmp_path)
    res = _result(vol, ("periventricular",))  # single segment case included
    rep = dciodvfy.validate_dataset(build_seg(res, vol, job_key="j", **kw))
    assert rep.errors == [], rep.text


@pytest.mark.shared
def test_seg_on_enhanced_multiframe_source(tmp_path):
    folder = SHARED / "dicom" / "dcm_qa_xa30" / "siemens_prisma_xa30_enh_T1w_tfl3d"
    if not folder.is_dir():
        pytest.skip(f"{folder} absent (../shared/data not available)")
    vol = load_series(sorted(folder.iterdir()))
    shape = sitk.GetArrayViewFromImage(vol.image).shape
    labels = blob_labels(shape, [((20, 60, 60), 4.0), ((70, 40, 80), 3.0)])
    res = result_from_labels(labels, vol.image, ["juxtacortical", "periventricular"])
    seg = _roundtrip(build_seg(res, vol, job_key="enh"), tmp_path)
    got = seg_masks_on_volume(seg, vol)
    assert np.array_equal(got, _expected_stack(res, segment_plan(res)))
    for fr in seg.PerFrameFunctionalGroupsSequence:
        src = fr.DerivationImageSequence[0].SourceImageSequence[0]
        k = vol.slice_refs.index((src.ReferencedSOPInstanceUID, int(src.ReferencedFrameNumber)))
        assert res.labels[k].any()
    rep = dciodvfy.validate_file(tmp_path / "seg.dcm")
    assert rep.errors == [], rep.text


@pytest.mark.shared
def test_seg_on_flair_stored_as_several_enhanced_objects(tmp_path):
    from dicom_node.devtools.synthetic import split_enhanced
    from dicom_node.run.volume import load_datasets

    folder = SHARED / "dicom" / "dcm_qa_xa30" / "siemens_prisma_xa30_enh_T1w_tfl3d"
    if not folder.is_dir():
        pytest.skip(f"{folder} absent (../shared/data not available)")
    whole = pydicom.dcmread(next(folder.iterdir()))
    vol = load_datasets(split_enhanced(whole, [40, 56]))
    assert len(vol.datasets) == 2 and vol.n_slices == 96
    shape = sitk.GetArrayViewFromImage(vol.image).shape
    labels = blob_labels(shape, [((38, 60, 60), 4.0), ((70, 40, 80), 3.0)])  # first spans both
    res = result_from_labels(labels, vol.image, ["juxtacortical", "periventricular"])
    seg = _roundtrip(build_seg(res, vol, job_key="split"), tmp_path)
    assert np.array_equal(seg_masks_on_volume(seg, vol), _expected_stack(res, segment_plan(res)))
    refs = {fr.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for fr in seg.PerFrameFunctionalGroupsSequence}
    assert refs == {ds.SOPInstanceUID for ds in vol.datasets}
    assert dciodvfy.validate_file(tmp_path / "seg.dcm").errors == []
