"""Overlay series: one RGB image per FLAIR slice with lesion outlines in LESION_RGB, plus a summary."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dicom_node.devtools.synthetic import blob_labels, result_from_labels
from dicom_node.devtools.wrap import write_mr_series
from dicom_node.encode import dciodvfy
from dicom_node.encode.overlay import LESION_RGB, build_overlay
from dicom_node.run.volume import load_series


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ov")
    z, y, x = np.indices((10, 60, 50))
    arr = (300 + 200 * np.sin(x / 5.0) * np.cos(y / 7.0) + 5 * z).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 3.0))
    vol = load_series(write_mr_series(img, tmp / "flair", study_uid="1.2.826.0.1.3680043.99.3", contrast="FLAIR"))
    labels = blob_labels(arr.shape, [((3, 20, 15), 4.0), ((7, 40, 30), 5.0)])
    return vol, result_from_labels(labels, vol.image, ["periventricular", "juxtacortical"])


def _is_lesion_colour(rgb: np.ndarray) -> np.ndarray:
    return np.all(rgb == np.array(LESION_RGB, np.uint8), axis=-1)


def test_one_image_per_slice_with_outlines_where_lesions_are(case, tmp_path):
    vol, res = case
    out = build_overlay(res, vol, job_key="job")
    slices, summary = out[:-1], out[-1]
    assert len(slices) == vol.n_slices
    for k, ds in enumerate(slices):
        path = tmp_path / f"{k}.dcm"
        ds.save_as(path)
        ds = pydicom.dcmread(path)  # compressed (RLE) and decodable
        assert ds.InstanceNumber == k + 1
        assert ds.StudyInstanceUID == vol.study_uid
        assert "RESEARCH USE ONLY" in ds.SeriesDescription
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == vol.slice_refs[k][0]
        px = ds.pixel_array
        assert px.ndim == 3 and px.shape[-1] == 3
        red = _is_lesion_colour(px)
        has_lesion = bool(res.labels[k].any())
        assert red.any() == has_lesion, k
        if has_lesion:
            # outline pixels lie on the lesion (scaled to the overlay size)
            s = px.shape[0] // res.labels.shape[1]
            rows, cols = np.nonzero(red)
            assert res.labels[k][rows // s, cols // s].all()
    assert summary.SeriesInstanceUID != slices[0].SeriesInstanceUID
    assert "RESEARCH USE ONLY" in summary.SeriesDescription
    assert not _is_lesion_colour(summary.pixel_array).any()


def test_no_lesions_gives_plain_slices(case):
    vol, res = case
    empty = result_from_labels(np.zeros_like(res.labels), vol.image)
    out = build_overlay(empty, vol, job_key="job", include_summary=False)
    assert len(out) == vol.n_slices
    assert not any(_is_lesion_colour(ds.pixel_array).any() for ds in out)


def test_uids_deterministic(case):
    vol, res = case
    a = [ds.SOPInstanceUID for ds in build_overlay(res, vol, job_key="j")]
    b = [ds.SOPInstanceUID for ds in build_overlay(res, vol, job_key="j")]
    assert a == b and len(set(a)) == len(a)


def test_dciodvfy_no_errors(case):
    vol, res = case
    out = build_overlay(res, vol, job_key="j")
    for ds in (out[3], out[-1]):
        rep = dciodvfy.validate_dataset(ds)
        assert rep.errors == [], rep.text
