"""wrap.write_mr_series / nifti_case_to_study: DICOM written by the project reads back exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dicom_node.devtools.wrap import nifti_case_to_study, write_mr_series
from dicom_node.encode.uids import derive_uid
from dicom_node.run.volume import load_series

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _rotation(ax: float, ay: float) -> np.ndarray:
    cx, sx, cy, sy = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rx @ ry


def _phantom(shape=(12, 40, 48), spacing=(0.9, 1.1, 2.5), direction=None, seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    arr = (rng.random(shape) * 700.0 - 20.0).astype(np.float32)  # non-integer, negative values
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((-20.5, 33.25, 7.0))
    if direction is not None:
        img.SetDirection(tuple(np.asarray(direction, float).ravel()))
    return img


def test_oblique_round_trip_same_array_and_geometry(tmp_path):
    img = _phantom(direction=_rotation(0.3, -0.2))
    study = derive_uid("test", "study")
    files = write_mr_series(img, tmp_path, study_uid=study, series_description="FLAIR ax",
                            contrast="FLAIR")
    assert len(files) == img.GetSize()[2]
    vol = load_series(files)
    src = sitk.GetArrayFromImage(img)
    got = sitk.GetArrayFromImage(vol.image)
    step = (src.max() - src.min()) / 65535
    assert got.shape == src.shape
    assert np.abs(got - src).max() <= step  # uint16 quantisation only
    np.testing.assert_allclose(vol.image.GetOrigin(), img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.image.GetSpacing(), img.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(vol.image.GetDirection(), img.GetDirection(), atol=1e-5)
    assert vol.study_uid == study
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == pydicom.uid.MRImageStorage


def test_integer_images_stored_without_rescale(tmp_path):
    arr = np.arange(4 * 8 * 9, dtype=np.float32).reshape(4, 8, 9)
    img = sitk.GetImageFromArray(arr)
    files = write_mr_series(img, tmp_path, study_uid="1.2.3", contrast="T1")
    ds = pydicom.dcmread(files[0])
    assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0
    assert np.array_equal(sitk.GetArrayFromImage(load_series(files).image), arr)


def test_left_handed_image_keeps_physical_positions(tmp_path):
    # NIfTI in MNI space read by ITK: direction diag(1, -1, 1) (determinant -1)
    img = _phantom(shape=(6, 10, 11), spacing=(1, 1, 1), direction=np.diag([1.0, -1.0, 1.0]))
    vol = load_series(write_mr_series(img, tmp_path, study_uid="1.2.3", contrast="FLAIR"))
    src = sitk.GetArrayFromImage(img)
    got = sitk.GetArrayFromImage(vol.image)
    step = (src.max() - src.min()) / 65535
    # every voxel sits at the same physical point with the same value
    for idx in [(0, 0, 0), (3, 7, 2), (10, 9, 5)]:
        p = img.TransformIndexToPhysicalPoint(idx)
        j = vol.image.TransformPhysicalPointToIndex(p)
        assert abs(got[j[2], j[1], j[0]] - src[idx[2], idx[1], idx[0]]) <= step
    assert np.linalg.det(np.array(vol.image.GetDirection()).reshape(3, 3)) > 0


@pytest.mark.parametrize("contrast,tr,te,ti,seq", [
    ("FLAIR", 6000.0, 394.0, 2200.0, ["SE", "IR"]),
    ("T1", 2300.0, 2.98, 900.0, ["GR", "IR"]),
])
def test_contrast_headers(tmp_path, contrast, tr, te, ti, seq):
    img = _phantom(shape=(4, 8, 8), spacing=(1, 1, 1))
    ds = pydicom.dcmread(write_mr_series(img, tmp_path, study_uid="1.2.3", contrast=contrast)[0])
    assert (float(ds.RepetitionTime), float(ds.EchoTime), float(ds.InversionTime)) == (tr, te, ti)
    assert list(ds.ScanningSequence) == seq
    assert ds.MRAcquisitionType == "3D"


def test_wrapped_files_pass_dciodvfy(tmp_path):
    from dicom_node.encode.dciodvfy import validate_file

    img = _phantom(shape=(3, 8, 8))
    files = write_mr_series(img, tmp_path, study_uid="1.2.3", contrast="FLAIR")
    report = validate_file(files[0])
    assert report.errors == [], report.text


def test_uids_are_deterministic(tmp_path):
    img = _phantom(shape=(3, 8, 8))
    a = write_mr_series(img, tmp_path / "a", study_uid="1.2.3", contrast="FLAIR")
    b = write_mr_series(img, tmp_path / "b", study_uid="1.2.3", contrast="FLAIR")
    ua = [pydicom.dcmread(p).SOPInstanceUID for p in a]
    ub = [pydicom.dcmread(p).SOPInstanceUID for p in b]
    assert ua == ub and len(set(ua)) == len(ua)


@pytest.mark.slow
def test_nifti_case_to_study_patient19(tmp_path):
    case = SHARED / "ms" / "cross_sectional" / "patient19"
    if not case.exists():
        pytest.skip(f"{case} absent (../shared/data not available)")
    st = nifti_case_to_study(case, tmp_path)
    assert set(st.series) == {"FLAIR", "T1"}
    flair = load_series(st.files["FLAIR"])
    t1 = load_series(st.files["T1"])
    assert flair.study_uid == t1.study_uid == st.study_uid
    assert flair.frame_of_reference_uid == t1.frame_of_reference_uid
    src = sitk.DICOMOrient(sitk.ReadImage(str(case / "FLAIR.nii.gz"), sitk.sitkFloat32), "LPS")
    a, b = sitk.GetArrayFromImage(flair.image), sitk.GetArrayFromImage(src)
    assert a.shape == b.shape == (182, 218, 182)
    assert np.abs(a - b).max() <= (b.max() - b.min()) / 65535
    np.testing.assert_allclose(flair.image.GetOrigin(), src.GetOrigin(), atol=1e-4)
