"""Vendor-agnostic MR series classification from DICOM headers.

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
9. DERIVED\\SECONDARY reformats (MPR, MIP, projections, other secondary
   images) keep their physics in ``weighting`` but get contrast OTHER, so that
   a reformat is never routed as an acquisition.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any

from pydicom.dataset import Dataset

CONTRASTS = ("FLAIR", "T1", "T2", "PD", "DWI", "LOCALIZER", "OTHER", "UNKNOWN")

MR_IMAGE_SOP = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_SOP = "1.2.840.10008.5.1.4.1.1.4.1"
MR_SPECTROSCOPY_SOP = "1.2.840.10008.5.1.4.1.1.4.2"
ENHANCED_MR_COLOR_SOP = "1.2.840.10008.5.1.4.1.1.4.3"
LEGACY_ENHANCED_MR_SOP = "1.2.840.10008.5.1.4.1.1.4.4"
MR_SOP_CLASSES = {MR_IMAGE_SOP, ENHANCED_MR_SOP, ENHANCED_MR_COLOR_SOP, LEGACY_ENHANCED_MR_SOP}

#: SOP class UID prefixes that never hold images to segment.
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, registration, SEG, fiducials, surface
    "1.2.840.10008.5.1.4.1.1.481.",  # radiotherapy objects
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated documents
    "1.2.840.10008.5.1.4.1.1.4.2",  # MR spectroscopy
    "1.2.840.10008.5.1.4.1.1.68.",  # surfaces
    "1.2.840.10008.5.1.4.1.1.67",  # real world value mapping
)
NON_IMAGE_MODALITIES = {"SR", "SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "KO", "PR",
                        "REG", "DOC", "FID", "PLAN", "RWV", "MS", "AU", "ECG"}

# ImageType / FrameType values ------------------------------------------------------------
PARAMETRIC_MAP_TOKENS = {
    "ADC", "EADC", "FA", "COLFA", "RGB", "EXP", "CALC_BVALUE", "TENSOR", "MD", "RD", "AD",
    "T1MAP", "T2MAP", "T2STARMAP", "T2_STAR_MAP", "R1", "R2", "R2STAR", "MAP", "PARAMETER",
    "CBF", "CBV", "MTT", "TTP", "TMAX", "RCBF", "RCBV", "PBP", "GBP", "BAT",
    "SUBTRACTION", "SUB", "DIFFERENCE", "MOCO", "MOSAIC_MAP", "QUANT", "T1_MAP", "T2_MAP",
    "FAT_FRACTION", "FF", "WATER", "FAT", "IN_PHASE", "OUT_PHASE", "OPP", "INP",
    "MYELIN", "SYNTHETIC", "QSM",
}
TRACE_TOKENS = {"TRACEW", "TRACE", "ISODWI", "ISOTROPIC", "CALC_BVALUE_TRACE"}
REFORMAT_TOKENS = {"MPR", "MIP", "MINIP", "MNIP", "PROJECTION", "PROJECTION IMAGE", "REFORMATTED",
                   "CSA MPR", "CSAPARALLEL", "CSA RESAMPLED", "VOLUME_RENDER", "CURVED", "MPR THICK",
                   "RESAMPLED", "CPR", "3D"}
PHASE_TOKENS = {"P", "PHASE", "PHASE MAP", "FIELD_MAP", "FIELDMAP", "B0", "B0MAP", "B0_MAP",
                "B1", "B1MAP", "P_FFE", "P_SE", "P_IR", "PHASE_CONTRAST", "VELOCITY", "FLOW",
                "I", "IMAGINARY"}
LOCALIZER_TOKENS = {"LOCALIZER", "SCOUT", "SURVEY", "LOCALISER"}
OTHER_KIND_TOKENS = {"ASL", "PERFUSION", "SWI", "TOF", "ANGIO", "CINE", "SPECTROSCOPY", "CSI",
                     "FMRI", "BOLD", "MRA", "MRCP"}

LOCALIZER_HINT = re.compile(
    r"(scout|locali[sz]er|locator|\bloc\b|_loc\b|\bloc_|3[\s_-]?plane|tri[\s_-]?pilot|\bpilot\b"
    r"|survey|aahead|aascout|autoalign|smartexam|\bplan(ning)?\b|3[\s_-]?axis)",
    re.IGNORECASE,
)
DIR_HINT = re.compile(r"((?<![a-z0-9])dir(?![a-z0-9])|double[\s_-]?i(nv|r))", re.IGNORECASE)
CALIBRATION_HINT = re.compile(r"(calibration|asset[\s_-]?cal|pure[\s_-]?cal|coil[\s_-]?survey|"
                              r"prescan|refscan|sense[\s_-]?ref)", re.IGNORECASE)
DESC_CONTRAST_HINTS = (
    ("FLAIR", re.compile(r"flair|dark[\s_-]?fluid|tirm", re.IGNORECASE)),
    ("DWI", re.compile(r"\bdwi|diff|dti|trace|\badc\b", re.IGNORECASE)),
    ("T1", re.compile(r"t1|mprage|mp[\s_-]?rage|bravo|spgr|tfe|vibe", re.IGNORECASE)),
    ("T2", re.compile(r"t2", re.IGNORECASE)),
    ("PD", re.compile(r"\bpd\b|proton", re.IGNORECASE)),
)

# Vendor sequence names (Siemens SequenceName / PulseSequenceName / SDI 0021,xx77;
# GE (0019,109C)/(0019,109E); Philips (2001,1020); Canon/Toshiba/Hitachi SequenceName).
SEQ_EPI = re.compile(r"(^\*?ep|epi|epse|epfid|\bep_|feepi|seepi|dwise|dwiepi|re_b|^\*?re\d)",
                     re.IGNORECASE)
SEQ_DIFF = re.compile(r"(^\*?ep_b|_b\d{2,}|^\*?re_b|dwi|diff|dti)", re.IGNORECASE)
SEQ_T1_PREP_GRE = re.compile(r"(tfl3d|mp-?rage|mprage|bravo|t1tfe|\btfe\b|3d_?tfe|ir-?fspgr|"
                             r"irfspgr|fspgr|mp2rage)", re.IGNORECASE)
SEQ_IR = re.compile(r"(^\*?tir|tir\d|spcir|\bir\b|_ir|ir_|fse-?ir|irfse|tirm|flair|stir|tse_?ir|"
                    r"^ir|\bir\d|fsir)", re.IGNORECASE)
SEQ_FLAIR = re.compile(r"flair", re.IGNORECASE)
SEQ_STIR = re.compile(r"stir", re.IGNORECASE)
SEQ_GRE = re.compile(r"(^\*?fl\d|^\*?fl[23]d|tfl|fgre|gre|spgr|ffe|\bfe\b|^fe_|fe3d|fe2d|swi|"
                     r"^\*?tfi|fiesta|vibe|lava|bravo|^\*?fl(?!air))", re.IGNORECASE)
SEQ_SE = re.compile(r"(^\*?tse|^\*?se\d|^\*?se\b|fse|tse|^\*?spc|cube|haste|^\*?h2d|ssfse|"
                    r"\bse\b|^se_|sef|frfse|memp|mse)", re.IGNORECASE)
SEQ_SWI_TOF = re.compile(r"(swi|tof|fl3d1r|_r_t|angio|pc3d|\bpc\b|venc|sinvt)", re.IGNORECASE)
SEQ_SSFP = re.compile(r"(^\*?tfi|^\*?ci3d|trufi|truefisp|fiesta|ciss|b-?ffe|bssfp|\bssfp|\bdess|psif|true_fisp)",
                      re.IGNORECASE)
#: descriptions that may only move a series AWAY from FLAIR/T1 (never towards a contrast)
NOT_STRUCTURAL_HINT = re.compile(
    r"(?<![a-z0-9])(tof|angio|mra|mrv|venogra\w*|swi|swan|susc\w*|ciss|fiesta|trufi|cine|perf\w*|asl|pcasl|"
    r"bold|fmri|resting|rest|spectro\w*|csi|mrs|dixon|phase|field[\s_-]?map|b0|b1map|ute|zte|"
    r"mip|mpr|sub|subtraction|map)(?![a-z0-9])", re.IGNORECASE)
SEQ_3D = re.compile(r"3d", re.IGNORECASE)
SEQ_2D = re.compile(r"2d", re.IGNORECASE)


@dataclass
class SeriesInfo:
    """What the classifier derived for one series (or one acquisition of it).

    Attributes
    ----------
    contrast : str
        One of ``CONTRASTS``. Only original acquisitions can be FLAIR or T1.
    dimensionality : str
        ``"2D"`` or ``"3D"``.
    derived : bool
        ImageType/FrameType value 1 is DERIVED on any instance.
    orientation : str
        ``AX``, ``SAG``, ``COR``, ``OBL``, ``MIXED`` (several orientations) or ``""``
        when no geometry is present.
    n_images : int
        Number of 2D images (frames of multi-frame objects counted; a mosaic counts
        as one image).
    reasons : list of str
        Human-readable evidence, in decision order.
    modality : str
        Modality (0008,0060), ``""`` when absent.
    is_image : bool
        False for SR, SEG, RT objects, spectroscopy, presentation states, unreadable.
    weighting : str
        Contrast from the acquisition physics before the derived/reformat override
        (e.g. a T1 MPR reformat has ``weighting="T1"`` and ``contrast="OTHER"``).
    n_instances : int
        Number of distinct SOP instances.
    n_acquisitions : int
        Number of acquisitions found under the SeriesInstanceUID (> 1: mixed).
    flags : list of str
        Machine-readable notes: ``mixed-acquisitions``, ``mosaic``, ``enhanced``,
        ``reformat``, ``parametric-map``, ``phase``, ``description-conflict``,
        ``no-physics``, ``corrupt``.
    """

    contrast: str = "UNKNOWN"
    dimensionality: str = "2D"
    derived: bool = False
    orientation: str = ""
    n_images: int = 0
    reasons: list[str] = field(default_factory=list)
    modality: str = ""
    is_image: bool = False
    weighting: str = "UNKNOWN"
    n_instances: int = 0
    n_acquisitions: int = 1
    flags: list[str] = field(default_factory=list)
    series_uid: str = ""
    manufacturer: str = ""
    repetition_time: float | None = None
    echo_time: float | None = None
    inversion_time: float | None = None
    slice_thickness: float | None = None
    b_value_max: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return asdict(self)

    def get(self, name: str, default: Any = None) -> Any:
        """Attribute access by name (used by routing conditions)."""
        return getattr(self, name, default)


# --------------------------------------------------------------------------------------------
# small helpers


def _num(value: Any) -> float | None:
    """First numeric value of a DICOM value, or None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes))):
        for v in value:
            n = _num(v)
            if n is not None:
                return n
        return None
    if isinstance(value, bytes):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        try:
            f = float(str(value).strip().split("\\")[0])
        except (TypeError, ValueError):
            return None
    if math.isnan(f) or math.isinf(f):
        return None
    return f


