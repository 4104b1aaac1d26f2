r"""Vendor-agnostic MR series classification from DICOM headers.

``classify_series(headers)`` looks only at headers (datasets read with
``stop_before_pixels=True``) and derives what routing needs: the contrast
(FLAIR, T1, T2, PD, DWI, LOCALIZER, OTHER, UNKNOWN), 2D/3D, derived or
original, orientation, image count, modality and whether the object is an
image at all, together with human-readable reasons.

The decision is made from acquisition physics and object structure (SOP class,
Modality, ImageType/FrameType, TR/TE/TI, ScanningSequence, SequenceVariant,
ScanOptions, Enhanced-MR functional groups, orientations present, image count,
vendor sequence names). SeriesDescription and ProtocolName are weak hints: they
may only push a series *away* from FLAIR/T1 (towards LOCALIZER) and are
otherwise reported, never used to call a contrast. When the evidence does not
suffice the answer is ``UNKNOWN``.

Order of decisions (the first that applies wins):

1. not an image object (SR, SEG, RT, KO, PR, spectroscopy, no rows/columns)
   -> OTHER, ``is_image=False``;
2. not MR -> OTHER;
3. localizer (ImageType LOCALIZER, three orthogonal planes in a short series,
   very thick slices in a short series, fast 2D GRE single slices, or a
   localizer word in the description backed by structure) -> LOCALIZER;
4. several acquisitions under one SeriesInstanceUID (different orientations,
   TR or TE) -> each classified alone; agreeing answers are kept, disagreeing
   ones give UNKNOWN; orientation MIXED and flag ``mixed-acquisitions``;
5. phase / field maps, parametric maps (ADC, FA, T1/T2 maps, perfusion maps,
   subtractions) -> OTHER; trace-weighted diffusion -> DWI;
6. diffusion evidence (b-value > 0, DIFFUSION image type/contrast) -> DWI;
7. EPI without diffusion (BOLD, perfusion, EPI references), ASL, TOF, SWI,
   perfusion -> OTHER;
8. physics: inversion recovery (TI) first -- STIR (TI < 300 ms) OTHER, TI
   300-1400 ms with short TE T1 (MPRAGE, IR-SPGR, T1-FLAIR), TI >= 1400 ms with
   long TE (>= 60 ms) and long TR FLAIR; then spin echo and gradient echo by
   TR/TE/flip angle;
9. DERIVED\SECONDARY reformats (MPR, MIP, projections, other secondary
   images) keep their physics in ``weighting`` but get contrast OTHER, so that
   a reformat is never routed as an acquisition.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from statistics import median

from pydicom.dataset import Dataset

from dicom_node.route.classify.acquisitions import (
    _merge_normals,
    _normal_key,
    split_acquisitions,
)
from dicom_node.route.classify.evidence import _Evidence, _gather
from dicom_node.route.classify.info import SeriesInfo
from dicom_node.route.classify.physics import _physics
from dicom_node.route.classify.values import _fmt, _orientation_label, _str
from dicom_node.route.classify.vocabulary import (
    DESC_CONTRAST_HINTS,
    DIR_HINT,
    LOCALIZER_HINT,
    LOCALIZER_TOKENS,
    MR_SOP_CLASSES,
    NON_IMAGE_MODALITIES,
    NON_IMAGE_SOP_PREFIXES,
    NOT_STRUCTURAL_HINT,
    REFORMAT_TOKENS,
    SEQ_2D,
    SEQ_3D,
    SEQ_GRE,
    Contrast,
)

# --------------------------------------------------------------------------------------------
# the classifier


def _is_image(ev: _Evidence) -> tuple[bool, str]:
    for sop in ev.sop_classes:
        if any(sop.startswith(p) for p in NON_IMAGE_SOP_PREFIXES):
            return False, f"SOP class {sop} is not an image to segment (SR/SEG/RT/PR/spectroscopy/...)"
    if ev.modality in NON_IMAGE_MODALITIES:
        return False, f"Modality {ev.modality} is not an image series"
    if not ev.has_rows:
        return False, "no Rows/Columns: object carries no image"
    return True, ""


def _image_header(h: Dataset) -> bool:
    """One instance's header describes an image (not SR, Raw Data, ..., and has Rows)."""
    sop = _str(h.get("SOPClassUID"))
    return (not any(sop.startswith(p) for p in NON_IMAGE_SOP_PREFIXES)
            and _str(h.get("Modality")).upper() not in NON_IMAGE_MODALITIES and "Rows" in h)


