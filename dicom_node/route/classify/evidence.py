"""Gather the classifier's evidence from the headers of one series, classic or Enhanced MR."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.route.classify.values import _first_item, _normal, _num, _str, _tokens
from dicom_node.route.classify.vendor import (
    _ge_bvalue,
    _philips_bvalue,
    _seq_names,
    _siemens_csa_bvalue,
)

# --------------------------------------------------------------------------------------------
# evidence gathering


@dataclass
class _Frame:
    """Per-image facts (one classic instance or one frame of a multi-frame object)."""

    normal: tuple[float, float, float] | None
    tr: float | None
    te: float | None
    ti: float | None
    b: float | None
    frame_type: list[str]
    complex_component: str
    acq_contrast: str
    thickness: float | None


@dataclass
class _Evidence:
    modality: str = ""
    sop_classes: set[str] = field(default_factory=set)
    manufacturer: str = ""
    image_type: list[str] = field(default_factory=list)  # union, upper
    image_type_first: list[str] = field(default_factory=list)
    scanning_sequence: set[str] = field(default_factory=set)
    sequence_variant: set[str] = field(default_factory=set)
    scan_options: set[str] = field(default_factory=set)
    acq_type: str = ""
    seq_names: list[str] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)
    echo_pulse: set[str] = field(default_factory=set)
    epi_flag: bool = False
    ir_flag: bool | None = None  # MRModifierSequence InversionRecovery
    acq_contrasts: set[str] = field(default_factory=set)
    flip: float | None = None
    frames: list[_Frame] = field(default_factory=list)
    n_instances: int = 0
    has_rows: bool = False
    enhanced: bool = False
    mosaic: bool = False
    diffusion_seq: bool = False
    derived: bool = False
    secondary: bool = False
    series_uid: str = ""
    n_images: int = 0

def _gather(headers: Sequence[Dataset]) -> _Evidence:
    ev = _Evidence()
    seen_sop: set[str] = set()
    for ds in headers:
        sop_uid = _str(ds.get("SOPInstanceUID"))
        if sop_uid and sop_uid in seen_sop:
            continue
        if sop_uid:
            seen_sop.add(sop_uid)
        ev.n_instances += 1
        if not ev.series_uid:
            ev.series_uid = _str(ds.get("SeriesInstanceUID"))
        mod = _str(ds.get("Modality")).upper()
        if mod and not ev.modality:
            ev.modality = mod
        sop = _str(ds.get("SOPClassUID"))
        if sop:
            ev.sop_classes.add(sop)
        if not ev.manufacturer:
            ev.manufacturer = _str(ds.get("Manufacturer"))
        if ds.get("Rows") and ds.get("Columns"):
            ev.has_rows = True
        it = _tokens(ds.get("ImageType"))
        if it and not ev.image_type_first:
            ev.image_type_first = it
        for t in it:
            if t not in ev.image_type:
                ev.image_type.append(t)
        if it[:1] == ["DERIVED"]:
            ev.derived = True
        if len(it) > 1 and it[1] == "SECONDARY":
            ev.secondary = True
        if "MOSAIC" in it:
            ev.mosaic = True
        ev.scanning_sequence.update(_tokens(ds.get("ScanningSequence")))
        ev.sequence_variant.update(_tokens(ds.get("SequenceVariant")))
        ev.scan_options.update(_tokens(ds.get("ScanOptions")))
        at = _str(ds.get("MRAcquisitionType")).upper()
        if at and not ev.acq_type:
            ev.acq_type = at
        for n in _seq_names(ds):
            if n not in ev.seq_names:
                ev.seq_names.append(n)
        for kw in ("SeriesDescription", "ProtocolName"):
            s = _str(ds.get(kw))
            if s and s not in ev.descriptions:
                ev.descriptions.append(s)
        ep = _str(ds.get("EchoPulseSequence")).upper()
        if ep:
            ev.echo_pulse.add(ep)
        if _str(ds.get("EchoPlanarPulseSequence")).upper() == "YES":
            ev.epi_flag = True
        ac = _str(ds.get("AcquisitionContrast")).upper()
        if ac:
            ev.acq_contrasts.add(ac)
        if ev.flip is None:
            ev.flip = _num(ds.get("FlipAngle"))

        sfg = _first_item(ds, "SharedFunctionalGroupsSequence")
        pffg = ds.get("PerFrameFunctionalGroupsSequence")
        if sfg is not None or pffg:
            ev.enhanced = True
            _gather_enhanced(ds, sfg, pffg, ev)
            continue
        # classic single-frame instance (or multi-frame without functional groups)
        ti = _num(ds.get("InversionTime"))
        b = _num(ds.get("DiffusionBValue"))
        for alt in (_ge_bvalue(ds), _siemens_csa_bvalue(ds), _philips_bvalue(ds)):
            if alt is not None and (b is None or alt > b):
                b = alt
        try:
            nframes = int(_num(ds.get("NumberOfFrames")) or 1)
        except (TypeError, ValueError):
            nframes = 1
        fr = _Frame(
            normal=_normal(ds.get("ImageOrientationPatient")),
            tr=_num(ds.get("RepetitionTime")),
            te=_num(ds.get("EchoTime")),
            ti=ti if ti and ti > 0 else None,
            b=b,
            frame_type=it,
            complex_component="",
            acq_contrast=ac,
            thickness=_num(ds.get("SliceThickness")),
        )
        ev.frames.append(fr)
        ev.n_images += 1 if ev.mosaic and "MOSAIC" in it else max(1, nframes)
    return ev


def _gather_enhanced(ds: Dataset, sfg: Dataset | None, pffg: Any, ev: _Evidence) -> None:
    """Collect facts from the Enhanced-MR functional groups of one object."""

    def from_groups(item: Dataset | None, kw: str) -> Dataset | None:
        return _first_item(item, kw) if item is not None else None

    frames = list(pffg) if pffg else [None]
    # Philips keeps a copy of the classic header per frame in (2005,140F).
    for holder in filter(None, [sfg] + frames[:1]):
        for tag in ((0x2005, 0x140E), (0x2005, 0x140F)):
            if tag in holder:
                try:
                    inner = holder[tag].value[0]
                except (TypeError, IndexError, AttributeError):
                    continue
                if isinstance(inner, Dataset):
                    ev.scanning_sequence.update(_tokens(inner.get("ScanningSequence")))
                    ev.sequence_variant.update(_tokens(inner.get("SequenceVariant")))
                    ev.scan_options.update(_tokens(inner.get("ScanOptions")))
                    for n in _seq_names(inner):
                        if n not in ev.seq_names:
                            ev.seq_names.append(n)
    # Legacy Converted Enhanced MR keeps the classic attributes in "unassigned" groups
    legacy = [x for x in (from_groups(sfg, "UnassignedSharedConvertedAttributesSequence"),
                          from_groups(frames[0], "UnassignedPerFrameConvertedAttributesSequence"))
              if x is not None]
    for holder in legacy:
        ev.scanning_sequence.update(_tokens(holder.get("ScanningSequence")))
        ev.sequence_variant.update(_tokens(holder.get("SequenceVariant")))
        ev.scan_options.update(_tokens(holder.get("ScanOptions")))
        for n in _seq_names(holder):
            if n not in ev.seq_names:
                ev.seq_names.append(n)
        if not ev.acq_type:
            ev.acq_type = _str(holder.get("MRAcquisitionType")).upper()

    def top(kw: str) -> float | None:
        v = _num(ds.get(kw))
        for holder in legacy:
            if v is None:
                v = _num(holder.get(kw))
        return v

    top_ti = top("InversionTime")
    top_tr = top("RepetitionTime")
    top_te = top("EchoTime")
    top_b = top("DiffusionBValue")
    step = max(1, len(frames) // 400)  # sample very long objects, headers only
    for i, fg in enumerate(frames):
        if i % step and i != len(frames) - 1:
            continue
        vals: dict[str, Any] = {}
        for holder in (sfg, fg):
            if holder is None:
                continue
            timing = from_groups(holder, "MRTimingAndRelatedParametersSequence")
            if timing is not None:
                if _num(timing.get("RepetitionTime")) is not None:
                    vals["tr"] = _num(timing.get("RepetitionTime"))
                if _num(timing.get("FlipAngle")) is not None and ev.flip is None:
                    ev.flip = _num(timing.get("FlipAngle"))
            mod = from_groups(holder, "MRModifierSequence")
            if mod is not None:
                irv = _str(mod.get("InversionRecovery")).upper()
                if irv == "YES":
                    ev.ir_flag = True
                elif irv == "NO" and ev.ir_flag is None:
                    ev.ir_flag = False
                ti = _num(mod.get("InversionTimes"))
                if ti:
                    vals["ti"] = ti
            echo = from_groups(holder, "MREchoSequence")
            if echo is not None and _num(echo.get("EffectiveEchoTime")) is not None:
                vals["te"] = _num(echo.get("EffectiveEchoTime"))
            diff = from_groups(holder, "MRDiffusionSequence")
            if diff is not None:
                ev.diffusion_seq = True
                b = _num(diff.get("DiffusionBValue"))
                if b is not None:
                    vals["b"] = b
            ftype = from_groups(holder, "MRImageFrameTypeSequence")
            if ftype is not None:
                vals["ft"] = _tokens(ftype.get("FrameType"))
                vals["cic"] = _str(ftype.get("ComplexImageComponent")).upper()
                ac = _str(ftype.get("AcquisitionContrast")).upper()
                if ac:
                    vals["ac"] = ac
                    ev.acq_contrasts.add(ac)
                ep = _str(ftype.get("EchoPulseSequence")).upper()
                if ep:
                    ev.echo_pulse.add(ep)
                for n in _seq_names(ftype):
                    if n not in ev.seq_names:
                        ev.seq_names.append(n)
            orient = from_groups(holder, "PlaneOrientationSequence")
            if orient is not None:
                vals["normal"] = _normal(orient.get("ImageOrientationPatient"))
            meas = from_groups(holder, "PixelMeasuresSequence")
            if meas is not None and _num(meas.get("SliceThickness")) is not None:
                vals["thk"] = _num(meas.get("SliceThickness"))
        ft = vals.get("ft") or []
        if ft[:1] == ["DERIVED"]:
            ev.derived = True
        for t in ft:
            if t not in ev.image_type:
                ev.image_type.append(t)
        fr = _Frame(
            normal=vals.get("normal"),
            tr=vals.get("tr", top_tr),
            te=vals.get("te", top_te),
            ti=vals.get("ti", top_ti if top_ti else None),
            b=vals.get("b", top_b),
            frame_type=ft,
            complex_component=vals.get("cic", ""),
            acq_contrast=vals.get("ac", ""),
            thickness=vals.get("thk"),
        )
        ev.frames.append(fr)
    try:
        ev.n_images += int(_num(ds.get("NumberOfFrames")) or len(frames))
    except (TypeError, ValueError):
        ev.n_images += len(frames)
