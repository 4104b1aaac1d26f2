"""TID 1500 Measurement Report (Comprehensive 3D SR) of the MS lesions.

Content tree (highdicom templates):

- Observation context: the algorithm as a device observer (name, model SHA-256 version).
- Procedure reported: LOINC 24590-2 "Brain MRI". The source FLAIR instances and the SEG are
  listed in the Current Requested Procedure Evidence Sequence (optionally also in the TID 1600
  Image Library).
- One TID 1411 volumetric measurement group per lesion: tracking identifier ("Lesion N") and
  tracking UID, finding category/type (SCT morphologically abnormal structure / lesion), finding
  site = location class (private 99MSNODE code, see :mod:`dicom_node.encode.codes`), volume in
  mm3, the model's mean and maximum lesion probability inside the lesion (private codes PMEAN,
  PMAX; unit 1), and the referenced segment of the SEG (segment of its location class, or of the lesion
  when the SEG has one segment per lesion) with the FLAIR slice through the lesion's centroid.
- One TID 1501 group "MS lesion summary": number of lesions and total volume (overall and per
  location class as measurements with a finding site), the number of low-confidence lesions
  (mean probability below the cut, LOWCONF) and that cut (CONFCUT), lesion load category and dissemination in
  space (McDonald 2017 brain areas) as qualitative evaluations.

With no lesions, the report holds the summary group only (0 lesions, 0 mm3).

At the end of the root container, TEXT "Comment" (DCM 121106) items: the remarks on how the
result was made (``notes``), then always the model's detection limits
(:data:`ai.types.DETECTION_LIMITS`: small lesions are often missed, so a negative is not a
negative), so that a reader of the report, not only of the model card, is told.

With a follow-up comparison (``change``, an :class:`ai.types.ChangeReport`; codes in
:mod:`dicom_node.encode.codes`):

- comparable: each lesion group gets its change status (qualitative evaluation 99MSNODE CHGSTAT:
  new / SCT "Increased size" / SCT "No change"), the matched prior volume (99MSNODE VOLPRIOR)
  beside its volume now, and the lesion's label in this study (TEXT DCM 121151 "Lesion
  Identifier"); a lesion the comparison tracked keeps the prior report's tracking identifier and
  UID (``LesionChange.tracking_id``/``tracking_uid``), a new one gets its own ("Lesion N", a UID
  derived from the job; a number a tracked lesion already uses is skipped). Shrinking and
  vanished PRIOR lesions get a TID 1501 group each (they have no follow-up segment, so no TID
  1411 volumetric group): status (SCT "Decreased size" / SCT "Absent"), prior volume, volume now,
  the prior's tracking identifier/UID (else "Prior lesion N" and a derived UID) and the prior
  label as Lesion Identifier. A TID 1501 group "MS lesion change" holds the numbers of new,
  enlarging, shrinking and vanished lesions, the total volume then (VOLPRIOR) and now, the
  interval in days, the registration check's head Dice, "Comparison with Prior Study Done"
  (DCM 122140) = yes, new disease activity (NEWACT) yes/no, and the prior study: UIDREF DCM
  110180 "Study Instance UID", DATE DCM 111060 "Study Date", TEXT DCM 121022 "Accession Number".
- not comparable: only the "MS lesion change" group, with "Comparison with Prior Study Done" =
  SCT 262008008 "Not performed", a TEXT "Comment" (DCM 121106) with the reason and the prior
  study reference when one is known; never a change number.

The change SEG (:func:`dicom_node.encode.change.build_change_seg`), when given, is listed in the
evidence. With a change the report's UIDs derive from
:func:`dicom_node.encode.uids.change_key`; without one (``change=None``) the report is exactly
what it is without this feature.
"""
from __future__ import annotations

import logging
import re

import highdicom as hd
from highdicom.sr.templates import Template
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from ai.types import DETECTION_LIMITS, LOCATIONS, ChangeReport, LesionChange, SegmentationResult
from dicom_node import __version__
from dicom_node.encode import codes as C
from dicom_node.encode.header import ensure_frame_of_reference, fill_type2
from dicom_node.encode.identity import MANUFACTURER, MODEL_NAME, RESEARCH_NOTE, SR_DESCRIPTION
from dicom_node.encode.seg import segment_plan
from dicom_node.encode.uids import change_key, derive_uid
from dicom_node.run.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["build_sr", "lesion_tracking", "SUMMARY_TRACKING_ID", "CHANGE_TRACKING_ID"]

SUMMARY_TRACKING_ID = "MS lesion summary"
#: Tracking identifier of the group on the comparison with the prior study.
CHANGE_TRACKING_ID = "MS lesion change"