def _tokens(value: Any) -> list[str]:
    """Upper-case string tokens of a (possibly multi-valued) string attribute."""
    if value is None:
        return []
    if isinstance(value, str):
        items = value.split("\\")
    elif isinstance(value, bytes):
        return []
    else:
        try:
            items = [str(v) for v in value]
        except TypeError:
            items = [str(value)]
    return [t.strip().upper() for t in items if t is not None and str(t).strip()]


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    if seq is None:
        return None
    try:
        return seq[0] if len(seq) else None
    except (TypeError, IndexError):
        return None


def _private_value(ds: Dataset, group: int, creator: str, offset: int) -> Any:
    """Value of a private element by creator name (direct tag lookups, no dataset slicing)."""
    for block in range(0x10, 0x100):
        ctag = (group << 16) | block
        if ctag not in ds:
            if block > 0x20:
                break
            continue
        try:
            value = ds[ctag].value
        except Exception:  # noqa: BLE001 - odd private creator encodings
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1", "replace")
        if str(value).strip() == creator:
            tag = (group << 16) | (block << 8) | offset
            if tag in ds:
                try:
                    return ds[tag].value
                except Exception:  # noqa: BLE001
                    return None
            return None
    return None


def _str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        try:
            return value.decode("latin-1").strip("\x00 ").strip()
        except Exception:  # pragma: no cover - defensive
            return ""
    return str(value).strip()


