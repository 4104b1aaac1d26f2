"""Reading back a TID 1500 report written by :func:`dicom_node.encode.sr.build_sr` (tests,
status, QA, and the node's reuse of a prior report's tracking UIDs)."""
from __future__ import annotations

from typing import cast

import highdicom as hd
from highdicom.sr.templates import Template
from pydicom.dataset import Dataset

from dicom_node.encode import codes as C
from dicom_node.encode.sr import CHANGE_TRACKING_ID, SUMMARY_TRACKING_ID

__all__ = ["read_report"]

#: A measurement group as highdicom reads it back (TID 1501 or TID 1411).
_Group = hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations


def _items(group: Template) -> dict[str, str]:
    """TEXT, UIDREF and DATE items of a group's container: concept code value -> value."""
    out: dict[str, str] = {}
    for item in group[0].get("ContentSequence", []):
        vt = item.get("ValueType")
        if vt in ("TEXT", "UIDREF", "DATE") and item.get("ConceptNameCodeSequence"):
            key = {"TEXT": "TextValue", "UIDREF": "UID", "DATE": "Date"}[vt]
            out[str(item.ConceptNameCodeSequence[0].CodeValue)] = str(item.get(key, ""))
    return out


def _answers(group: _Group) -> dict[str, str]:
    """Qualitative evaluations of a group: concept code value -> answer code value."""
    return {q.name.value: cast(hd.sr.CodedConcept, q.value).value
            for q in group.get_qualitative_evaluations()}


def _value(group: _Group, name: hd.sr.CodedConcept) -> float | None:
    vals = [m.value for m in group.get_measurements(name=name)]
    return float(vals[0]) if vals else None


#: DCM 111001 "Algorithm Name", DCM 111003 "Algorithm Version" (TID 4019, in the summary group).
ALGORITHM_NAME, ALGORITHM_VERSION = "111001", "111003"

_STATUS_BY_CODE = {c.value: k for k, c in C.CHANGE_STATUS_VALUES.items()}


def _source_image(ref: hd.sr.ReferencedSegment | None) -> str | None:
    """SOP Instance UID of the source image a lesion's segment reference names (the FLAIR slice
    through the lesion's centroid, as :func:`build_sr` writes it)."""
    if ref is None or not ref.has_source_images():
        return None
    images = ref.source_images_for_segmentation
    return str(images[0].referenced_sop_instance_uid) if images else None


def _evidence_series(sr: Dataset) -> list[str]:
    """Series Instance UIDs listed in the report's Current Requested Procedure Evidence."""
    return [str(s.SeriesInstanceUID)
            for study in sr.get("CurrentRequestedProcedureEvidenceSequence", [])
            for s in study.get("ReferencedSeriesSequence", []) if "SeriesInstanceUID" in s]


def _lesion_change(group: _Group, timepoint: str) -> dict | None:
    """A lesion group's change entry (None when it has no change status)."""
    status = _answers(group).get(C.CHANGE_STATUS.value)
    if status is None:
        return None
    label = _items(group).get(C.LESION_IDENTIFIER.value, "")
    return {
        "id": int(label) if label.isdigit() else None,
        "timepoint": timepoint,
        "status": _STATUS_BY_CODE.get(status, status),
        "volume_now_mm3": _value(group, C.VOLUME),
        "volume_prior_mm3": _value(group, C.VOLUME_PRIOR),
        "tracking_uid": str(group.tracking_uid),
        "tracking_id": str(group.tracking_identifier),
    }


def _read_change(group: _Group, lesions: list[dict]) -> dict:
    """The "MS lesion change" group (plus the lesions' change entries) as plain values."""
    answers = _answers(group)
    items = _items(group)
    comparable = answers.get(C.COMPARISON_DONE.value) == C.YES.value
    numbers = {m.name.value: m for m in group.get_measurements()}

    def num(code: hd.sr.CodedConcept, kind: type = float):
        m = numbers.get(code.value)
        return kind(m.value) if m is not None else None

    reason = items.get(C.COMMENT.value, "")
    return {
        "comparable": comparable,
        "reason": reason.removeprefix("No comparable prior: ") if not comparable else "",
        "prior_study_uid": items.get(C.STUDY_INSTANCE_UID.value, ""),
        "prior_study_date": items.get(C.STUDY_DATE.value, ""),
        "prior_accession": items.get(C.ACCESSION_NUMBER.value, ""),
        "interval_days": num(C.INTERVAL, int),
        "n_new": num(C.NUMBER_NEW, int),
        "n_enlarging": num(C.NUMBER_ENLARGING, int),
        "n_shrinking": num(C.NUMBER_SHRINKING, int),
        "n_vanished": num(C.NUMBER_VANISHED, int),
        "total_volume_prior_mm3": num(C.VOLUME_PRIOR),
        "total_volume_now_mm3": num(C.VOLUME),
        "activity": (answers[C.NEW_ACTIVITY.value] == C.YES.value
                     if C.NEW_ACTIVITY.value in answers else None),
        "registration_head_dice": num(C.REGISTRATION_DICE),
        "lesions": lesions if comparable else [],
    }