def _segment_of_lesion(result: SegmentationResult, seg: Dataset) -> dict[int, int]:
    """lesion id -> segment number in ``seg`` (which was written by :func:`build_seg`)."""
    seg_labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    for kw in ({}, {"per_lesion": True}, {"fractional": True}):
        plans = segment_plan(result, **kw)
        if [p.label for p in plans] == seg_labels:
            return {lid: p.number for p in plans for lid in p.lesion_ids}
    raise ValueError(
        "the SEG's segments do not match this result (pass the BINARY SEG built from it): "
        f"{seg_labels}"
    )


def _source_image_for_lesion(flair: Volume, k: int) -> hd.sr.SourceImageForSegmentation:
    """Reference to the FLAIR slice ``k`` (the slice through the lesion's centroid)."""
    uid, frame = flair.slice_refs[k]
    ds = next(d for d in flair.datasets if str(d.SOPInstanceUID) == uid)
    return hd.sr.SourceImageForSegmentation(
        referenced_sop_class_uid=str(ds.SOPClassUID),
        referenced_sop_instance_uid=uid,
        referenced_frame_numbers=[frame] if frame is not None else None,
    )


def build_sr(
    result: SegmentationResult,
    flair: Volume,
    seg: Dataset | None,
    *,
    job_key: str,
    series_number: int = 902,
    image_library: bool = False,
    notes: list[str] | None = None,
    change: ChangeReport | None = None,
    change_seg: Dataset | None = None,
) -> Dataset:
    """Encode ``result`` as a TID 1500 Measurement Report (Comprehensive 3D SR).

    Parameters
    ----------
    result
        The segmentation result (lesions and summary).
    flair
        Source FLAIR volume: referenced as evidence and in the image library.
    seg
        The SEG from :func:`dicom_node.encode.seg.build_seg` for this result (``None`` when
        there are no lesions). Each lesion's group references its segment (with a FRACTIONAL
        SEG, the single probability segment).
    job_key
        Seed of the deterministic UIDs (same job -> same SR SOP Instance UID).
    image_library
        Also list every FLAIR instance in the TID 1600 Image Library (slow with highdicom:
        about 5 s for 180 slices; the evidence sequence references them anyway).
    notes
        Remarks on how the result was made (e.g. a T1 left out), each a TEXT content item
        "Comment" (DCM 121106) at the end of the report's root container; the model's detection
        limits (:data:`ai.types.DETECTION_LIMITS`) always follow them as one more Comment.
    change
        The comparison with the prior study (see the module docstring); ``None``: no change
        content, the report is as without this parameter.
    change_seg
        The change SEG from :func:`dicom_node.encode.change.build_change_seg`, listed in the
        evidence.
    """
    if result.lesions and seg is None:
        raise ValueError("lesions present but no SEG given")
    seg_of = _segment_of_lesion(result, seg) if result.lesions and seg is not None else {}
    fill_type2(flair.datasets)  # real headers often lack Type 2 patient/study attributes
    ensure_frame_of_reference(flair.datasets)

    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derive_uid("device", result.model_name, result.model_version),
            name=(result.model_name or "unknown")[:64],
            manufacturer_name=MANUFACTURER,
            model_name=f"{MODEL_NAME} {__version__}"[:64],
        ),
    )
    observation_context = hd.sr.ObservationContext(observer_device_context=device)
    algo = hd.sr.AlgorithmIdentification(
        name=(result.model_name or "unknown")[:64],
        version=(result.model_version or "unknown")[:64],
        family=C.AI_FAMILY,
    )

    comparable = change is not None and change.comparable
    follow = {lc.lesion_id: lc for lc in change.lesions if lc.timepoint == "follow-up"} if change and comparable else {}
    tracking = lesion_tracking(result, job_key, change)
    groups: list = []
    for les in sorted(result.lesions, key=lambda les: les.id):
        assert seg is not None  # lesions without a SEG were refused above
        k = flair.slice_through(les.centroid_index[0])
        ref = hd.sr.ReferencedSegment(  # built directly: from_segmentation() fails on 1-segment SEGs
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=seg_of[les.id],
            source_images=[_source_image_for_lesion(flair, k)],
        )
        lc = follow.get(les.id)
        measurements = [
            hd.sr.Measurement(name=C.VOLUME, value=round(float(les.volume_mm3), 3), unit=C.MM3),
            hd.sr.Measurement(name=C.MEAN_PROBABILITY, value=round(float(les.mean_probability), 4),
                              unit=C.NO_UNITS),
            hd.sr.Measurement(name=C.MAX_PROBABILITY, value=round(float(les.max_probability), 4),
                              unit=C.NO_UNITS),
        ]
        if lc is not None and lc.volume_prior_mm3 is not None:
            measurements.append(hd.sr.Measurement(
                name=C.VOLUME_PRIOR, value=round(float(lc.volume_prior_mm3), 3), unit=C.MM3))
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=tracking[les.id][0], identifier=tracking[les.id][1]),
            referenced_segment=ref,
            finding_type=C.LESION_TYPE,
            finding_category=C.LESION_CATEGORY,
            finding_sites=[hd.sr.FindingSite(C.LOCATION_CODES[les.location])],
            measurements=measurements,
            qualitative_evaluations=[_status(lc)] if lc is not None else None,
        )
        if comparable:
            _add(group, hd.sr.TextContentItem(name=C.LESION_IDENTIFIER, value=str(les.id),
                                              relationship_type=_CONTAINS))
        groups.append(group)
    if change is not None and comparable:
        groups += [_prior_lesion_group(lc, job_key) for lc in change.lesions if lc.timepoint == "prior"]

    s = result.summary
    measurements = [
        hd.sr.Measurement(name=C.NUMBER_OF_LESIONS, value=int(s.lesion_count), unit=C.LESIONS_UNIT),
        hd.sr.Measurement(name=C.VOLUME, value=round(float(s.total_volume_mm3), 3), unit=C.MM3,
                          derivation=C.TOTAL),
        hd.sr.Measurement(name=C.LOW_CONFIDENCE_COUNT, value=int(s.low_confidence_count), unit=C.LESIONS_UNIT),
        hd.sr.Measurement(name=C.CONFIDENCE_CUT, value=round(float(s.confidence_cut), 4), unit=C.NO_UNITS),
    ]
    for loc in LOCATIONS:
        site = [hd.sr.FindingSite(C.LOCATION_CODES[loc])]
        measurements.append(hd.sr.Measurement(
            name=C.NUMBER_OF_LESIONS, value=int(s.counts_by_location.get(loc, 0)),
            unit=C.LESIONS_UNIT, finding_sites=site))
        measurements.append(hd.sr.Measurement(
            name=C.VOLUME, value=round(float(s.volume_by_location_mm3.get(loc, 0.0)), 3),
            unit=C.MM3, derivation=C.TOTAL, finding_sites=site))
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derive_uid(job_key, "summary"), identifier=SUMMARY_TRACKING_ID),
        finding_type=C.LESION_TYPE,
        finding_category=C.LESION_CATEGORY,
        algorithm_id=algo,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(C.LOAD_CATEGORY, C.LOAD_VALUES[s.load_category]),
            hd.sr.QualitativeEvaluation(C.DIS_MET, C.YES if s.dis_met else C.NO),
        ],
    ))
    if change is not None:
        groups.append(_change_group(change, job_key, algo))

    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=C.BRAIN_MRI,
        imaging_measurements=groups,
        referenced_images=list(flair.datasets) if image_library else None,
    )
    evidence = list(flair.datasets) + [ds for ds in (seg, change_seg) if ds is not None]
    key = change_key(job_key, change)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=derive_uid(key, "sr-series"),
        series_number=series_number,
        sop_instance_uid=derive_uid(key, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=f"{SR_DESCRIPTION} - {RESEARCH_NOTE}",
        manufacturer_model_name=MODEL_NAME,
        software_versions=__version__,
        content_qualification="RESEARCH",
        coding_schemes=C.coding_schemes(),
    )
    for note in [*(notes or []), DETECTION_LIMITS]:
        sr.ContentSequence.append(hd.sr.TextContentItem(
            name=C.COMMENT, value=note[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return sr


_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS


def _add(group: Template, item: hd.sr.ContentItem) -> None:
    """Append ``item`` to the content of a measurement group's container."""
    group[0].ContentSequence.append(item)


def _status(lc: LesionChange) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(C.CHANGE_STATUS, C.CHANGE_STATUS_VALUES[lc.status])


def lesion_tracking(result: SegmentationResult, job_key: str,
                    change: ChangeReport | None = None) -> dict[int, tuple[str, str]]:
    """Lesion id -> (tracking UID, tracking identifier) as :func:`build_sr` writes them.

    Without a comparable prior: a UID derived from ``job_key`` and "Lesion <id>". With one, a
    lesion that continues a prior lesion keeps the prior report's UID and identifier (when the
    comparison gives them), and the others take the next identifier not used. The node keeps
    this map with its result, so that a later follow-up of the patient continues it."""
    comparable = change is not None and change.comparable
    follow = ({lc.lesion_id: lc for lc in change.lesions if lc.timepoint == "follow-up"}
              if change is not None and comparable else {})
    idents = _identifiers(result, follow) if comparable else {}
    out: dict[int, tuple[str, str]] = {}
    for les in result.lesions:
        lc = follow.get(les.id)
        uid = (lc.tracking_uid if lc is not None and lc.tracking_uid
               else derive_uid(job_key, "lesion", str(les.id)))
        out[les.id] = (uid, idents.get(les.id, f"Lesion {les.id}"))
    return out


def _identifiers(result: SegmentationResult, follow: dict[int, LesionChange]) -> dict[int, str]:
    """Follow-up lesion id -> tracking identifier: the prior's when the comparison gives one,
    else "Lesion <id>", or the next unused number when a tracked lesion already uses that."""
    used = {lc.tracking_id for lc in follow.values() if lc.tracking_id}
    numbers = [int(m.group(1)) for t in used if (m := re.fullmatch(r"Lesion (\d+)", t))]
    nxt = max(numbers + [les.id for les in result.lesions] + [0]) + 1
    out: dict[int, str] = {}
    for les in sorted(result.lesions, key=lambda les: les.id):
        lc = follow.get(les.id)
        if lc is not None and lc.tracking_id:
            out[les.id] = lc.tracking_id
            continue
        name = f"Lesion {les.id}"
        if name in used:
            name, nxt = f"Lesion {nxt}", nxt + 1
        used.add(name)
        out[les.id] = name
    return out


def _prior_lesion_group(lc: LesionChange, job_key: str) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group of a shrinking or vanished prior lesion (no follow-up segment)."""
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=lc.tracking_uid or derive_uid(job_key, "prior-lesion", str(lc.lesion_id)),
            identifier=lc.tracking_id or f"Prior lesion {lc.lesion_id}"),
        finding_type=C.LESION_TYPE,
        finding_category=C.LESION_CATEGORY,
        measurements=[
            hd.sr.Measurement(name=C.VOLUME, value=round(float(lc.volume_now_mm3), 3), unit=C.MM3),
            hd.sr.Measurement(name=C.VOLUME_PRIOR, value=round(float(lc.volume_prior_mm3 or 0.0), 3),
                              unit=C.MM3),
        ],
        qualitative_evaluations=[_status(lc)],
    )
    _add(group, hd.sr.TextContentItem(name=C.LESION_IDENTIFIER, value=str(lc.lesion_id),
                                      relationship_type=_CONTAINS))
    return group


def _change_group(change: ChangeReport, job_key: str,
                  algo: hd.sr.AlgorithmIdentification) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The "MS lesion change" group: the comparison's numbers, or why there are none."""
    measurements: list[hd.sr.Measurement] = []
    if change.comparable:
        for name, n in ((C.NUMBER_NEW, change.n_new), (C.NUMBER_ENLARGING, change.n_enlarging),
                        (C.NUMBER_SHRINKING, change.n_shrinking), (C.NUMBER_VANISHED, change.n_vanished)):
            measurements.append(hd.sr.Measurement(name=name, value=int(n), unit=C.LESIONS_UNIT))
        measurements += [
            hd.sr.Measurement(name=C.VOLUME_PRIOR, value=round(float(change.total_volume_prior_mm3), 3),
                              unit=C.MM3, derivation=C.TOTAL),
            hd.sr.Measurement(name=C.VOLUME, value=round(float(change.total_volume_now_mm3), 3),
                              unit=C.MM3, derivation=C.TOTAL),
        ]
        if change.interval_days is not None:
            measurements.append(hd.sr.Measurement(name=C.INTERVAL, value=int(change.interval_days),
                                                  unit=C.DAYS))
        if change.registration_head_dice is not None:
            measurements.append(hd.sr.Measurement(
                name=C.REGISTRATION_DICE, value=round(float(change.registration_head_dice), 4),
                unit=C.NO_UNITS))
        evaluations = [hd.sr.QualitativeEvaluation(C.COMPARISON_DONE, C.YES),
                       hd.sr.QualitativeEvaluation(C.NEW_ACTIVITY, C.YES if change.activity else C.NO)]
    else:
        evaluations = [hd.sr.QualitativeEvaluation(C.COMPARISON_DONE, C.NOT_PERFORMED)]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derive_uid(job_key, "change"), identifier=CHANGE_TRACKING_ID),
        finding_type=C.LESION_TYPE,
        finding_category=C.LESION_CATEGORY,
        algorithm_id=algo,
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
    )
    if not change.comparable:
        _add(group, hd.sr.TextContentItem(
            name=C.COMMENT, value=f"No comparable prior: {change.reason or 'no reason given'}"[:1024],
            relationship_type=_CONTAINS))
    if change.prior_study_uid:
        _add(group, hd.sr.UIDRefContentItem(name=C.STUDY_INSTANCE_UID, value=change.prior_study_uid,
                                            relationship_type=_CONTAINS))
    if re.fullmatch(r"\d{8}", change.prior_study_date or ""):
        _add(group, hd.sr.DateContentItem(name=C.STUDY_DATE, value=change.prior_study_date,
                                          relationship_type=_CONTAINS))
    if change.prior_accession:
        _add(group, hd.sr.TextContentItem(name=C.ACCESSION_NUMBER, value=change.prior_accession[:1024],
                                          relationship_type=_CONTAINS))
    return group
