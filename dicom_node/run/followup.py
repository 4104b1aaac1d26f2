"""The follow-up step of the ``ms-lesions`` pipeline: the study compared with its prior.

Runs in the worker process (it may segment the prior with the job's model). ``job["prior"]`` is
what :class:`dicom_node.retrieve.prior.PriorFetcher` found: the prior's spooled inputs, or the
reason there is none. The answer is an :class:`ai.types.ChangeReport`.
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

__all__ = ["compare_with_prior", "reused_prior"]


def reused_prior(prior: dict[str, Any], model_version: str) -> dict[str, Any] | None:
    """The node's own earlier result of the prior study, when it can stand for segmenting the
    prior again: same model version, same FLAIR series, labels, probabilities and the tracking
    UIDs its report carried kept."""
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
        labels = np.load(d / "labels.npz")["labels"]
        prob = np.load(d / "probability.npz")["probability"].astype(np.float32) / 255.0
        lesions = [Lesion(**les) for les in res.get("lesions", [])]
        tracking = {int(k): (str(v[0]), str(v[1])) for k, v in res["tracking"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("prior result in %s not reusable: %s", d, exc)
        return None
    return {"labels": labels, "probability": prob, "lesions": lesions, "tracking": tracking}


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
    reused = reused_prior(prior, result.model_version)
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
                           min_volume_mm3=opts.min_volume_mm3)
        reused = {"labels": pres.labels, "probability": pres.probability, "lesions": pres.lesions,
                  "tracking": {}}
    ch = compare(reused["labels"], pflair.image, result.labels, flair.image, reg.transform,
                 prior_probability=reused["probability"], follow_probability=result.probability)
    follow_date = str(flair.datasets[0].get("StudyDate", "") or "")
    return change_report(ch, result.lesions, reused["lesions"], prior_tracking=reused["tracking"],
                         follow_study_date=follow_date, head_dice=reg.head_dice,
                         prior_reused=prior_reused, **meta)
