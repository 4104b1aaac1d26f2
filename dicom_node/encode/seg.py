"""DICOM Segmentation of the MS lesions, referencing the source FLAIR instances.

Default: BINARY, one segment per lesion location class present (segment numbers follow
:data:`ai.types.LOCATIONS` order among the classes present), empty frames omitted; each frame
refers to its source FLAIR slice (Derivation Image Sequence) and carries that slice's position.
Options: one segment per lesion (``per_lesion=True``); a FRACTIONAL probability map
(``fractional=True``, one segment, RLE Lossless compressed). LABELMAP is never written (Orthanc
1.10 and the Debian dciodvfy do not know that SOP class).

When the result has no lesions there is nothing to segment; a SEG without segments is invalid,
so :func:`build_seg` returns ``None`` and the SR alone reports "0 lesions".
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from ai.types import LOCATION_LABELS, LOCATIONS, SegmentationResult
from dicom_node import __version__
from dicom_node.encode import codes as C
from dicom_node.encode.header import ensure_frame_of_reference, fill_type2
from dicom_node.encode.identity import MANUFACTURER, MODEL_NAME, RESEARCH_NOTE
from dicom_node.encode.uids import derive_uid
from dicom_node.run.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["build_seg", "segment_plan", "SegmentPlan", "write_segmentation", "prepare_source",
           "lesion_segment", "MANUFACTURER", "MODEL_NAME", "RESEARCH_NOTE", "LOCATION_RGB"]

#: Display colour of each location segment in SEG viewers.
LOCATION_RGB: dict[str, tuple[int, int, int]] = {
    "periventricular": (255, 64, 64),
    "juxtacortical": (255, 200, 0),
    "infratentorial": (64, 200, 64),
    "deep_white_matter": (64, 160, 255),
}


@dataclass(frozen=True)
class SegmentPlan:
    """What one segment of the SEG holds."""

    number: int  #: 1-based segment number
    label: str
    location: str | None  #: location class (None for the probability segment)
    lesion_ids: tuple[int, ...]  #: label values in result.labels


def segment_plan(result: SegmentationResult, *, per_lesion: bool = False,
                 fractional: bool = False) -> list[SegmentPlan]:
    """The segments :func:`build_seg` writes for ``result`` (also used by the SR encoder)."""
    if not result.lesions:
        return []
    if fractional:
        return [SegmentPlan(1, "MS lesion probability", None,
                            tuple(les.id for les in result.lesions))]
    if per_lesion:
        return [
            SegmentPlan(n, f"Lesion {les.id} {LOCATION_LABELS[les.location]}"[:64],
                        les.location, (les.id,))
            for n, les in enumerate(sorted(result.lesions, key=lambda les: les.id), start=1)
        ]
    plans: list[SegmentPlan] = []
    for loc in LOCATIONS:
        ids = tuple(les.id for les in result.lesions if les.location == loc)
        if ids:
            plans.append(SegmentPlan(len(plans) + 1, f"MS lesions {LOCATION_LABELS[loc]}"[:64], loc, ids))
    return plans


def _algorithm(model_name: str, model_version: str) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=(model_name or "unknown")[:64],
        family=C.AI_FAMILY,
        version=(model_version or "unknown")[:64],
        source=MANUFACTURER,
    )


def lesion_segment(number: int, label: str, algo: hd.AlgorithmIdentificationSequence, *,
                   tracking_uid: str, rgb: tuple[int, int, int],
                   site: hd.sr.CodedConcept | None = None) -> hd.seg.SegmentDescription:
    """Description of one automatic MS lesion segment (category SCT 49755003 "Morphologically
    abnormal structure", type SCT 52988006 "Lesion", region SCT 12738006 "Brain"; ``site`` the
    primary anatomic structure, ``label`` also its tracking identifier)."""
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=C.LESION_CATEGORY,
        segmented_property_type=C.LESION_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo,
        tracking_uid=tracking_uid,
        tracking_id=label,
        anatomic_regions=[C.BRAIN],
        primary_anatomic_structures=[site] if site is not None else None,
        display_color=hd.color.CIELabColor.from_rgb(*rgb),
    )


def _check_grid(array: np.ndarray, flair: Volume) -> None:
    """Refuse an array ``(z, y, x)`` that is not on the FLAIR grid."""
    shape = sitk.GetArrayViewFromImage(flair.image).shape
    if array.shape != shape:
        raise ValueError(f"result arrays {array.shape} are not on the FLAIR grid {shape}")
    if len(flair.slice_refs) != shape[0]:
        raise ValueError("flair.slice_refs does not have one entry per slice")


def prepare_source(flair: Volume) -> None:
    """Headers of the FLAIR ready for a SEG/SR: missing Type 2 attributes added empty, a
    FrameOfReferenceUID derived when there is none (both in place, idempotent)."""
    fill_type2(flair.datasets)  # real headers often lack Type 2 patient/study attributes
    ensure_frame_of_reference(flair.datasets)


def _multiframe_header(ds: Dataset) -> Dataset:
    """Header copy of an Enhanced object with the spatial macros in the shared groups.

    highdicom reads PixelMeasures/PlaneOrientation of a multi-frame source from the Shared
    Functional Groups only; Siemens XA writes them per frame. ``load_series`` has checked that
    they are the same for every frame, so the first frame's items are copied to the shared
    groups of a header-only copy (the original dataset is not modified).
    """
    shared_src = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else Dataset()
    per0 = ds.PerFrameFunctionalGroupsSequence[0] if "PerFrameFunctionalGroupsSequence" in ds else Dataset()
    missing = [kw for kw in ("PixelMeasuresSequence", "PlaneOrientationSequence")
               if kw not in shared_src and kw in per0]
    if not missing:
        return ds
    hdr = Dataset()
    for elem in ds:
        if elem.tag != 0x7FE00010:  # PixelData
            hdr.add(elem)
    if hasattr(ds, "file_meta"):
        hdr.file_meta = ds.file_meta
    shared = Dataset()
    for elem in shared_src:
        shared.add(elem)
    for kw in missing:
        setattr(shared, kw, getattr(per0, kw))
    hdr.SharedFunctionalGroupsSequence = [shared]
    return hdr


def _source_arrangement(flair: Volume, stack: np.ndarray) -> dict:
    """Arrange the slice-ordered ``stack`` for highdicom given how the FLAIR is stored."""
    refs = flair.slice_refs
    by_uid = {str(ds.SOPInstanceUID): ds for ds in flair.datasets}
    if all(f is None for _, f in refs):
        # classic single-frame series: frame i <-> source_images[i]
        sources = [by_uid[uid] for uid, _ in refs]
        if any(ds.get("SliceThickness") is None for ds in sources):
            # Type 2, left out by some writers; the SEG's Pixel Measures need a value
            # (highdicom reads it from the source): the measured slice spacing stands in.
            sz = flair.image.GetSpacing()[2]
            log.warning("series %s: source without SliceThickness; the SEG uses the slice "
                        "spacing %.4g mm", flair.series_uid, sz)
            for ds in sources:
                if ds.get("SliceThickness") is None:
                    ds.SliceThickness = f"{sz:.6g}"
        return dict(source_images=sources, pixel_array=stack)
    if len(flair.datasets) == 1:
        # one Enhanced multi-frame object: frame i <-> source frame i + 1
        n = int(flair.datasets[0].NumberOfFrames)
        if n != len(refs):
            raise ValueError(f"source has {n} frames but the volume has {len(refs)} slices")
        out = np.zeros((n,) + stack.shape[1:], stack.dtype)
        for k, (_, frame) in enumerate(refs):
            assert frame is not None  # multi-frame source: every slice has its frame number
            out[frame - 1] = stack[k]
        return dict(source_images=[_multiframe_header(flair.datasets[0])], pixel_array=out)
    # several multi-frame objects: give the plane positions explicitly
    im = flair.image
    d = np.array(im.GetDirection()).reshape(3, 3)
    sx, sy, sz = im.GetSpacing()
    positions = [
        hd.PlanePositionSequence(
            coordinate_system="PATIENT",
            image_position=tuple(float(v) for v in im.TransformIndexToPhysicalPoint((0, 0, k))),
        )
        for k in range(len(refs))
    ]
    return dict(
        source_images=[_multiframe_header(flair.datasets[0])],
        further_source_images=list(flair.datasets[1:]),
        pixel_array=stack,
        plane_positions=positions,
        plane_orientation=hd.PlaneOrientationSequence(
            coordinate_system="PATIENT",
            image_orientation=tuple(float(v) for v in np.concatenate([d[:, 0], d[:, 1]])),
        ),
        pixel_measures=hd.PixelMeasuresSequence(pixel_spacing=(sy, sx), slice_thickness=sz,
                                                spacing_between_slices=sz),
    )


def build_seg(
    result: SegmentationResult,
    flair: Volume,
    *,
    job_key: str,
    series_number: int = 901,
    fractional: bool = False,
    per_lesion: bool = False,
    transfer_syntax_uid: str | None = None,
) -> Dataset | None:
    """Encode the lesion segmentation of ``result`` as a DICOM Segmentation.

    Parameters
    ----------
    result
        Arrays ``(z, y, x)`` on ``flair.image``'s grid (slice k = ``flair.slice_refs[k]``).
    flair
        The source FLAIR volume (its datasets are referenced).
    job_key
        Seed of the deterministic Series/SOP Instance UIDs.
    fractional
        Encode ``result.probability`` as one FRACTIONAL PROBABILITY segment (RLE Lossless by
        default) instead of the BINARY per-location segments.
    per_lesion
        One BINARY segment per lesion instead of one per location class.

    Returns
    -------
    pydicom.Dataset or None
        ``highdicom.seg.Segmentation``; ``None`` when the result has no lesions.
    """
    _check_grid(result.labels, flair)
    prepare_source(flair)
    plans = segment_plan(result, per_lesion=per_lesion, fractional=fractional)
    if not plans:
        log.info("no lesions: no SEG written (job key hash %s)", derive_uid(job_key)[-8:])
        return None
    algo = _algorithm(result.model_name, result.model_version)
    descriptions = [
        lesion_segment(p.number, p.label, algo, tracking_uid=derive_uid(job_key, "segment", p.label),
                       rgb=LOCATION_RGB.get(p.location or "", (255, 0, 0)),
                       site=C.LOCATION_CODES[p.location] if p.location else None)
        for p in plans
    ]

    labels = result.labels
    if fractional:
        prob = np.clip(np.nan_to_num(result.probability.astype(np.float32)), 0.0, 1.0)
        stack = prob[..., None]
        seg_type = hd.seg.SegmentationTypeValues.FRACTIONAL
        ts = transfer_syntax_uid or RLELossless
        variant = "fractional"
    else:
        lut = np.zeros(int(labels.max()) + 1, np.uint8)
        stack = np.zeros(labels.shape + (len(plans),), np.uint8)
        for j, p in enumerate(plans):
            lut[:] = 0
            lut[list(p.lesion_ids)] = 1
            stack[..., j] = lut[labels]
        seg_type = hd.seg.SegmentationTypeValues.BINARY
        ts = transfer_syntax_uid or ExplicitVRLittleEndian
        variant = "binary-lesion" if per_lesion else "binary"

    what = "probability map" if fractional else ("lesions" if per_lesion else "lesions by location")
    return write_segmentation(
        flair, stack, descriptions, seg_type=seg_type, transfer_syntax_uid=ts,
        series_uid=derive_uid(job_key, "seg-series", variant),
        sop_uid=derive_uid(job_key, "seg", variant), series_number=series_number,
        content_description=f"MS {what} ({RESEARCH_NOTE})", content_label="MS_LESIONS",
        series_description=f"MS lesion SEG {'probability ' if fractional else ''}- {RESEARCH_NOTE}",
    )


def write_segmentation(
    flair: Volume,
    stack: np.ndarray,
    descriptions: list[hd.seg.SegmentDescription],
    *,
    seg_type: hd.seg.SegmentationTypeValues,
    transfer_syntax_uid: str,
    series_uid: str,
    sop_uid: str,
    series_number: int,
    content_description: str,
    content_label: str,
    series_description: str,
) -> hd.seg.Segmentation:
    """The highdicom Segmentation of ``stack`` on the FLAIR grid, with the node's header.

    Shared by :func:`build_seg` and :func:`dicom_node.encode.change.build_change_seg`.

    Parameters
    ----------
    stack
        ``(z, y, x, n_segments)`` in slice order of ``flair`` (uint8 0/1 for BINARY, float in
        [0, 1] for FRACTIONAL); arranged here for how the FLAIR is stored.
    descriptions
        One per segment, numbered 1..n in ``stack``'s last-axis order.
    content_description, series_description
        Cut to 64 characters (LO); they should carry :data:`RESEARCH_NOTE`.
    """
    kwargs = _source_arrangement(flair, stack)
    fractional = seg_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    seg = hd.seg.Segmentation(
        segmentation_type=seg_type,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=__version__,
        device_serial_number="0",
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY if fractional else None,
        max_fractional_value=255,
        content_description=content_description[:64],
        content_label=content_label,
        content_creator_name=None,
        transfer_syntax_uid=transfer_syntax_uid,
        omit_empty_frames=True,
        series_description=series_description[:64],
        content_qualification="RESEARCH",
        coding_schemes=C.coding_schemes(),
        **kwargs,
    )
    if "plane_positions" in kwargs:
        _add_frame_references(seg, flair)
    return seg


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _add_frame_references(seg: Dataset, flair: Volume) -> None:
    """Per-frame Derivation Image Sequence for a SEG built from explicit plane positions.

    highdicom records no source frame when the positions are given explicitly (the case of a
    FLAIR stored as several Enhanced objects); each SEG frame sits exactly on a FLAIR slice, so
    the reference is found by the slice position and added like highdicom does it.
    """
    positions = flair.slice_positions()
    for fr in seg.PerFrameFunctionalGroupsSequence:
        ipp = np.array([float(v) for v in fr.PlanePositionSequence[0].ImagePositionPatient])
        k = int(np.argmin(np.linalg.norm(positions - ipp, axis=1)))
        if np.linalg.norm(positions[k] - ipp) > 1e-2:
            raise ValueError(f"SEG frame at {ipp.tolist()} is not on a FLAIR slice")
        src = flair.slice_reference(k)
        src.SpatialLocationsPreserved = "YES"
        src.PurposeOfReferenceCodeSequence = [
            _code_item("121322", "DCM", "Source image for image processing operation")]
        der = Dataset()
        der.SourceImageSequence = [src]
        der.DerivationCodeSequence = [_code_item("113076", "DCM", "Segmentation")]
        fr.DerivationImageSequence = [der]


def seg_masks_on_volume(seg: Dataset, flair: Volume) -> np.ndarray:
    """Read a SEG back onto the FLAIR grid: array ``(z, y, x, n_segments)``.

    Frames are placed by their references to the source slices (``flair.slice_refs``), so this
    checks that every frame points at the right source slice. BINARY -> uint8 0/1, FRACTIONAL ->
    float32 in [0, 1].
    """
    if not isinstance(seg, hd.seg.Segmentation):
        seg = hd.seg.Segmentation.from_dataset(seg, copy=True)
    n_seg = len(seg.SegmentSequence)
    numbers = list(range(1, n_seg + 1))
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    refs = flair.slice_refs
    if all(f is None for _, f in refs):
        arr = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[uid for uid, _ in refs], segment_numbers=numbers,
            dtype=np.float32 if fractional else np.uint8, assert_missing_frames_are_empty=True,
        )
    else:
        parts = []
        for uid, frame in refs:
            assert frame is not None  # multi-frame source: every slice has its frame number
            parts.append(seg.get_pixels_by_source_frame(
                source_sop_instance_uid=uid, source_frame_numbers=[frame], segment_numbers=numbers,
                dtype=np.float32 if fractional else np.uint8, assert_missing_frames_are_empty=True,
            )[0])
        arr = np.stack(parts)
    return arr