def read_report(sr: Dataset) -> dict:
    """Parse an SR written by :func:`build_sr` back into plain values (tests, status, QA).

    Returns
    -------
    dict
        ``{"lesions": [{"id", "tracking_uid", "tracking_id", "volume_mm3", "volume_prior_mm3",
        "status", "mean_probability", "max_probability", "location", "segment_number",
        "seg_sop_instance_uid", "source_sop_instance_uid"}], "summary": {"lesion_count", "total_volume_mm3",
        "low_confidence_count", "confidence_cut", "counts_by_location", "volume_by_location_mm3",
        "load_category", "dis_met"}, "change": None | {...}}``. A lesion's ``id`` is its label
        in this study (``status``/``volume_prior_mm3`` None without a comparison). ``change``
        (None: the report has no comparison) holds ``comparable``, ``reason``,
        ``prior_study_uid``, ``prior_study_date``, ``prior_accession``, ``interval_days``,
        ``n_new``, ``n_enlarging``, ``n_shrinking``, ``n_vanished``, ``total_volume_prior_mm3``,
        ``total_volume_now_mm3``, ``activity``, ``registration_head_dice`` (the numbers None
        when not comparable) and ``lesions``: ``[{"id", "timepoint" ("follow-up" or "prior"),
        "status", "volume_now_mm3", "volume_prior_mm3", "tracking_uid", "tracking_id"}]``, the
        follow-up lesions first, then the shrinking and vanished prior lesions.
        ``algorithm``: ``{"name", "version"}`` of the model that made the report (None when
        absent); ``evidence_series``: the Series Instance UIDs of its evidence (the FLAIR, the
        SEG, the change SEG). A lesion's ``source_sop_instance_uid`` is the FLAIR slice through
        its centroid.
    """
    report = hd.sr.MeasurementReport.from_sequence([sr])
    loc_by_code = {c.value: loc for loc, c in C.LOCATION_CODES.items()}
    load_by_code = {c.value: k for k, c in C.LOAD_VALUES.items()}
    lesions = []
    changes: list[dict] = []
    for g in report.get_volumetric_roi_measurement_groups():
        ident = str(g.tracking_identifier)
        pmean = [m.value for m in g.get_measurements(name=C.MEAN_PROBABILITY)]
        pmax = [m.value for m in g.get_measurements(name=C.MAX_PROBABILITY)]
        sites = [loc_by_code.get(fs.value.value) for fs in g.finding_sites]
        ref = g.referenced_segment
        lc = _lesion_change(g, "follow-up")
        if lc is not None:
            changes.append(lc)
        label = _items(g).get(C.LESION_IDENTIFIER.value, "")
        lesions.append({
            "id": (int(label) if label.isdigit() else
                   int(ident.split()[-1]) if ident.split()[-1].isdigit() else ident),
            "tracking_uid": str(g.tracking_uid),
            "tracking_id": ident,
            "volume_mm3": _value(g, C.VOLUME),
            "volume_prior_mm3": _value(g, C.VOLUME_PRIOR),
            "status": lc["status"] if lc is not None else None,
            "mean_probability": float(pmean[0]) if pmean else None,
            "max_probability": float(pmax[0]) if pmax else None,
            "location": sites[0] if sites else None,
            "segment_number": (int(ref.referenced_segment_numbers[0])
                               if ref and ref.referenced_segment_numbers else None),
            "seg_sop_instance_uid": str(ref.referenced_sop_instance_uid) if ref else None,
            "source_sop_instance_uid": _source_image(ref),
        })
    summary: dict = {"counts_by_location": {}, "volume_by_location_mm3": {}}
    change_group = None
    algorithm: dict = {"name": None, "version": None}
    for summary_group in report.get_image_measurement_groups(tracking_uid=None):
        ident = str(summary_group.tracking_identifier)
        if ident == CHANGE_TRACKING_ID:
            change_group = summary_group
            continue
        if ident != SUMMARY_TRACKING_ID:
            lc = _lesion_change(summary_group, "prior")
            if lc is not None:
                changes.append(lc)
            continue
        items = _items(summary_group)
        algorithm = {"name": items.get(ALGORITHM_NAME), "version": items.get(ALGORITHM_VERSION)}
        for m in summary_group.get_measurements():
            sites = [loc_by_code.get(fs.value.value) for fs in (m.finding_sites or [])]
            is_count = m.name.value == C.NUMBER_OF_LESIONS.value
            if m.name.value == C.LOW_CONFIDENCE_COUNT.value:
                summary["low_confidence_count"] = int(m.value)
            elif m.name.value == C.CONFIDENCE_CUT.value:
                summary["confidence_cut"] = float(m.value)
            elif sites:
                key = "counts_by_location" if is_count else "volume_by_location_mm3"
                summary[key][sites[0]] = int(m.value) if is_count else float(m.value)
            elif is_count:
                summary["lesion_count"] = int(m.value)
            else:
                summary["total_volume_mm3"] = float(m.value)
        for q in summary_group.get_qualitative_evaluations():
            answer = cast(hd.sr.CodedConcept, q.value)
            if q.name.value == C.LOAD_CATEGORY.value:
                summary["load_category"] = load_by_code.get(answer.value, answer.meaning)
            elif q.name.value == C.DIS_MET.value:
                summary["dis_met"] = answer.value == C.YES.value
    change = _read_change(change_group, changes) if change_group is not None else None
    return {"lesions": lesions, "summary": summary, "change": change,
            "algorithm": algorithm, "evidence_series": _evidence_series(sr)}
