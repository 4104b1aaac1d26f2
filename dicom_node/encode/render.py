"""The overlay's pictures: FLAIR slices with the lesions coloured and outlined, and the summary.

:func:`render_slices` draws every FLAIR slice windowed to grey with the lesions filled in
translucent colour and outlined (by change since the prior study when a comparable
:class:`ai.types.ChangeReport` is given, with a legend), a banner and the slice's lesions;
:func:`render_summary` draws the lesion table and, with a prior, the comparison. Both return RGB
arrays; :mod:`dicom_node.encode.overlay` makes them DICOM Secondary Capture series. The colours
are module constants (see that module's docstring for what each means); text and legend
swatches never use them.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ai.types import (
    CHANGE_ENLARGING,
    CHANGE_NEW,
    CHANGE_SHRINKING,
    CHANGE_STABLE,
    DETECTION_LIMITS_SHORT,
    LOCATION_LABELS,
    LOCATIONS,
    ChangeReport,
    SegmentationResult,
)
from dicom_node.encode.seg import MANUFACTURER, RESEARCH_NOTE
from dicom_node.run.volume import Volume

__all__ = ["render_slices", "render_summary", "change_lines", "LESION_RGB", "NEW_RGB",
           "ENLARGING_RGB", "SHRINKING_RGB", "CHANGE_RGB", "CHANGE_LEGEND"]

#: Outline colour of every lesion (fill is the same hue, blended with the grey image); with a
#: prior, of the lesion voxels that were lesion in the prior too (stable).
LESION_RGB: tuple[int, int, int] = (255, 0, 0)
#: With a prior: outline and fill of new lesions (magenta).
NEW_RGB: tuple[int, int, int] = (255, 0, 255)
#: With a prior: outline and fill of the part an enlarging lesion gained (orange).
ENLARGING_RGB: tuple[int, int, int] = (255, 128, 0)
#: With a prior: outline (no fill) of prior lesion voxels no longer lesion (cyan).
SHRINKING_RGB: tuple[int, int, int] = (0, 255, 255)
#: Colour of each change class (keys of :data:`ai.types.CHANGE_LABELS`), also the change SEG's.
CHANGE_RGB: dict[int, tuple[int, int, int]] = {
    CHANGE_NEW: NEW_RGB, CHANGE_ENLARGING: ENLARGING_RGB, CHANGE_STABLE: LESION_RGB,
    CHANGE_SHRINKING: SHRINKING_RGB,
}
#: Words of the legend line, in drawing order.
CHANGE_LEGEND: dict[int, str] = {
    CHANGE_NEW: "new", CHANGE_ENLARGING: "enlarging part", CHANGE_STABLE: "stable",
    CHANGE_SHRINKING: "shrinking/vanished part",
}
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


def _scale_for(shape: tuple[int, int], min_size: int) -> int:
    return max(1, int(np.ceil(min_size / max(shape))))


def _comparable(change: ChangeReport | None) -> bool:
    return change is not None and change.comparable and change.change_map is not None


def _layers(result: SegmentationResult, mask: np.ndarray,
            change: ChangeReport | None) -> list[tuple[np.ndarray, tuple[int, int, int], bool]]:
    """(mask, colour, filled) drawn in this order; one red layer without a comparable prior."""
    if change is None or not _comparable(change):
        return [(mask, LESION_RGB, True)]
    assert change.change_map is not None
    cmap = np.asarray(change.change_map)
    if cmap.shape != mask.shape:
        raise ValueError(f"change map {cmap.shape} is not on the FLAIR grid {mask.shape}")
    stable = (cmap == CHANGE_STABLE) | (mask & (cmap == 0))  # a lesion the map misses: as before
    return [(stable, LESION_RGB, True), (cmap == CHANGE_ENLARGING, ENLARGING_RGB, True),
            (cmap == CHANGE_NEW, NEW_RGB, True), (cmap == CHANGE_SHRINKING, SHRINKING_RGB, False)]


def _swatch(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """A legend colour one step off ``rgb`` (looks the same, never equals an outline colour)."""
    return (rgb[0] - 1 if rgb[0] else 1, rgb[1], rgb[2])


def _follow_status(change: ChangeReport | None) -> dict[int, str]:
    """Follow-up lesion id -> change status ({} without a comparable prior)."""
    if change is None or not _comparable(change):
        return {}
    return {lc.lesion_id: lc.status for lc in change.lesions if lc.timepoint == "follow-up"}


def _draw_legend(d: ImageDraw.ImageDraw, x: int, y: int, size: int) -> None:
    font = _font(size)
    for c, word in CHANGE_LEGEND.items():
        d.rectangle([x, y + 2, x + size - 3, y + size - 1], fill=_swatch(CHANGE_RGB[c]))
        x += size + 1
        d.text((x, y), word, fill=TEXT_DIM_RGB, font=font)
        x += int(d.textlength(word, font=font)) + size


def render_slices(
    result: SegmentationResult, flair: Volume, *, min_size: int = 384,
    annotate: bool = True, change: ChangeReport | None = None,
) -> np.ndarray:
    """RGB uint8 overlay of every slice, shape ``(z, rows * s, cols * s, 3)``.

    With a comparable ``change`` the lesions are drawn by change class (:data:`CHANGE_RGB`) and
    each slice gets a legend line; otherwise every lesion is :data:`LESION_RGB`.
    """
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
    layers = _layers(result, mask, change)
    status = _follow_status(change)
    legend = len(layers) > 1
    legend_px = max(8, min(6 * s, (nx * s) // 28))
    for k in range(nz):
        g = Image.fromarray(grey[k])
        if s > 1:
            g = g.resize((nx * s, ny * s), Image.Resampling.BILINEAR)
        rgb = np.repeat(np.asarray(g)[..., None], 3, axis=2).astype(np.float32)
        for layer, colour, filled in layers:
            m = layer[k]
            if not m.any():
                continue
            if s > 1:
                m = np.repeat(np.repeat(m, s, axis=0), s, axis=1)
            c = np.array(colour, np.float32)
            if filled:
                rgb[m] = (1 - FILL_ALPHA) * rgb[m] + FILL_ALPHA * c
            edge = m & ~ndimage.binary_erosion(m, border_value=0)
            rgb[edge] = c
        img = rgb.astype(np.uint8)
        # grey (R=G=B) is none of the colours; the 35% blend is never one either: it is
        # 0.65 * grey + 0.35 * colour, so a channel at 0 in the colour is > 0 (and one at 255
        # is < 255) unless the grey is 0 (255), which gives no colour of CHANGE_RGB either
        if annotate:
            pil = Image.fromarray(img)
            d = ImageDraw.Draw(pil)
            d.text((4, 2), RESEARCH_NOTE, fill=TEXT_RGB, font=font)
            d.text((4, ny * s - font_px - 6), f"{k + 1}/{nz}", fill=TEXT_DIM_RGB, font=font)
            if legend:
                _draw_legend(d, 4, ny * s - font_px - legend_px - 10, legend_px)
            if k in by_slice:
                txt = "Lesions " + ", ".join(
                    f"{i} ({status[i]})" if status.get(i, "stable") != "stable" else str(i)
                    for i in by_slice[k][:8])
                if len(by_slice[k]) > 8:
                    txt += ", ..."
                d.text((4, 4 + font_px + 2), txt, fill=TEXT_DIM_RGB, font=font)
            img = np.asarray(pil)
        out[k] = img
    return out


def _date(da: str) -> str:
    """DICOM DA ``YYYYMMDD`` as ``YYYY-MM-DD`` (as given when it is not one; "unknown" if empty)."""
    if len(da) == 8 and da.isdigit():
        return f"{da[:4]}-{da[4:6]}-{da[6:]}"
    return da or "unknown"


def change_lines(change: ChangeReport) -> list[str]:
    """The summary image's lines on the comparison with the prior study."""
    if not change.comparable:
        reason = change.reason or "no reason given"
        return [f"No comparable prior study: {reason if len(reason) <= 70 else reason[:67] + '...'}"]
    interval = f", {change.interval_days} days earlier" if change.interval_days is not None else ""
    return [
        f"Change since the prior study of {_date(change.prior_study_date)}{interval}:",
        f"   New lesions: {change.n_new}    Enlarging: {change.n_enlarging}    "
        f"Shrinking: {change.n_shrinking}    No longer seen: {change.n_vanished}",
        f"   Total volume: prior {change.total_volume_prior_mm3 / 1000:.2f} ml, now "
        f"{change.total_volume_now_mm3 / 1000:.2f} ml",
        "   New disease activity (new or enlarging lesions): "
        f"{'yes' if change.activity else 'no'}",
    ]