def _fmt(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


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


def _normal(iop: Any) -> tuple[float, float, float] | None:
    try:
        v = [float(x) for x in iop]
    except (TypeError, ValueError):
        return None
    if len(v) != 6:
        return None
    r, c = v[:3], v[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    norm = math.sqrt(sum(x * x for x in n))
    if norm < 1e-6:
        return None
    n = tuple(x / norm for x in n)
    # sign-normalise so that parallel planes compare equal
    k = max(range(3), key=lambda i: abs(n[i]))
    if n[k] < 0:
        n = tuple(-x for x in n)
    return n  # type: ignore[return-value]


def _ge_bvalue(ds: Dataset) -> float | None:
    raw = ds.get((0x0043, 0x1039))
    if raw is None:
        return None
    v = raw.value
    if isinstance(v, bytes):
        try:
            v = v.decode("latin-1").split("\\")
        except Exception:  # pragma: no cover
            return None
    b = _num(v)
    if b is None:
        return None
    if b >= 1e9:  # GE sets a 10^9 flag on some software versions
        b = b % 1e9
    return b if 0 <= b < 1e5 else None


def _siemens_csa_bvalue(ds: Dataset) -> float | None:
    v = _private_value(ds, 0x0019, "SIEMENS MR HEADER", 0x0C)
    if v is None and (0x0019, 0x100C) in ds:
        v = ds[(0x0019, 0x100C)].value
    if isinstance(v, bytes):
        v = _str(v)
    return _num(v)


def _philips_bvalue(ds: Dataset) -> float | None:
    v = ds.get((0x2001, 0x1003))
    if v is None:
        return None
    val = v.value
    if isinstance(val, bytes) and len(val) == 4:
        import struct

        return struct.unpack("<f", val)[0]
    return _num(val)


def _seq_names(ds: Dataset) -> list[str]:
    names = []
    for kw in ("SequenceName", "PulseSequenceName"):
        s = _str(ds.get(kw))
        if s:
            names.append(s)
    for group, creator, off in (
        (0x0019, "GEMS_ACQU_01", 0x9C),
        (0x0019, "GEMS_ACQU_01", 0x9E),
        (0x2001, "Philips Imaging DD 001", 0x20),
        (0x0021, "SIEMENS MR SDI 02", 0x77),
    ):
        s = _str(_private_value(ds, group, creator, off))
        if s:
            names.append(s)
    # private tags whose creator element was stripped (some anonymisers); never read them when
    # another vendor's creator owns the block
    for tag, creator in (((0x0019, 0x109C), "GEMS_ACQU_01"), ((0x0019, 0x109E), "GEMS_ACQU_01"),
                         ((0x2001, 0x1020), "Philips Imaging DD 001")):
        if tag in ds:
            owner = _str(ds.get((tag[0], 0x0010)).value) if (tag[0], 0x0010) in ds else ""
            if owner and owner != creator:
                continue
            s = _str(ds[tag].value)
            if s and s not in names:
                names.append(s)
    return [n for n in names if n.lower() not in ("dicom2nifti", "none", "unknown")]


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


# --------------------------------------------------------------------------------------------
# geometry


def _orientation_label(n: tuple[float, float, float] | None) -> str:
    if n is None:
        return ""
    ax = [abs(n[0]), abs(n[1]), abs(n[2])]
    k = max(range(3), key=lambda i: ax[i])
    if ax[k] < 0.8:
        return "OBL"
    return ("SAG", "COR", "AX")[k]


def _cluster(values: list[float], rel: float = 0.15, abs_tol: float = 0.5) -> list[float]:
    """Cluster numbers that differ by less than ``rel`` (relative) or ``abs_tol``."""
    out: list[float] = []
    for v in sorted(values):
        if out and (abs(v - out[-1]) <= abs_tol or abs(v - out[-1]) <= rel * max(abs(out[-1]), 1e-9)):
            continue
        out.append(v)
    return out


def _bucket(v: float | None, centers: list[float], rel: float = 0.15, abs_tol: float = 0.5) -> int:
    if v is None:
        return -1
    for i, c in enumerate(centers):
        if abs(v - c) <= abs_tol or abs(v - c) <= rel * max(abs(c), 1e-9):
            return i
    return -1


def _normal_key(n: tuple[float, float, float] | None) -> tuple[int, int, int] | None:
    if n is None:
        return None
    # ~6 degree bins
    return (round(n[0] * 10), round(n[1] * 10), round(n[2] * 10))


def _acquisition_key(ds: Dataset) -> tuple[Any, ...]:
    """Key that separates acquisitions sharing one SeriesInstanceUID."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        sfg = _first_item(ds, "SharedFunctionalGroupsSequence")
        po = _first_item(sfg, "PlaneOrientationSequence") if sfg is not None else None
        if po is None:
            pf = _first_item(ds, "PerFrameFunctionalGroupsSequence")
            po = _first_item(pf, "PlaneOrientationSequence") if pf is not None else None
        iop = po.get("ImageOrientationPatient") if po is not None else None
    return (_normal_key(_normal(iop)),)


def split_acquisitions(headers: Sequence[Dataset]) -> list[list[Dataset]]:
    """Split the headers of one SeriesInstanceUID into acquisitions.

    Instances are separated by slice orientation (planes more than ~6 degrees
    apart), then by clearly different TR or TE (more than 15 %). A series that is
    one acquisition comes back as a single group. Multi-echo and multi-b-value
    data of one orientation stay together only when TR/TE agree; they are not
    meant to be stacked into one volume either.

    Parameters
    ----------
    headers : sequence of pydicom.Dataset

    Returns
    -------
    list of list of pydicom.Dataset
        Groups in first-seen order.
    """
    headers = list(headers)
    if len(headers) <= 1:
        return [headers]
    merged = _merge_normals([_acquisition_key(ds)[0] for ds in headers])
    known = [k for k in merged if k is not None]
    if known and len(known) < len(merged):  # an instance without geometry joins the main stack
        main = max(set(known), key=known.count)
        merged = [main if k is None else k for k in merged]
    trs = _cluster([v for v in (_num(ds.get("RepetitionTime")) for ds in headers) if v is not None],
                   rel=0.15, abs_tol=1.0)
    tes = _cluster([v for v in (_num(ds.get("EchoTime")) for ds in headers) if v is not None],
                   rel=0.15, abs_tol=1.0)
    groups: dict[tuple[Any, ...], list[Dataset]] = {}
    for ds, nk in zip(headers, merged):
        key = (nk, _bucket(_num(ds.get("RepetitionTime")), trs, abs_tol=1.0),
               _bucket(_num(ds.get("EchoTime")), tes, abs_tol=1.0))
        groups.setdefault(key, []).append(ds)
    return list(groups.values())


def _merge_normals(keys: list[tuple[int, int, int] | None]) -> list[tuple[int, int, int] | None]:
    """Map near-identical orientation bins (neighbouring rounding bins) onto one."""
    reps: list[tuple[int, int, int]] = []
    out: list[tuple[int, int, int] | None] = []
    for k in keys:
        if k is None:
            out.append(None)
            continue
        for r in reps:
            if all(abs(a - b) <= 1 for a, b in zip(k, r)):
                out.append(r)
                break
        else:
            reps.append(k)
            out.append(k)
    return out


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
        return SeriesInfo(contrast="UNKNOWN", reasons=["no readable headers"], flags=["corrupt"])
    try:
        return _classify(headers, allow_split=True)
    except Exception as exc:  # never let one odd header break the node
        return SeriesInfo(contrast="UNKNOWN", reasons=[f"classification failed: {type(exc).__name__}: {exc}"],
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
        info.contrast = info.weighting = "OTHER"
        info.n_images = 0
        reasons.append(why)
        return info
    # 2. MR? --------------------------------------------------------------------------------
    is_mr = ev.modality == "MR" or (not ev.modality and bool(ev.sop_classes & MR_SOP_CLASSES))
    if not is_mr:
        info.contrast = info.weighting = "OTHER"
        reasons.append(f"Modality {ev.modality or '(none)'} is not MR")
        return info
    if ev.modality != "MR":
        info.modality = "MR"
    non_mr_sop = sorted(ev.sop_classes - MR_SOP_CLASSES)
    if non_mr_sop:
        info.contrast = info.weighting = "OTHER"
        reasons.append(f"SOP class {non_mr_sop[0]} is not an MR image storage class (e.g. secondary capture)")
        return info
    tokens = set(ev.image_type)
    desc = " | ".join(ev.descriptions)

    # 3. localizer ----------------------------------------------------------------------------
    loc = _localizer(ev, info, labels, tokens, desc)
    if loc:
        info.contrast = info.weighting = "LOCALIZER"
        reasons.extend(loc)
        return info

    # 4. several acquisitions under one UID ------------------------------------------------
    if allow_split and not ev.enhanced and len(headers) > 1:
        groups = split_acquisitions(headers)
        if len(groups) > 1:
            return _classify_mixed(info, groups)

    # 5-8. physics ---------------------------------------------------------------------------
    weighting, why = _physics(ev, info, tokens)
    info.weighting = weighting
    reasons.extend(why)
    contrast = weighting
    # 9. derived objects ---------------------------------------------------------------------
    if contrast in ("FLAIR", "T1", "T2", "PD") and ev.derived:
        reformat = sorted(tokens & REFORMAT_TOKENS)
        if ev.secondary or reformat:
            contrast = "OTHER"
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
        contrast = "OTHER"
    if contrast == "FLAIR" and DIR_HINT.search(desc):
        contrast = "UNKNOWN"
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
                       f"{_fmt(s.echo_time)} -> {s.contrast}" for i, (g, s) in enumerate(zip(groups, subs)))
    info.reasons.append(f"{len(groups)} acquisitions share this SeriesInstanceUID ({detail}); "
                        "they must not be stacked into one volume")
    if len(contrasts) == 1:
        info.contrast = subs[0].contrast
        info.weighting = subs[0].weighting
        info.reasons.append(f"all acquisitions agree: {info.contrast}")
    else:
        info.contrast = "UNKNOWN"
        info.weighting = "UNKNOWN"
        info.reasons.append(f"acquisitions disagree ({', '.join(sorted(contrasts))}): UNKNOWN")
    info.derived = any(s.derived for s in subs)
    info.dimensionality = subs[0].dimensionality
    return info


def _physics(ev: _Evidence, info: SeriesInfo, tokens: set[str]) -> tuple[str, list[str]]:
    """Weighting from the acquisition; returns (contrast, reasons)."""
    r: list[str] = []
    names = " ".join(ev.seq_names)
    ss = ev.scanning_sequence
    tr, te, ti = info.repetition_time, info.echo_time, info.inversion_time
    flip = ev.flip
    cics = {f.complex_component for f in ev.frames if f.complex_component}
    acs = ev.acq_contrasts - {"", "UNKNOWN", "MIXED"}

    # 5. phase / field maps, parametric maps, trace -------------------------------------------
    phase = tokens & PHASE_TOKENS
    if ev.image_type_first[2:3] == ["P"] or (phase - {"P", "I"}) or cics & {"PHASE", "IMAGINARY"}:
        info.flags.append("phase")
        what = sorted((phase - {"I"}) | (cics & {"PHASE", "IMAGINARY"}))
        return "OTHER", [f"phase / field-map images ({', '.join(what)}): not a structural contrast"]
    trace = tokens & TRACE_TOKENS
    maps = tokens & PARAMETRIC_MAP_TOKENS
    maps |= {t for t in tokens if t.endswith("MAP") and t not in PHASE_TOKENS}
    if ev.derived and maps and not trace:
        info.flags.append("parametric-map")
        return "OTHER", [f"derived parametric map ({', '.join(sorted(maps))})"]
    if maps & {"ADC", "EADC", "FA", "COLFA", "T1MAP", "T2MAP", "CBF", "CBV", "MTT", "TTP", "QSM"} and not trace:
        info.flags.append("parametric-map")
        return "OTHER", [f"parametric map ({', '.join(sorted(maps))})"]
    if ENHANCED_MR_COLOR_SOP in ev.sop_classes:
        return "OTHER", ["Enhanced MR Color image (RGB rendering/map)"]

    # 6. diffusion -----------------------------------------------------------------------------
    b = info.b_value_max
    diff = []
    if b is not None and b > 50:
        diff.append(f"b-value up to {_fmt(b)} s/mm2")
    if "DIFFUSION" in tokens or "DIFFUSION" in acs:
        diff.append("ImageType/AcquisitionContrast DIFFUSION")
    if SEQ_DIFF.search(names):
        diff.append(f"diffusion sequence name ({names})")
    if trace:
        diff.append(f"trace-weighted ({', '.join(sorted(trace))})")
    if diff:
        if trace and ev.derived:
            r.append("derived trace-weighted diffusion image: counted as DWI")
        return "DWI", r + ["diffusion: " + "; ".join(diff)]

    # 7. other kinds ---------------------------------------------------------------------------
    epi = ("EP" in ss or ev.epi_flag or bool(SEQ_EPI.search(names))
           or any("EPI" in o for o in ev.scan_options) or ev.mosaic)
    kinds = (tokens | acs) & OTHER_KIND_TOKENS | ({"TOF"} if "FLOW_ENCODED" in acs else set())
    if acs & {"PERFUSION", "FLOW_ENCODED", "TOF", "TAGGING", "SPECTROSCOPY", "T2_STAR"} or kinds:
        return "OTHER", [f"acquisition kind {sorted(kinds | (acs & {'PERFUSION', 'FLOW_ENCODED', 'TOF', 'TAGGING', 'T2_STAR'}))}"
                         ": not a structural T1/T2/FLAIR"]
    if SEQ_SWI_TOF.search(names) or any("TOF" in o or "ANGIO" in o for o in ev.scan_options):
        return "OTHER", [f"angiography/susceptibility sequence ({names or ', '.join(sorted(ev.scan_options))})"]
    if SEQ_SSFP.search(names):
        return "OTHER", [f"balanced steady-state free precession ({names}): T2/T1 mixed contrast, not T1/FLAIR"]
    if epi:
        why = "EPI readout" + (" (mosaic)" if ev.mosaic else "") + \
              f", TR {_fmt(tr)}/TE {_fmt(te)}, no diffusion weighting: BOLD/perfusion/EPI reference, not structural"
        return "OTHER", [why]
    if CALIBRATION_HINT.search(" ".join(ev.descriptions)) and info.n_images <= 200 and (tr or 0) < 20:
        return "OTHER", ["calibration/reference scan (description) with fast GRE timing"]

    # 8. physics ---------------------------------------------------------------------------------
    ir_names = bool(SEQ_IR.search(names))
    flair_opts = {o for o in ev.scan_options if "FLAIR" in o}
    ir = ("IR" in ss or ev.ir_flag is True or "IR" in ev.scan_options or "IR_GEMS" in ev.scan_options
          or bool(flair_opts) or ir_names or "FLUID_ATTENUATED" in acs or "STIR" in acs)
    gre = ("GR" in ss or "GRADIENT" in ev.echo_pulse or bool(SEQ_GRE.search(names))) and "SE" not in ss
    se = ("SE" in ss or "SPIN" in ev.echo_pulse or bool(SEQ_SE.search(names))) and not gre
    mp = "MP" in ev.sequence_variant
    t1_prep_name = bool(SEQ_T1_PREP_GRE.search(names))
    params = f"TR {_fmt(tr)}/TE {_fmt(te)}" + (f"/TI {_fmt(ti)}" if ti else "") + " ms"
    seq_desc = "/".join(sorted(ss)) or "/".join(sorted(ev.echo_pulse)) or "sequence type unknown"
    if names:
        seq_desc += f", sequence name {names}"

    if ti is not None and ti > 0:
        r.append(f"inversion time {_fmt(ti)} ms ({params}, {seq_desc})")
        if ti < 300:
            info.flags.append("stir")
            return "OTHER", r + [f"short TI {_fmt(ti)} ms nulls fat: STIR, not FLAIR/T1"]
        if ti > 4500:
            return "UNKNOWN", r + [f"TI {_fmt(ti)} ms outside the known ranges"]
        flair_flag = bool(flair_opts - {o for o in flair_opts if o.startswith("T1")}) or \
            "FLUID_ATTENUATED" in acs or bool(SEQ_FLAIR.search(names))
        if te is not None and te < 35:
            if ti < 1500:
                return "T1", r + ["inversion-prepared, TI 300-1500 ms with short TE: T1-weighted "
                                  "(MPRAGE / IR-SPGR / T1-FLAIR)"]
            return "UNKNOWN", r + [f"long TI {_fmt(ti)} ms with short TE {_fmt(te)} ms (e.g. MP2RAGE second "
                                   "inversion): neither T1 nor FLAIR"]
        if te is None:
            if ti < 1500 and (gre or mp or t1_prep_name):
                return "T1", r + ["inversion-prepared gradient echo, TI 300-1500 ms: T1-weighted"]
            return "UNKNOWN", r + ["TE unknown: cannot tell T1-IR from FLAIR"]
        if ti >= 1200 and te >= 60 and (tr is None or (tr >= 2000 and tr > ti)):
            return "FLAIR", r + [f"long TI {_fmt(ti)} ms nulls CSF, long TE {_fmt(te)} ms and TR "
                                 f"{_fmt(tr)} ms: T2-weighted FLAIR"]
        if ti >= 1200 and te >= 30 and flair_flag and not gre:
            return "FLAIR", r + [f"long TI {_fmt(ti)} ms, TE {_fmt(te)} ms and vendor FLAIR flag "
                                 f"({', '.join(sorted(flair_opts)) or names or 'FLUID_ATTENUATED'})"]
        return "UNKNOWN", r + [f"TI {_fmt(ti)} ms with TE {_fmt(te)} / TR {_fmt(tr)} ms: neither T1-IR nor "
                               "FLAIR timing"]

    if ir:
        r.append(f"inversion recovery without a usable TI ({params}, {seq_desc})")
        t1f = {o for o in flair_opts if o.startswith("T1")}
        if t1f and (te is None or te < 35):
            return "T1", r + [f"vendor T1-FLAIR option {sorted(t1f)} with short TE"]
        if (flair_opts - t1f or "FLUID_ATTENUATED" in acs) and te is not None and te >= 60:
            return "FLAIR", r + [f"vendor FLAIR flag ({', '.join(sorted(flair_opts - t1f)) or 'FLUID_ATTENUATED'})"
                                 f" with long TE {_fmt(te)} ms"]
        if "STIR" in acs or SEQ_STIR.search(names):
            return "OTHER", r + ["STIR"]
        if (gre or mp or t1_prep_name) and (te is None or te < 10) and (tr is None or tr < 3000):
            return "T1", r + ["inversion-prepared gradient echo with short TE: T1-weighted (MPRAGE-type)"]
        return "UNKNOWN", r + ["inversion recovery but TI unknown: cannot tell FLAIR from STIR or T1-IR"]

    if t1_prep_name and (mp or gre or ev.acq_type == "3D") and (te is None or te < 10):
        return "T1", [f"magnetisation-prepared T1 gradient echo by sequence name ({names})"
                      + (f", {params}" if te is not None else "")]
    if mp and gre and (te is None or te < 10) and (tr is None or tr < 3000):
        return "T1", [f"magnetisation-prepared (SequenceVariant MP) gradient echo, {params}: T1-weighted (TFE/MPRAGE)"]

    if tr is None or te is None:
        ac_only = acs & {"T1", "T2", "PROTON_DENSITY"}
        if ac_only:
            r.append(f"AcquisitionContrast {sorted(ac_only)} but TR/TE missing: not enough physics")
        info.flags.append("no-physics")
        return "UNKNOWN", r + [f"TR/TE not available ({seq_desc})"]

    if gre:
        if te >= 15:
            return "OTHER", [f"gradient echo with TE {_fmt(te)} ms ({params}): T2*-weighted"]
        if flip is not None and flip < 6 and tr < 100:
            return "PD", [f"gradient echo with low flip angle {_fmt(flip)} deg ({params}): PD-weighted"]
        if tr < 100:
            if info.dimensionality == "3D" or flip is None or flip >= 6:
                return "T1", [f"spoiled gradient echo, short TR/TE ({params}, {seq_desc}"
                              f"{', flip ' + _fmt(flip) if flip is not None else ''}): T1-weighted"]
        if 100 <= tr <= 1000 and (flip is None or flip >= 30):
            return "T1", [f"2D gradient echo TR {_fmt(tr)}/TE {_fmt(te)} ms"
                          f"{', flip ' + _fmt(flip) if flip is not None else ''}: T1-weighted (FLASH)"]
        return "UNKNOWN", [f"gradient echo {params}, flip {_fmt(flip)}: weighting unclear"]

    # spin echo, fast spin echo or unspecified readout
    kind = "spin echo" if se else "unspecified readout"
    if tr < 1000 and te < 35:
        return "T1", [f"{kind}, short TR/short TE ({params}, {seq_desc}): T1-weighted"]
    if tr >= 1500 and te >= 60:
        return "T2", [f"{kind}, long TR/long TE ({params}, {seq_desc}): T2-weighted"]
    if tr >= 1500 and te < 40:
        return "PD", [f"{kind}, long TR/short TE ({params}, {seq_desc}): PD-weighted"]
    if not se and tr < 100 and te < 10:
        return "T1", [f"short TR/TE ({params}) without sequence type: T1-weighted gradient echo timing"]
    return "UNKNOWN", [f"{kind}, intermediate timing ({params}): weighting unclear"]


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
