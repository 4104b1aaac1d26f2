"""The follow-up step of the ``ms-lesions`` pipeline: the study compared with its prior.

Runs in the worker process (it may segment the prior with the job's model). ``job["prior"]`` is
what :class:`dicom_node.retrieve.prior.PriorFetcher` found: the prior's spooled inputs, or the
reason there is none. The answer is an :class:`ai.types.ChangeReport`.

The prior's lesions and their tracking identifiers/UIDs (which the follow-up's SR continues) come
from, in this order:

1. the node's own earlier result of the prior (:func:`reused_prior`: same model version, same
   lesion rule (threshold, sizes, 3D growth) and FLAIR series; nothing is segmented again);
2. else the prior is segmented again with the job's model, and the tracking comes from the
   newest SR the node wrote into the prior study that the fetcher found at the PACS
   (``prior["own_reports"]``, :func:`prior_report_tracking`), when that SR fits: made by the same
   model version on the same FLAIR series, and listing exactly the lesions found now (the same
   labels, each with the same volume and the same FLAIR slice through its centroid; inference is
   deterministic, so the same model on the same images gives the same lesions). A lesion in the
   SR is identified by its label: the "Lesion Identifier" item of a report with a comparison,
   else the number of its "Lesion N" tracking identifier. Lesions are not matched by position
   across model versions: a different segmentation would hand a UID to a lesion that is not the
   one the radiologist tracked;
3. else the prior's lesions get no tracking UIDs of their own (the follow-up's lesions get new
   ones). Each refused SR gets a log line that says why.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dicom_node.run.options import PipelineOptions

if TYPE_CHECKING:
    from dicom_node.run.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["compare_with_prior", "reused_prior", "prior_report_tracking"]


def reused_prior(prior: dict[str, Any], model_version: str,
                 lesion_rule: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The node's own earlier result of the prior study, when it can stand for segmenting the
    prior again: same model version, same lesion rule (:meth:`PipelineOptions.lesion_rule`; a
    result that records none, or another, was cut out differently), same FLAIR series, labels,
    probabilities and the tracking UIDs its report carried kept."""
    d = prior.get("reuse_result_dir")
    if not d:
        return None
    from ai.types import Lesion

    d = Path(d)
    try:
        res = json.loads((d / "result.json").read_text())
        if (res.get("model", {}).get("version") != model_version
                or res.get("flair_series_uid") != (prior.get("series") or {}).get("flair")):
            return None
        if lesion_rule is not None and res.get("lesion_rule") != lesion_rule:
            log.info("prior result in %s not reused: lesion rule %s, this job's %s", d,
                     res.get("lesion_rule"), lesion_rule)
            return None
        labels = np.load(d / "labels.npz")["labels"]
        prob = np.load(d / "probability.npz")["probability"].astype(np.float32) / 255.0
        lesions = [Lesion(**les) for les in res.get("lesions", [])]
        tracking = {int(k): (str(v[0]), str(v[1])) for k, v in res["tracking"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("prior result in %s not reusable: %s", d, exc)
        return None
    return {"labels": labels, "probability": prob, "lesions": lesions, "tracking": tracking}


def _report_fits(rep: dict[str, Any], model_version: str, flair_series: str, flair: Volume,
                 lesions: list[Any]) -> str:
    """Why the SR ``rep`` (:func:`read_report`) cannot give the tracking of ``lesions`` (the
    prior segmented now on ``flair``); "" when it can."""
    made_by = (rep.get("algorithm") or {}).get("version")
    if made_by != (model_version or "unknown")[:64]:
        return f"made by model version {made_by}, not {model_version}"
    if flair_series not in rep.get("evidence_series", []):
        return f"it was not made on the prior's FLAIR series {flair_series}"
    theirs = {les["id"]: les for les in rep.get("lesions", [])}
    ours = {les.id: les for les in lesions}
    if set(theirs) != set(ours):
        return (f"it lists {len(theirs)} lesion(s), the prior segmented now has {len(ours)} "
                f"(labels {sorted(map(str, set(theirs) ^ set(ours)))[:5]} differ)")
    for lid, les in sorted(ours.items()):
        t = theirs[lid]
        if t.get("volume_mm3") is None or abs(float(t["volume_mm3"]) - float(les.volume_mm3)) > 1e-3:
            return (f"lesion {lid}: {t.get('volume_mm3')} mm3 in the SR, "
                    f"{float(les.volume_mm3):.3f} mm3 now")
        k = flair.slice_through(les.centroid_index[0])
        if t.get("source_sop_instance_uid") != flair.slice_refs[k][0]:
            return f"lesion {lid}: the SR names another FLAIR slice through its centroid"
        if not t.get("tracking_uid"):
            return f"lesion {lid} has no tracking UID in the SR"
    return ""


def prior_report_tracking(prior: dict[str, Any], model_version: str, flair: Volume,
                          lesions: list[Any], job_id: str = "") -> dict[int, tuple[str, str]]:
    """Prior lesion id -> (tracking UID, tracking identifier) from the newest of the node's own SRs
    of the prior (``prior["own_reports"]``, spool paths, newest first) that fits the prior as
    segmented now (``flair``, ``lesions``; see the module docstring); ``{}`` when none does, each
    refusal logged with its reason. Never raises."""
    import pydicom

    from dicom_node.encode.sr_read import read_report

    for path in prior.get("own_reports") or []:
        try:
            ds = pydicom.dcmread(path)
            rep = read_report(ds)
            sop = str(ds.SOPInstanceUID)
        except Exception as exc:  # noqa: BLE001 - an unreadable SR only costs the tracking
            log.warning("job %s: the node's SR %s of prior %s is unreadable (%s: %s); not used",
                        job_id, path, prior.get("study_uid", ""), type(exc).__name__, exc)
            continue
        why = _report_fits(rep, model_version, str((prior.get("series") or {}).get("flair", "")),
                           flair, lesions)
        if why:
            log.info("job %s: the node's SR %s of prior %s not used for tracking: %s", job_id,
                     sop, prior.get("study_uid", ""), why)
            continue
        log.info("job %s: tracking UIDs of %d prior lesion(s) taken from the node's SR %s of "
                 "prior %s", job_id, len(lesions), sop, prior.get("study_uid", ""))
        return {int(les["id"]): (str(les["tracking_uid"]), str(les["tracking_id"]))
                for les in rep["lesions"]}
    if prior.get("own_reports"):
        log.info("job %s: no SR of the node fits prior %s: its lesions get new tracking UIDs",
                 job_id, prior.get("study_uid", ""))
    return {}


def compare_with_prior(job: dict[str, Any], flair: Volume, result: Any, seg: Any,
                        opts: PipelineOptions) -> Any:
    """The follow-up compared with ``job["prior"]`` (:class:`ai.types.ChangeReport`)."""
    from ai.change import change_report, comparable, compare, register
    from ai.types import ChangeReport
    from dicom_node.run.volume import VolumeError, load_series

    prior = job["prior"]
    meta = {"prior_study_uid": prior.get("study_uid", ""),
            "prior_study_date": prior.get("study_date", ""),
            "prior_accession": prior.get("accession", "")}
    if prior.get("reason"):
        return ChangeReport(False, reason=prior["reason"], **meta)
    try:
        pflair = load_series([Path(p) for p in prior["inputs"]["flair"]])
    except (VolumeError, KeyError) as exc:
        return ChangeReport(False, reason=f"prior FLAIR refused: {exc}", **meta)
    why = comparable(pflair.image, flair.image)
    if why:
        return ChangeReport(False, reason=why, **meta)
    reg = register(pflair.image, flair.image)
    if not reg.ok:
        return ChangeReport(False, reason=reg.reason, registration_head_dice=round(reg.head_dice, 4),
                            **meta)
    reused = reused_prior(prior, result.model_version, opts.lesion_rule())
    prior_reused = reused is not None
    if reused is None:
        pt1 = None
        if prior["inputs"].get("t1"):
            try:
                pt1 = load_series([Path(p) for p in prior["inputs"]["t1"]]).image
            except VolumeError as exc:
                log.warning("job %s: prior T1 refused (%s); prior segmented FLAIR-only",
                            job["job_id"], exc)
        pres = seg.segment(pflair.image, pt1, threshold=opts.threshold, min_voxels=opts.min_voxels,
                           min_volume_mm3=opts.min_volume_mm3, grow=opts.thin_slice_grow)
        reused = {"labels": pres.labels, "probability": pres.probability, "lesions": pres.lesions,
                  "tracking": prior_report_tracking(prior, pres.model_version, pflair,
                                                    pres.lesions, job["job_id"])}
    ch = compare(reused["labels"], pflair.image, result.labels, flair.image, reg.transform,
                 prior_probability=reused["probability"], follow_probability=result.probability)
    follow_date = str(flair.datasets[0].get("StudyDate", "") or "")
    return change_report(ch, result.lesions, reused["lesions"], prior_tracking=reused["tracking"],
                         follow_study_date=follow_date, head_dice=reg.head_dice,
                         prior_reused=prior_reused, **meta)
