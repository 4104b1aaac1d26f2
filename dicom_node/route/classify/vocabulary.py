"""Words and numbers the classifier recognises: SOP classes, modalities, image-type tokens and name patterns."""

from __future__ import annotations

import re
from enum import StrEnum


class Contrast(StrEnum):
    """What a series is, for routing: only original acquisitions can be FLAIR or T1."""

    FLAIR = "FLAIR"
    T1 = "T1"
    T2 = "T2"
    PD = "PD"
    DWI = "DWI"
    LOCALIZER = "LOCALIZER"
    OTHER = "OTHER"
    UNKNOWN = "UNKNOWN"


CONTRASTS: tuple[Contrast, ...] = tuple(Contrast)

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
