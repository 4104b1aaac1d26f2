"""load_series: real multi-vendor series and synthetic series, ordering and refusals."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dicom_node.devtools.wrap import write_mr_series
from dicom_node.run.volume import VolumeError, load_series

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DICOM = SHARED / "dicom"


def _series(name: str) -> list[Path]:
    if not DICOM.exists():
        pytest.skip(f"{DICOM} absent (../shared/data not available)")
    folder = DICOM / name
    if not folder.is_dir():
        pytest.skip(f"{folder} absent from the shared corpus")
    return sorted(p for p in folder.iterdir() if p.is_file())


def _phantom(shape=(8, 20, 24), spacing=(1.0, 1.0, 2.0), direction=None) -> sitk.Image:
    z, y, x = np.indices(shape)
    arr = (100 * z + 3 * y + x).astype(np.float32)  # integers, every slice different
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((-10.0, 20.0, -5.0))
    if direction is not None:
        img.SetDirection(tuple(np.asarray(direction, float).ravel()))
    return img


@pytest.fixture()
def series(tmp_path) -> tuple[sitk.Image, list[Path]]:
    img = _phantom()
    return img, write_mr_series(img, tmp_path / "s", study_uid="1.2.3", contrast="FLAIR")


# ---------------------------------------------------------------------------- synthetic series

def test_order_comes_from_geometry_not_instance_number(series, tmp_path):
    img, files = series
    # scramble InstanceNumber and file names
    numbers = list(range(1, len(files) + 1))
    random.Random(1).shuffle(numbers)
    out = []
    for p, n in zip(files, numbers, strict=False):
        ds = pydicom.dcmread(p)
        ds.InstanceNumber = n
        q = tmp_path / f"x{n:03d}.dcm"
        ds.save_as(q)
        out.append(q)
    vol = load_series(out)
    assert np.array_equal(sitk.GetArrayFromImage(vol.image), sitk.GetArrayFromImage(img))
    # slice_refs[k] is the instance at slice k
    for k, (uid, frame) in enumerate(vol.slice_refs):
        assert frame is None
        assert vol.datasets[k].SOPInstanceUID == uid
        ipp = np.array([float(v) for v in vol.datasets[k].ImagePositionPatient])
        np.testing.assert_allclose(ipp, img.TransformIndexToPhysicalPoint((0, 0, k)), atol=1e-4)


def test_same_instance_twice_is_one_slice(series):
    img, files = series
    vol = load_series(files + files[:2])
    assert vol.n_slices == img.GetSize()[2]


def test_refuses_gap(series):
    _, files = series
    with pytest.raises(VolumeError, match="gap"):
        load_series(files[:3] + files[4:])


def test_refuses_too_few_slices(series):
    _, files = series
    with pytest.raises(VolumeError, match="too few slices"):
        load_series(files[:2])


def test_refuses_mixed_orientations(series, tmp_path):
    img, files = series
    other = _phantom(direction=[[1, 0, 0], [0, 0, 1], [0, -1, 0]])  # coronal
    files2 = write_mr_series(other, tmp_path / "cor", study_uid="1.2.3", contrast="FLAIR",
                             series_uid=pydicom.dcmread(files[0]).SeriesInstanceUID,
                             sop_uid_seed="cor")
    with pytest.raises(VolumeError, match="mixed orientations"):
        load_series(files + files2)


def test_refuses_mixed_matrix_sizes(series, tmp_path):
    _, files = series
    small = _phantom(shape=(8, 10, 24))
    files2 = write_mr_series(small, tmp_path / "small", study_uid="1.2.3", contrast="FLAIR",
                             series_uid=pydicom.dcmread(files[0]).SeriesInstanceUID,
                             sop_uid_seed="small")
    with pytest.raises(VolumeError, match="mixed matrix sizes"):
        load_series(files + files2)


def test_refuses_two_echoes_at_the_same_positions(series, tmp_path):
    img, files = series
    echo2 = write_mr_series(img, tmp_path / "e2", study_uid="1.2.3", contrast="FLAIR",
                            series_uid=pydicom.dcmread(files[0]).SeriesInstanceUID,
                            sop_uid_seed="echo2", extra={"EchoNumbers": "2"})
    with pytest.raises(VolumeError, match="share .* positions.*EchoNumbers"):
        load_series(files + echo2)


def test_refuses_missing_geometry(series, tmp_path):
    _, files = series
    ds = pydicom.dcmread(files[2])
    del ds.ImagePositionPatient
    ds.save_as(files[2])
    with pytest.raises(VolumeError, match="missing geometry"):
        load_series(files)


def test_refuses_non_image_object(series, tmp_path):
    _, files = series
    ds = pydicom.dcmread(files[0])
    del ds.PixelData
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    q = tmp_path / "nopix.dcm"
    ds.save_as(q)
    with pytest.raises(VolumeError, match="non-image"):
        load_series(files + [q])


def test_refuses_undecodable_pixels(series):
    _, files = series
    ds = pydicom.dcmread(files[1])
    ds.PixelData = ds.PixelData[:100]  # truncated pixel data
    ds.save_as(files[1])
    with pytest.raises(VolumeError, match="cannot decode pixel data"):
        load_series(files)


def test_refuses_non_dicom_file(series, tmp_path):
    _, files = series
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 20)
    with pytest.raises(VolumeError, match="not a readable DICOM file"):
        load_series(files + [junk])


def test_rescale_applied(series):
    img, files = series
    for p in files:
        ds = pydicom.dcmread(p)
        ds.RescaleSlope = "2"
        ds.RescaleIntercept = "-100"
        ds.save_as(p)
    got = sitk.GetArrayFromImage(load_series(files).image)
    assert np.allclose(got, sitk.GetArrayFromImage(img) * 2 - 100)


# ----------------------------------------------------------------------------- real series

@pytest.mark.shared
@pytest.mark.parametrize("folder,size,n_slices", [
    ("dcm_qa_ge/ge_pioneer_3D_Ax_T1_MPRAGE", (256, 256), 130),
    ("dcm_qa_philips_enh/philips_elition_ADNI_Sag3D_MPRAGE", (256, 256), 170),
])
def test_real_classic_volumes(folder, size, n_slices):
    files = _series(folder)
    vol = load_series(files)
    assert vol.image.GetSize() == (*size, n_slices)
    # ordered along the normal: each slice position one spacing further
    pos = vol.slice_positions()
    d = np.array(vol.image.GetDirection()).reshape(3, 3)[:, 2]
    steps = np.diff(pos @ d)
    np.testing.assert_allclose(steps, vol.image.GetSpacing()[2], rtol=0.02)
    # slice k is the file whose ImagePositionPatient is that position
    for k in (0, n_slices // 2, n_slices - 1):
        uid, frame = vol.slice_refs[k]
        ds = next(ds for ds in vol.datasets if ds.SOPInstanceUID == uid)
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], pos[k], atol=1e-3)
        px = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        assert np.allclose(sitk.GetArrayViewFromImage(vol.image)[k], px)


@pytest.mark.shared
def test_enhanced_and_classic_xa_have_same_geometry():
    enh = load_series(_series("dcm_qa_xa30/siemens_prisma_xa30_enh_T1w_tfl3d"))
    cls = load_series(_series("dcm_qa_frag/siemens_prisma_xa30_T1w_tfl3d_jpeg_lossless"))
    assert len(enh.datasets) == 1 and enh.is_multiframe
    assert sorted(f for _, f in enh.slice_refs) == list(range(1, 97))
    assert len(cls.datasets) == 96 and not cls.is_multiframe
    assert enh.image.GetSize() == cls.image.GetSize() == (128, 128, 96)
    np.testing.assert_allclose(enh.image.GetOrigin(), cls.image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(enh.image.GetSpacing(), cls.image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(enh.image.GetDirection(), cls.image.GetDirection(), atol=1e-4)
    # (pixels differ: the corpus' two XA series are separate acquisitions of the same protocol)
    # the enhanced frames are placed by their own PlanePositionSequence
    ds = enh.datasets[0]
    pos = enh.slice_positions()
    for k in (0, 50, 95):
        f = enh.slice_refs[k][1]
        item = ds.PerFrameFunctionalGroupsSequence[f - 1].PlanePositionSequence[0]
        np.testing.assert_allclose([float(v) for v in item.ImagePositionPatient], pos[k], atol=1e-3)
        assert np.allclose(sitk.GetArrayViewFromImage(enh.image)[k], ds.pixel_array[f - 1])


@pytest.mark.shared
def test_compressed_transfer_syntaxes_decode_identically():
    arrays = {}
    for ts in ("j2k", "jpeg", "jpegls", "rle"):
        vol = load_series(_series(f"dicom2nifti/unknownvendor_trio_3D_FLAIR_4sl_{ts}"))
        arrays[ts] = sitk.GetArrayFromImage(vol.image)
    ref = arrays.pop("rle")
    assert ref.shape == (4, 256, 256) and ref.max() > 0
    for ts, arr in arrays.items():
        assert np.array_equal(arr, ref), ts


@pytest.mark.shared
def test_real_mixed_orientation_series_refused():
    with pytest.raises(VolumeError, match="mixed orientations"):
        load_series(_series("dicom2nifti/philips_ingenia_2D_T2_TSE_4sl_mixed_series_one_uid"))
    sag = _series("dcm_qa_xa30i/siemens_prisma_xa30_AAHead_Scout_MPR_sag")
    with pytest.raises(VolumeError, match="mixed orientations"):
        load_series(sag)


@pytest.mark.shared
@pytest.mark.parametrize("folder,reason", [
    ("dcm_qa_enh/siemens_vida_xa10_enh_bold_sms", "share 6 positions"),
    ("dcm_qa_ge/ge_pioneer_Ax_DWI_tensor", "share 2 positions"),
    ("dcm_qa/siemens_trio_vb17_epi_mosaic_ax_asc_35sl", "mosaic"),
    ("edge/pydicom_basic_sr", "non-image"),
    ("hazen/ge_artist_ACR_sag_localizer", "too few slices"),
    ("dcm_qa_xa30/siemens_prisma_xa30_enh_color_FA", "colour"),
])
def test_real_series_refused_with_reason(folder, reason):
    with pytest.raises(VolumeError, match=reason):
        load_series(_series(folder))


@pytest.mark.shared
def test_enhanced_series_in_several_objects_equals_one_object():
    from dicom_node.devtools.synthetic import split_enhanced
    from dicom_node.run.volume import load_datasets

    files = _series("dcm_qa_xa30/siemens_prisma_xa30_enh_T1w_tfl3d")
    whole = load_series(files)
    parts = split_enhanced(pydicom.dcmread(files[0]), [30, 30, 36])
    vol = load_datasets(parts[::-1])  # order of the objects does not matter
    assert len(vol.datasets) == 3
    assert np.array_equal(sitk.GetArrayFromImage(vol.image), sitk.GetArrayFromImage(whole.image))
    assert vol.image.GetOrigin() == whole.image.GetOrigin()
    assert [f for _, f in vol.slice_refs] != [f for _, f in whole.slice_refs]  # frames renumbered
