"""Coded concepts used by the SEG, SR and overlay encoders.

Standard codes (SNOMED CT "SCT", DICOM "DCM", UCUM, LOINC "LN") are used where a concept
exists in the DICOM content mapping resource. The McDonald lesion location classes
(periventricular, juxtacortical/cortical, infratentorial, deep white matter), the lesion load
category and "dissemination in space met" have no standard code there, so they use the private
coding scheme ``99MSNODE`` (PS3.3 8.2: "99" prefix = private), declared in each object's Coding
Scheme Identification Sequence.

Follow-up comparison (:mod:`dicom_node.encode.change`, the SR's change content): the change
status of a lesion is a qualitative evaluation ``99MSNODE CHGSTAT`` "Lesion change since prior
study" (no standard concept) whose answers are standard where SNOMED CT has one: enlarging SCT
15454001 "Increased size", stable SCT 260388006 "No change", shrinking SCT 19776001 "Decreased
size", vanished SCT 272519000 "Absent"; a new lesion is ``99MSNODE NEWLES`` "New lesion since
prior study" (SNOMED's "New finding" 129721008 is defined for mammography). The prior study is
referenced with DCM 110180 "Study Instance UID" and DCM 111060 "Study Date" (and DCM 121022
"Accession Number"); whether a comparison was made with DCM 122140 "Comparison with Prior Study
Done" = SCT 373066001 "Yes" or SCT 262008008 "Not performed". The counts, the prior volume, the
interval and "new disease activity" are private (``99MSNODE`` NNEW, NENL, NSHR, NVAN, VOLPRIOR,
INTERVAL, NEWACT, REGDICE).
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

# --- follow-up comparison (change since the prior study) ---
CHANGE_STATUS = CodedConcept("CHGSTAT", PRIVATE_SCHEME, "Lesion change since prior study")
#: Answer of :data:`CHANGE_STATUS` per :data:`ai.types.CHANGE_STATUSES` status.
CHANGE_STATUS_VALUES: dict[str, CodedConcept] = {
    "new": CodedConcept("NEWLES", PRIVATE_SCHEME, "New lesion since prior study"),
    "enlarging": CodedConcept("15454001", "SCT", "Increased size"),
    "stable": CodedConcept("260388006", "SCT", "No change"),
    "shrinking": CodedConcept("19776001", "SCT", "Decreased size"),
    "vanished": CodedConcept("272519000", "SCT", "Absent"),
}
VOLUME_PRIOR = CodedConcept("VOLPRIOR", PRIVATE_SCHEME, "Volume in prior study")
NUMBER_NEW = CodedConcept("NNEW", PRIVATE_SCHEME, "Number of new lesions since prior study")
NUMBER_ENLARGING = CodedConcept("NENL", PRIVATE_SCHEME, "Number of enlarging lesions since prior study")
NUMBER_SHRINKING = CodedConcept("NSHR", PRIVATE_SCHEME, "Number of shrinking lesions since prior study")
NUMBER_VANISHED = CodedConcept("NVAN", PRIVATE_SCHEME, "Number of prior lesions no longer seen")
INTERVAL = CodedConcept("INTERVAL", PRIVATE_SCHEME, "Interval since prior study")
DAYS = CodedConcept("d", "UCUM", "day")
NEW_ACTIVITY = CodedConcept("NEWACT", PRIVATE_SCHEME, "New disease activity (new or enlarging lesions)")
REGISTRATION_DICE = CodedConcept("REGDICE", PRIVATE_SCHEME, "Registration check: head mask Dice")
COMPARISON_DONE = codes.DCM.ComparisonWithPriorStudyDone  # DCM 122140
NOT_PERFORMED = codes.SCT.NotPerformed  # SCT 262008008
STUDY_INSTANCE_UID = codes.DCM.StudyInstanceUID  # DCM 110180
STUDY_DATE = codes.DCM.StudyDate  # DCM 111060
ACCESSION_NUMBER = codes.DCM.AccessionNumber  # DCM 121022
LESION_IDENTIFIER = codes.DCM.LesionIdentifier  # DCM 121151 (the lesion's label in its study)
COMMENT = codes.DCM.Comment  # DCM 121106


def coding_schemes() -> list[CodingSchemeIdentificationItem]:
    """Items for CodingSchemeIdentificationSequence (0008,0110) declaring the private scheme."""
    return [CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME, name=PRIVATE_SCHEME_NAME,
        responsible_organization="ms-dicom-node project",
    )]
