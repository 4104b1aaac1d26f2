"""Overlay series for viewers that cannot display a DICOM SEG.

Two Secondary Capture (RGB) series in the study of the FLAIR:

- "MS lesion overlay": one image per FLAIR slice (same order, InstanceNumber = slice + 1), the
  FLAIR windowed to grey with every lesion filled in translucent red and outlined in pure red
  :data:`LESION_RGB`, a "RESEARCH USE ONLY" banner, slice number and the lesions on the slice.
  Each image references its FLAIR slice (Source Image Sequence).
- "MS lesion summary": one image with the lesion table (count, total volume, counts and volumes
  per location, load category, dissemination in space, the largest lesions) and the model.

The burned-in text never uses the lesion colour, so "pixels equal to LESION_RGB" are exactly
the lesion outlines (a screenshot test can look for that colour).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from scipy import ndimage

from ai.types import LOCATION_LABELS, LOCATIONS, SegmentationResult
from dicom_node.encode.header import copy_patient_study, fill_type2
from dicom_node.encode.seg import MANUFACTURER, MODEL_NAME, RESEARCH_NOTE
from dicom_node.encode.uids import derive_uid
from dicom_node.run.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["build_overlay", "render_slices", "render_summary", "LESION_RGB"]

#: Outline colour of every lesion (fill is the same hue, blended with the grey image).
LESION_RGB: tuple[int, int, int] = (255, 0, 0)
FILL_ALPHA = 0.35
TEXT_RGB = (255, 255, 255)
TEXT_DIM_RGB = (190, 190, 190)


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans shipped with matplotlib (found without importing it), else PIL's default."""
    try:
        spec = importlib.util.find_spec("matplotlib")
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError("matplotlib")
        path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except Exception:  # noqa: BLE001 - fall back to PIL's bitmap font
        return ImageFont.load_default()


def _window(arr: np.ndarray) -> tuple[float, float]:
    vals = arr[arr > np.percentile(arr, 5)] if arr.size else arr
    if vals.size == 0:
        vals = arr.ravel()
    lo, hi = np.percentile(vals, [0.5, 99.5]) if vals.size else (0.0, 1.0)
    return float(lo), float(max(hi, lo + 1e-6))


def _orientation_letters(v: np.ndarray) -> str:
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    parts = [(abs(c), letters[i][0] if c > 0 else letters[i][1]) for i, c in enumerate(v)]
    parts = sorted([p for p in parts if p[0] > 0.25], reverse=True)
    return "".join(p[1] for p in parts) or "L"


def _scale_for(shape: tuple[int, int], min_size: int) -> int:
    return max(1, int(np.ceil(min_size / max(shape))))


