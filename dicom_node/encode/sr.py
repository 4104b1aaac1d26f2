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
"""
from __future__ import annotations

import logging
from typing import cast

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from ai.types import LOCATIONS, SegmentationResult
from dicom_node import __version__
from dicom_node.encode import codes as C
from dicom_node.encode.header import ensure_frame_of_reference, fill_type2
from dicom_node.encode.seg import MANUFACTURER, MODEL_NAME, RESEARCH_NOTE, segment_plan
from dicom_node.encode.uids import derive_uid
from dicom_node.run.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["build_sr", "SUMMARY_TRACKING_ID"]

SUMMARY_TRACKING_ID = "MS lesion summary"


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
        "Comment" (DCM 121106) at the end of the report's root container.
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

    groups: list = []
    for les in sorted(result.lesions, key=lambda les: les.id):
        assert seg is not None  # lesions without a SEG were refused above
        k = min(max(int(round(les.centroid_index[0])), 0), flair.n_slices - 1)
        ref = hd.sr.ReferencedSegment(  # built directly: from_segmentation() fails on 1-segment SEGs
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=seg_of[les.id],
            source_images=[_source_image_for_lesion(flair, k)],
        )
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=derive_uid(job_key, "lesion", str(les.id)),
                identifier=f"Lesion {les.id}",
            ),
            referenced_segment=ref,
            finding_type=C.LESION_TYPE,
            finding_category=C.LESION_CATEGORY,
            finding_sites=[hd.sr.FindingSite(C.LOCATION_CODES[les.location])],
            measurements=[
                hd.sr.Measurement(name=C.VOLUME, value=round(float(les.volume_mm3), 3), unit=C.MM3),
                hd.sr.Measurement(name=C.MEAN_PROBABILITY, value=round(float(les.mean_probability), 4),
                                  unit=C.NO_UNITS),
                hd.sr.Measurement(name=C.MAX_PROBABILITY, value=round(float(les.max_probability), 4),
                                  unit=C.NO_UNITS),
            ],
        ))

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

    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=C.BRAIN_MRI,
        imaging_measurements=groups,
        referenced_images=list(flair.datasets) if image_library else None,
    )
    evidence = list(flair.datasets) + ([seg] if seg is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=derive_uid(job_key, "sr-series"),
        series_number=series_number,
        sop_instance_uid=derive_uid(job_key, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=f"MS lesion report - {RESEARCH_NOTE}",
        manufacturer_model_name=MODEL_NAME,
        software_versions=__version__,
        content_qualification="RESEARCH",
        coding_schemes=C.coding_schemes(),
    )
    for note in notes or []:
        sr.ContentSequence.append(hd.sr.TextContentItem(
            name=hd.sr.CodedConcept("121106", "DCM", "Comment"), value=note[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return sr


def read_report(sr: Dataset) -> dict:
    """Parse an SR written by :func:`build_sr` back into plain values (tests, status, QA).

    Returns
    -------
    dict
        ``{"lesions": [{"id", "tracking_uid", "volume_mm3", "mean_probability", "max_probability",
        "location", "segment_number", "seg_sop_instance_uid"}], "summary": {"lesion_count",
        "total_volume_mm3", "low_confidence_count", "confidence_cut", "counts_by_location",
        "volume_by_location_mm3", "load_category", "dis_met"}}``
    """
    report = hd.sr.MeasurementReport.from_sequence([sr])
    loc_by_code = {c.value: loc for loc, c in C.LOCATION_CODES.items()}
    load_by_code = {c.value: k for k, c in C.LOAD_VALUES.items()}
    lesions = []
    for g in report.get_volumetric_roi_measurement_groups():
        ident = str(g.tracking_identifier)
        vol = [m.value for m in g.get_measurements(name=C.VOLUME)]
        pmean = [m.value for m in g.get_measurements(name=C.MEAN_PROBABILITY)]
        pmax = [m.value for m in g.get_measurements(name=C.MAX_PROBABILITY)]
        sites = [loc_by_code.get(fs.value.value) for fs in g.finding_sites]
        ref = g.referenced_segment
        lesions.append({
            "id": int(ident.split()[-1]) if ident.split()[-1].isdigit() else ident,
            "tracking_uid": str(g.tracking_uid),
            "volume_mm3": float(vol[0]) if vol else None,
            "mean_probability": float(pmean[0]) if pmean else None,
            "max_probability": float(pmax[0]) if pmax else None,
            "location": sites[0] if sites else None,
            "segment_number": (int(ref.referenced_segment_numbers[0])
                               if ref and ref.referenced_segment_numbers else None),
            "seg_sop_instance_uid": str(ref.referenced_sop_instance_uid) if ref else None,
        })
    summary: dict = {"counts_by_location": {}, "volume_by_location_mm3": {}}
    for summary_group in report.get_image_measurement_groups(tracking_uid=None):
        if str(summary_group.tracking_identifier) != SUMMARY_TRACKING_ID:
            continue
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
    return {"lesions": lesions, "summary": summary}
