"""Patient and study header of the result objects, from whatever the scanner or PACS wrote.

Scanners and PACS often leave Type 2 attributes of the Patient and General Study modules out
altogether (PatientSex, PatientBirthDate, AccessionNumber, ReferringPhysicianName, ...), which
the standard does not allow in a stored instance but which every real archive holds. highdicom
reads these attributes from the source with plain attribute access, so a source without them
made every encoder fail. :func:`fill_type2` adds each missing one with an empty value (what the
standard says a Type 2 attribute without a known value is); nothing is invented.

:func:`copy_patient_study` copies the Patient, General Study, Patient Study and Clinical Trial
modules of the source whole (StudyDescription, PatientAge, PatientSize, PatientWeight, other
patient IDs, ...), using highdicom's tables of the standard's modules rather than a list kept
here.

A source without FrameOfReferenceUID (Type 1, but removed by some de-identification tools)
gets one derived from its series (:func:`ensure_frame_of_reference`), so a SEG, which must have
one, can still be written; the SEG then refers to its source images by SOP Instance UID as
always, and the node logs that it did so.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from pydicom.dataset import Dataset

from dicom_node.encode.uids import derive_uid

log = logging.getLogger(__name__)

__all__ = ["TYPE2_PATIENT_STUDY", "fill_type2", "ensure_frame_of_reference", "copy_patient_study"]

#: Type 2 attributes of the Patient and General Study modules that the encoders read.
TYPE2_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)


def fill_type2(datasets: Iterable[Dataset]) -> None:
    """Add every attribute of :data:`TYPE2_PATIENT_STUDY` that a dataset lacks, empty.

    In place and idempotent; present values (empty or not) are left as they are.
    """
    for ds in datasets:
        for kw in TYPE2_PATIENT_STUDY:
            if kw not in ds:
                setattr(ds, kw, None)


def ensure_frame_of_reference(datasets: Sequence[Dataset]) -> None:
    """Give datasets without FrameOfReferenceUID one derived from their series (in place).

    Datasets that have one keep it; the derived UID is the same for every dataset of a series
    and for every run (it depends on the Study and Series Instance UIDs only).
    """
    missing = [ds for ds in datasets if not ds.get("FrameOfReferenceUID")]
    if not missing:
        return
    for ds in missing:
        ds.FrameOfReferenceUID = derive_uid("frame-of-reference", str(ds.get("StudyInstanceUID", "")),
                                            str(ds.get("SeriesInstanceUID", "")))
    log.warning("series %s: %d source instance(s) without FrameOfReferenceUID; the results use "
                "%s, derived from the series", missing[0].get("SeriesInstanceUID", "?"),
                len(missing), missing[0].FrameOfReferenceUID)


def copy_patient_study(src: Dataset, dst: Dataset) -> None:
    """Copy the root attributes of the Patient and Study modules of ``src`` into ``dst``.

    ``dst`` is a highdicom SOP instance (it has ``copy_patient_and_study_information``); the
    modules are those of the source's own IOD, as the standard defines them.
    """
    dst.copy_patient_and_study_information(src)