def render_summary(result: SegmentationResult, *, width: int = 1024, height: int = 768,
                   max_rows: int = 22, change: ChangeReport | None = None) -> np.ndarray:
    """RGB uint8 image with the lesion table (the summary image of the overlay).

    With ``change`` it also holds :func:`change_lines` (and, when comparable, the colour key and
    a change column in the table).
    """
    pil = Image.new("RGB", (width, height), (16, 16, 16))
    d = ImageDraw.Draw(pil)
    big, mid, small = _font(30), _font(20), _font(16)
    y = 16
    d.text((20, y), "MS lesion analysis", fill=TEXT_RGB, font=big)
    d.text((width - 330, y + 6), RESEARCH_NOTE, fill=(255, 200, 0), font=mid)
    y += 44
    d.text((20, y), "Not for diagnosis or treatment decisions. Automated result, unverified.",
           fill=TEXT_DIM_RGB, font=small)
    y += 22
    d.text((20, y), DETECTION_LIMITS_SHORT, fill=TEXT_DIM_RGB, font=small)
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
    if change is not None:
        lines += change_lines(change)
    for ln in lines:
        d.text((20, y), ln, fill=TEXT_RGB, font=mid)
        y += 28
    status = _follow_status(change)
    if status:
        d.text((40, y), "Colours: magenta new, orange enlarging part, red stable, "
               "cyan shrinking/vanished part", fill=TEXT_DIM_RGB, font=small)
        y += 22
    y += 6
    for loc in LOCATIONS:
        d.text((40, y), f"{LOCATION_LABELS[loc]}:", fill=TEXT_DIM_RGB, font=small)
        d.text((300, y), f"{s.counts_by_location.get(loc, 0):4d} lesions   "
               f"{s.volume_by_location_mm3.get(loc, 0.0):9.0f} mm3", fill=TEXT_RGB, font=small)
        y += 22
    y += 10
    cols = [20, 110, 330, 480, 650, 800] + ([900] if status else [])
    max_rows = min(max_rows, max(0, (height - 60 - y - 22) // 20 - 1))
    heads = ["#", "Location", "Volume mm3", "Slices", "Mean/max prob.", "Size"] + (["Change"] if status else [])
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
        if status:
            row.append(status.get(les.id, ""))
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
