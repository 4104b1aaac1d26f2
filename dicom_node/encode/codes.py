"""Coded concepts used by the SEG, SR and overlay encoders.

Standard codes (SNOMED CT "SCT", DICOM "DCM", UCUM, LOINC "LN") are used where a concept
exists in the DICOM content mapping resource. The McDonald lesion location classes
(periventricular, juxtacortical/cortical, infratentorial, deep white matter), the lesion load
category and "dissemination in space met" have no standard code there, so they use the private
coding scheme ``99MSNODE`` (PS3.3 8.2: "99" prefix = private), declared in each object's Coding
Scheme Identification Sequence.
"""
from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

PRIVATE_SCHEME = "99MSNODE"
PRIVATE_SCHEME_NAME = "ms-dicom-node private codes (MS lesion locations and summary)"

#: Segmented property category / type of every lesion segment.
LESION_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure  # SCT 49755003
LESION_TYPE = codes.SCT.Lesion  # SCT 52988006
BRAIN = codes.SCT.Brain  # SCT 12738006
AI_FAMILY = codes.DCM.ArtificialIntelligence  # DCM 123110

LOCATION_CODES: dict[str, CodedConcept] = {
    "periventricular": CodedConcept("PVWM", PRIVATE_SCHEME, "Periventricular white matter"),
    "juxtacortical": CodedConcept("JCX", PRIVATE_SCHEME, "Juxtacortical/cortical"),
    "infratentorial": CodedConcept("INFRA", PRIVATE_SCHEME, "Infratentorial brain"),
    "deep_white_matter": CodedConcept("DWM", PRIVATE_SCHEME, "Deep white matter"),
}

LOAD_CATEGORY = CodedConcept("LOADCAT", PRIVATE_SCHEME, "Lesion load category")
LOAD_VALUES: dict[str, CodedConcept] = {
    "none": CodedConcept("LOAD0", PRIVATE_SCHEME, "No lesions"),
    "low": CodedConcept("LOAD1", PRIVATE_SCHEME, "Low lesion load"),
    "moderate": CodedConcept("LOAD2", PRIVATE_SCHEME, "Moderate lesion load"),
    "high": CodedConcept("LOAD3", PRIVATE_SCHEME, "High lesion load"),
}
DIS_MET = CodedConcept("DISMET", PRIVATE_SCHEME, "Dissemination in space on brain MRI (McDonald 2017)")
NUMBER_OF_LESIONS = codes.SCT.NumberOfLesions  # SCT 246206008
VOLUME = codes.SCT.Volume  # SCT 118565006
TOTAL = codes.SCT.Total  # SCT 255619001 (CID 7464 derivation)
YES = codes.SCT.Yes
NO = codes.SCT.No
MM3 = codes.UCUM.CubicMillimeter
LESIONS_UNIT = CodedConcept("{lesions}", "UCUM", "lesions")
BRAIN_MRI = codes.LN.BrainMRI  # LN 24590-2
NO_UNITS = CodedConcept("1", "UCUM", "no units")
MEAN_PROBABILITY = CodedConcept("PMEAN", PRIVATE_SCHEME, "Mean lesion probability (model output)")
MAX_PROBABILITY = CodedConcept("PMAX", PRIVATE_SCHEME, "Maximum lesion probability (model output)")
LOW_CONFIDENCE_COUNT = CodedConcept("LOWCONF", PRIVATE_SCHEME, "Number of low-confidence lesions")
CONFIDENCE_CUT = CodedConcept("CONFCUT", PRIVATE_SCHEME, "Low-confidence cut (mean lesion probability)")


def coding_schemes() -> list[CodingSchemeIdentificationItem]:
    """Items for CodingSchemeIdentificationSequence (0008,0110) declaring the private scheme."""
    return [CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME, name=PRIVATE_SCHEME_NAME,
        responsible_organization="ms-dicom-node project",
    )]