def render_slices(
    result: SegmentationResult, flair: Volume, *, min_size: int = 384,
    annotate: bool = True,
) -> np.ndarray:
    """RGB uint8 overlay of every slice, shape ``(z, rows * s, cols * s, 3)``."""
    arr = sitk.GetArrayFromImage(flair.image).astype(np.float32)
    if result.labels.shape != arr.shape:
        raise ValueError(f"result arrays {result.labels.shape} are not on the FLAIR grid {arr.shape}")
    lo, hi = _window(arr)
    grey = np.clip((arr - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    ids = [les.id for les in result.lesions]
    mask = np.isin(result.labels, ids) if ids else np.zeros(arr.shape, bool)
    nz, ny, nx = arr.shape
    s = _scale_for((ny, nx), min_size)
    out = np.empty((nz, ny * s, nx * s, 3), np.uint8)
    font = _font(max(10, 6 * s))
    font_px = font.size if isinstance(font, ImageFont.FreeTypeFont) else 11  # bitmap fallback: 11 px
    by_slice: dict[int, list[int]] = {}
    for les in result.lesions:
        for k in range(int(les.bbox_index[0]), int(les.bbox_index[3])):
            by_slice.setdefault(k, []).append(les.id)
    red = np.array(LESION_RGB, np.float32)
    for k in range(nz):
        g = Image.fromarray(grey[k])
        if s > 1:
            g = g.resize((nx * s, ny * s), Image.Resampling.BILINEAR)
        rgb = np.repeat(np.asarray(g)[..., None], 3, axis=2).astype(np.float32)
        m = mask[k]
        if m.any():
            if s > 1:
                m = np.repeat(np.repeat(m, s, axis=0), s, axis=1)
            rgb[m] = (1 - FILL_ALPHA) * rgb[m] + FILL_ALPHA * red
            edge = m & ~ndimage.binary_erosion(m, border_value=0)
            rgb[edge] = red
        img = rgb.astype(np.uint8)
        # grey (R=G=B) and the 35% blend (G=B=0.65*grey, R>=89) are never pure red (255, 0, 0)
        if annotate:
            pil = Image.fromarray(img)
            d = ImageDraw.Draw(pil)
            d.text((4, 2), RESEARCH_NOTE, fill=TEXT_RGB, font=font)
            d.text((4, ny * s - font_px - 6), f"{k + 1}/{nz}", fill=TEXT_DIM_RGB, font=font)
            if k in by_slice:
                txt = "Lesions " + ", ".join(str(i) for i in by_slice[k][:8])
                if len(by_slice[k]) > 8:
                    txt += ", ..."
                d.text((4, 4 + font_px + 2), txt, fill=TEXT_DIM_RGB, font=font)
            img = np.asarray(pil)
        out[k] = img
    return out


def render_summary(result: SegmentationResult, *, width: int = 1024, height: int = 768,
                   max_rows: int = 22) -> np.ndarray:
    """RGB uint8 image with the lesion table (the summary image of the overlay)."""
    pil = Image.new("RGB", (width, height), (16, 16, 16))
    d = ImageDraw.Draw(pil)
    big, mid, small = _font(30), _font(20), _font(16)
    y = 16
    d.text((20, y), "MS lesion analysis", fill=TEXT_RGB, font=big)
    d.text((width - 330, y + 6), RESEARCH_NOTE, fill=(255, 200, 0), font=mid)
    y += 44
    d.text((20, y), "Not for diagnosis or treatment decisions. Automated result, unverified.",
           fill=TEXT_DIM_RGB, font=small)
    y += 30
    s = result.summary
    lines = [
        f"Lesions: {s.lesion_count}    Total volume: {s.total_volume_mm3 / 1000:.2f} ml "
        f"({s.total_volume_mm3:.0f} mm3)",
        f"Lesion load: {s.load_category}    Low confidence (mean prob. < {s.confidence_cut:.2f}): "
        f"{s.low_confidence_count}",
        "Dissemination in space (McDonald 2017, brain MRI): "
        f"{'met' if s.dis_met else 'not met'}",
    ]
    if s.dis_areas:
        lines.append("   areas with lesions: " + ", ".join(s.dis_areas))
    for ln in lines:
        d.text((20, y), ln, fill=TEXT_RGB, font=mid)
        y += 28
    y += 6
    for loc in LOCATIONS:
        d.text((40, y), f"{LOCATION_LABELS[loc]}:", fill=TEXT_DIM_RGB, font=small)
        d.text((300, y), f"{s.counts_by_location.get(loc, 0):4d} lesions   "
               f"{s.volume_by_location_mm3.get(loc, 0.0):9.0f} mm3", fill=TEXT_RGB, font=small)
        y += 22
    y += 10
    cols = [20, 110, 330, 480, 650, 800]
    max_rows = min(max_rows, max(0, (height - 60 - y - 22) // 20 - 1))
    heads = ["#", "Location", "Volume mm3", "Slices", "Mean/max prob.", "Size"]
    for x, h in zip(cols, heads, strict=False):
        d.text((x, y), h, fill=(255, 200, 0), font=small)
    y += 22
    lesions = sorted(result.lesions, key=lambda les: -les.volume_mm3)
    if not lesions:
        d.text((20, y), "No lesions detected.", fill=TEXT_RGB, font=mid)
    for les in lesions[:max_rows]:
        row = [str(les.id), LOCATION_LABELS.get(les.location, les.location),
               f"{les.volume_mm3:.1f}", f"{les.bbox_index[0] + 1}-{les.bbox_index[3]}",
               f"{les.mean_probability:.2f} / {les.max_probability:.2f}", les.size_class]
        for x, v in zip(cols, row, strict=False):
            d.text((x, y), v, fill=TEXT_RGB, font=small)
        y += 20
        if y > height - 60:
            break
    shown = min(len(lesions), max_rows)
    if len(lesions) > shown:
        d.text((20, y + 4), f"... and {len(lesions) - shown} smaller lesions (all in the SR)",
               fill=TEXT_DIM_RGB, font=small)
    d.text((20, height - 28),
           f"Model {result.model_name}  sha256 {result.model_version[:16]}...  ({MANUFACTURER})",
           fill=TEXT_DIM_RGB, font=small)
    return np.asarray(pil)


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
) -> list[Dataset]:
    """Secondary Capture overlay images of every FLAIR slice, plus the summary image.

    Parameters
    ----------
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
    rgb = render_slices(result, flair, min_size=min_size)
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
        sc.DerivationDescription = "FLAIR slice with automated MS lesion outlines burned in"
        out.append(sc)
    if include_summary:
        out.append(_sc(flair, render_summary(result), series_uid=derive_uid(job_key, "summary-series"),
                       series_number=series_number + 1, sop_uid=derive_uid(job_key, "summary"),
                       instance_number=1, description=f"MS lesion summary - {RESEARCH_NOTE}", ts=ts))
    return out
