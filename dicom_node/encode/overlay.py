"""Overlay series for viewers that cannot display a DICOM SEG.

Two Secondary Capture (RGB) series in the study of the FLAIR:

- "MS lesion overlay": one image per FLAIR slice (same order, InstanceNumber = slice + 1), the
  FLAIR windowed to grey with every lesion filled in translucent red and outlined in pure red
  :data:`LESION_RGB`, a "RESEARCH USE ONLY" banner, slice number and the lesions on the slice.
  Each image references its FLAIR slice (Source Image Sequence).
- "MS lesion summary": one image with the lesion table (count, total volume, counts and volumes
  per location, load category, dissemination in space, the largest lesions) and the model.

With a comparable follow-up comparison (``change``, an :class:`ai.types.ChangeReport`) the
lesions are coloured by their change since the prior study (:data:`CHANGE_RGB`): new lesions
magenta :data:`NEW_RGB`, the part an enlarging lesion gained orange :data:`ENLARGING_RGB`
(filled and outlined), lesion voxels that were lesion before red :data:`LESION_RGB` as
without a prior, and prior lesion voxels that are no longer lesion (shrinking or vanished
lesions) outlined only in cyan :data:`SHRINKING_RGB`. Each slice gets a legend line (colour
swatches one step off the outline colours, with grey words); the summary image gains the
comparison (new and enlarging lesions, volume then and now, interval, new disease activity, the
prior study's date) and a change column. A comparison that was not possible adds one line
saying why to the summary; the slices stay as without a prior.

The burned-in text and the legend swatches never use a lesion colour, so "pixels equal to
LESION_RGB" (or to any colour of :data:`CHANGE_RGB`) are exactly the outlines of that class (a
screenshot test can look for that colour).

The pictures are drawn by :mod:`dicom_node.encode.render`; this module makes them DICOM
Secondary Capture series (highdicom), with UIDs derived from the job.
"""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from ai.types import ChangeReport, SegmentationResult
from dicom_node.encode.header import copy_patient_study, fill_type2
from dicom_node.encode.render import (
    CHANGE_RGB,
    ENLARGING_RGB,
    LESION_RGB,
    NEW_RGB,
    SHRINKING_RGB,
    _comparable,
    render_slices,
    render_summary,
)
from dicom_node.encode.seg import MANUFACTURER, MODEL_NAME, RESEARCH_NOTE
from dicom_node.encode.uids import change_key, derive_uid
from dicom_node.run.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["build_overlay", "render_slices", "render_summary", "LESION_RGB", "NEW_RGB",
           "ENLARGING_RGB", "SHRINKING_RGB", "CHANGE_RGB"]


def _orientation_letters(v: np.ndarray) -> str:
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    parts = [(abs(c), letters[i][0] if c > 0 else letters[i][1]) for i, c in enumerate(v)]
    parts = sorted([p for p in parts if p[0] > 0.25], reverse=True)
    return "".join(p[1] for p in parts) or "L"


def _sc(flair: Volume, pixels: np.ndarray, *, series_uid: str, series_number: int, sop_uid: str,
        instance_number: int, description: str, ts: str, pixel_spacing=None,
        orientation=None) -> Dataset:
    ref = flair.datasets[0]
    fill_type2([ref])
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        pixel_spacing=pixel_spacing,
        patient_orientation=orientation or ("L", "P"),
        transfer_syntax_uid=ts,
        series_description=description,
        manufacturer_model_name=MODEL_NAME,
    )
    copy_patient_study(ref, sc)  # from_ref_dataset copies only the Type 1/2 basics
    sc.BurnedInAnnotation = "YES"
    sc.Laterality = ""  # General Series type 2C; dciodvfy requires it for HEAD
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"
    return sc


def build_overlay(
    result: SegmentationResult,
    flair: Volume,
    *,
    job_key: str,
    series_number: int = 903,
    min_size: int = 384,
    compress: bool = True,
    include_summary: bool = True,
    change: ChangeReport | None = None,
) -> list[Dataset]:
    """Secondary Capture overlay images of every FLAIR slice, plus the summary image.

    Parameters
    ----------
    change
        The comparison with the prior study. Comparable: lesions coloured by change class
        (:data:`CHANGE_RGB`), a legend on each slice, the change in the summary image; not
        comparable: the summary says why. With a change the UIDs derive from
        :func:`dicom_node.encode.uids.change_key` (new objects); ``None``: as before.
    min_size
        Slices are enlarged by an integer factor so that their larger side is at least this
        many pixels (sharper outlines and readable text).
    compress
        RLE Lossless (default) or Explicit VR Little Endian.
    include_summary
        Append the summary image (its own series, number ``series_number + 1``).

    Returns
    -------
    list of pydicom.Dataset
        One per slice in slice order (InstanceNumber k + 1), then the summary image.
    """
    ts = RLELossless if compress else ExplicitVRLittleEndian
    rgb = render_slices(result, flair, min_size=min_size, change=change)
    job_key = change_key(job_key, change)
    nz = rgb.shape[0]
    s = rgb.shape[1] // sitk.GetArrayViewFromImage(flair.image).shape[1]
    sx, sy, _ = flair.image.GetSpacing()
    d = np.array(flair.image.GetDirection()).reshape(3, 3)
    orientation = (_orientation_letters(d[:, 0]), _orientation_letters(d[:, 1]))
    series_uid = derive_uid(job_key, "overlay-series")
    out: list[Dataset] = []
    for k in range(nz):
        sc = _sc(flair, rgb[k], series_uid=series_uid, series_number=series_number,
                 sop_uid=derive_uid(job_key, "overlay", str(k)), instance_number=k + 1,
                 description=f"MS lesion overlay - {RESEARCH_NOTE}", ts=ts,
                 pixel_spacing=(sy / s, sx / s), orientation=orientation)
        sc.SourceImageSequence = [flair.slice_reference(k)]
        sc.DerivationDescription = (
            "FLAIR slice with automated MS lesion outlines burned in"
            + (", coloured by change since the prior study" if _comparable(change) else ""))
        out.append(sc)
    if include_summary:
        out.append(_sc(flair, render_summary(result, change=change), series_uid=derive_uid(job_key, "summary-series"),
                       series_number=series_number + 1, sop_uid=derive_uid(job_key, "summary"),
                       instance_number=1, description=f"MS lesion summary - {RESEARCH_NOTE}", ts=ts))
    return out