def _med(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return median(vals) if vals else None


def classify_series(headers: Sequence[Dataset]) -> SeriesInfo:
    """Classify one series from its headers.

    Parameters
    ----------
    headers : sequence of pydicom.Dataset
        Headers of the instances of one series (pixel data not needed). Duplicate
        SOP Instance UIDs are counted once.

    Returns
    -------
    SeriesInfo
        Contrast and the other derived attributes with reasons. Never raises on odd
        or incomplete headers; answers ``UNKNOWN`` instead.
    """
    headers = [h for h in headers if h is not None]
    if not headers:
        return SeriesInfo(contrast=Contrast.UNKNOWN, reasons=["no readable headers"], flags=["corrupt"])
    images = [h for h in headers if _image_header(h)]
    try:
        if images and len(images) < len(headers):  # e.g. Raw Data beside an Enhanced MR image
            info = _classify(images, allow_split=True)
            info.reasons.append(f"classified from its {len(images)} image object(s); "
                                f"{len(headers) - len(images)} non-image object(s) ignored")
            info.flags.append("non-image-objects")
            return info
        return _classify(headers, allow_split=True)
    except Exception as exc:  # noqa: BLE001 - never let one odd header break the node
        return SeriesInfo(contrast=Contrast.UNKNOWN, reasons=[f"classification failed: {type(exc).__name__}: {exc}"],
                          series_uid=_str(headers[0].get("SeriesInstanceUID")),
                          modality=_str(headers[0].get("Modality")).upper(), n_instances=len(headers))


def _classify(headers: list[Dataset], allow_split: bool) -> SeriesInfo:
    ev = _gather(headers)
    info = SeriesInfo(modality=ev.modality, series_uid=ev.series_uid, manufacturer=ev.manufacturer,
                      n_instances=ev.n_instances, derived=ev.derived)
    reasons = info.reasons
    info.n_images = ev.n_images
    if ev.enhanced:
        info.flags.append("enhanced")
    if ev.mosaic:
        info.flags.append("mosaic")

    # geometry and parameters --------------------------------------------------------------
    normals = [f.normal for f in ev.frames if f.normal is not None]
    labels = sorted({_orientation_label(n) for n in normals} - {""})
    merged = {k for k in _merge_normals([_normal_key(n) for n in normals]) if k is not None}
    if len(merged) > 1:
        info.orientation = "MIXED"
    elif normals:
        info.orientation = _orientation_label(normals[0])
    info.repetition_time = _med(f.tr for f in ev.frames)
    info.echo_time = _med(f.te for f in ev.frames)
    info.inversion_time = _med(f.ti for f in ev.frames)
    info.slice_thickness = _med(f.thickness for f in ev.frames)
    bs = [f.b for f in ev.frames if f.b is not None]
    info.b_value_max = max(bs) if bs else None
    info.dimensionality = _dimensionality(ev, info, reasons)

    # 1. image? -----------------------------------------------------------------------------
    ok, why = _is_image(ev)
    info.is_image = ok
    if not ok:
        info.contrast = info.weighting = Contrast.OTHER
        info.n_images = 0
        reasons.append(why)
        return info
    # 2. MR? --------------------------------------------------------------------------------
    is_mr = ev.modality == "MR" or (not ev.modality and bool(ev.sop_classes & MR_SOP_CLASSES))
    if not is_mr:
        info.contrast = info.weighting = Contrast.OTHER
        reasons.append(f"Modality {ev.modality or '(none)'} is not MR")
        return info
    if ev.modality != "MR":
        info.modality = "MR"
    non_mr_sop = sorted(ev.sop_classes - MR_SOP_CLASSES)
    if non_mr_sop:
        info.contrast = info.weighting = Contrast.OTHER
        reasons.append(f"SOP class {non_mr_sop[0]} is not an MR image storage class (e.g. secondary capture)")
        return info
    tokens = set(ev.image_type)
    desc = " | ".join(ev.descriptions)

    # 3. localizer ----------------------------------------------------------------------------
    loc = _localizer(ev, info, labels, tokens, desc)
    if loc:
        info.contrast = info.weighting = Contrast.LOCALIZER
        reasons.extend(loc)
        return info

    # 4. several acquisitions under one UID ------------------------------------------------
    if allow_split and not ev.enhanced and len(headers) > 1:
        groups = split_acquisitions(headers)
        if len(groups) > 1:
            return _classify_mixed(info, groups)

    # 5-8. physics ---------------------------------------------------------------------------
    weighting, physics = _physics(ev, info, tokens)
    info.weighting = weighting
    reasons.extend(physics)
    contrast = weighting
    # 9. derived objects ---------------------------------------------------------------------
    if contrast in ("FLAIR", "T1", "T2", "PD") and ev.derived:
        reformat = sorted(tokens & REFORMAT_TOKENS)
        if ev.secondary or reformat:
            contrast = Contrast.OTHER
            info.flags.append("reformat")
            kind = "DERIVED\\SECONDARY" if ev.secondary else "DERIVED"
            reasons.append(
                f"{kind} image"
                f"{' (' + ', '.join(reformat) + ')' if reformat else ''}: a reformat/secondary capture of a "
                f"{weighting}-weighted acquisition, not routed as an acquisition (weighting={weighting})")
        else:
            reasons.append("ImageType DERIVED\\PRIMARY without map/reformat values: treated as the acquisition")
    neg = NOT_STRUCTURAL_HINT.search(desc) if contrast in ("FLAIR", "T1") else None
    if neg:
        reasons.append(f"description names '{neg.group(0)}' (angiography/perfusion/field map/reformat...): "
                       f"{contrast} physics not trusted, OTHER")
        info.flags.append("description-veto")
        contrast = Contrast.OTHER
    if contrast == "FLAIR" and DIR_HINT.search(desc):
        contrast = Contrast.UNKNOWN
        reasons.append(f"description '{desc}' names a double inversion recovery: FLAIR timing is not enough, UNKNOWN")
    if info.orientation == "MIXED" and "mixed-acquisitions" not in info.flags:
        info.flags.append("mixed-acquisitions")
        info.n_acquisitions = max(info.n_acquisitions, len(merged))
        reasons.append(f"{len(merged)} slice orientations in one series: must not be stacked")
    info.contrast = contrast
    _description_check(info, desc)
    return info


def _dimensionality(ev: _Evidence, info: SeriesInfo, reasons: list[str]) -> str:
    if ev.acq_type in ("2D", "3D"):
        return ev.acq_type
    names = " ".join(ev.seq_names)
    if SEQ_3D.search(names):
        reasons.append("3D from sequence name (MRAcquisitionType absent)")
        return "3D"
    if SEQ_2D.search(names):
        return "2D"
    if info.slice_thickness is not None and info.slice_thickness <= 1.5 and info.n_images >= 60:
        reasons.append("3D inferred from thin slices and many images (MRAcquisitionType absent)")
        return "3D"
    return "2D"


def _localizer(ev: _Evidence, info: SeriesInfo, labels: list[str], tokens: set[str],
               desc: str) -> list[str]:
    n = info.n_images
    out: list[str] = []
    if tokens & LOCALIZER_TOKENS:
        return [f"ImageType contains {sorted(tokens & LOCALIZER_TOKENS)}"]
    if {"AX", "SAG", "COR"} <= set(labels) and n <= 60:
        return [f"three orthogonal planes ({', '.join(labels)}) in {n} images: 3-plane localizer"]
    names = " ".join(ev.seq_names)
    hint = LOCALIZER_HINT.search(desc) or LOCALIZER_HINT.search(names)
    thick = info.slice_thickness
    if thick is not None and thick >= 8.0 and n <= 20:
        out.append(f"slice thickness {_fmt(thick)} mm with only {n} image(s): localizer")
        return out
    gre = "GR" in ev.scanning_sequence or "GRADIENT" in ev.echo_pulse or bool(SEQ_GRE.search(names))
    epi = "EP" in ev.scanning_sequence or ev.epi_flag
    tr = info.repetition_time
    if (gre and not epi and info.dimensionality == "2D" and tr is not None and tr < 15 and n <= 15
            and not ev.mosaic):
        return [f"2D fast gradient echo (TR {_fmt(tr)} ms) with {n} image(s): localizer"]
    if hint:
        structure = []
        if n <= 30:
            structure.append(f"{n} image(s)")
        if len(labels) > 1:
            structure.append("several planes")
        if "MPR" in tokens and ev.derived:
            structure.append("derived MPR")
        if thick is not None and thick >= 6:
            structure.append(f"{_fmt(thick)} mm slices")
        if gre and tr is not None and tr < 100 and info.dimensionality == "2D":
            structure.append(f"fast 2D GRE TR {_fmt(tr)}")
        prepared = ("IR" in ev.scanning_sequence or ev.ir_flag or "MP" in ev.sequence_variant
                    or info.inversion_time)
        if gre and tr is not None and tr < 10 and not prepared:
            structure.append(f"very fast unprepared GRE (TR {_fmt(tr)} ms)")
        if structure and n <= 60:
            return [f"localizer hint '{hint.group(0)}' in description/sequence name, backed by structure: "
                    + ", ".join(structure)]
    return []


def _classify_mixed(info: SeriesInfo, groups: list[list[Dataset]]) -> SeriesInfo:
    subs = [_classify(g, allow_split=False) for g in groups]
    contrasts = {s.contrast for s in subs}
    info.n_acquisitions = len(groups)
    info.flags.append("mixed-acquisitions")
    info.orientation = "MIXED" if len({s.orientation for s in subs}) > 1 else (subs[0].orientation or "MIXED")
    detail = "; ".join(f"#{i + 1}: {len(g)} inst, {s.orientation or '?'}, TR {_fmt(s.repetition_time)}/TE "
                       f"{_fmt(s.echo_time)} -> {s.contrast}" for i, (g, s)
                       in enumerate(zip(groups, subs, strict=False)))
    info.reasons.append(f"{len(groups)} acquisitions share this SeriesInstanceUID ({detail}); "
                        "they must not be stacked into one volume")
    if len(contrasts) == 1:
        info.contrast = subs[0].contrast
        info.weighting = subs[0].weighting
        info.reasons.append(f"all acquisitions agree: {info.contrast}")
    else:
        info.contrast = Contrast.UNKNOWN
        info.weighting = Contrast.UNKNOWN
        info.reasons.append(f"acquisitions disagree ({', '.join(sorted(contrasts))}): UNKNOWN")
    info.derived = any(s.derived for s in subs)
    info.dimensionality = subs[0].dimensionality
    return info


def _description_check(info: SeriesInfo, desc: str) -> None:
    """Report (never use) what the free-text description suggests."""
    if not desc:
        info.reasons.append("no SeriesDescription/ProtocolName (not needed)")
        return
    hinted = [name for name, rx in DESC_CONTRAST_HINTS if rx.search(desc)]
    if not hinted:
        return
    h = hinted[0]
    if info.contrast in ("UNKNOWN", "OTHER") or h == info.contrast or (h == "T2" and info.contrast == "FLAIR"):
        info.reasons.append(f"description '{desc}' suggests {h} (weak hint, not used)")
        return
    info.flags.append("description-conflict")
    info.reasons.append(f"description '{desc}' suggests {h} but the physics say {info.contrast}: "
                        "physics kept")
