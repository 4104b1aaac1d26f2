"""The ``ms-lesions`` pipeline: spool files in, DICOM result files out.

This module runs inside the runner's worker process (see :mod:`dicom_node.run.runner`), which is the
only place where the node touches torch: :mod:`ai` is imported lazily here, so the receiving side
of the node never loads it. Input and output are plain data (paths and dicts) so they cross the
process boundary cheaply.

Steps and the timings they record (seconds, in ``result["timings_s"]``):

``load``
    FLAIR (and T1) volumes from the spooled instances (:func:`dicom_node.run.volume.load_series`).
``preprocess``, ``inference``, ``postprocess``
    As reported by :class:`ai.infer.Segmenter`.
``prior``
    With ``job["prior"]`` (a prior study found and retrieved by
    :class:`dicom_node.retrieve.prior.PriorFetcher`): loading the prior FLAIR, the comparability
    check, rigid registration with its quality check, the prior's lesions (reused from the
    node's own earlier result of that study when its model and FLAIR are the same, else
    segmented now with the same model) and lesion matching (:mod:`ai.change`). The result is a
    :class:`ai.types.ChangeReport`; without a comparable prior it says why, and only the
    single-study result is reported.
``encode``
    DICOM-SEG and TID 1500 SR (:mod:`dicom_node.encode`); with a comparable prior also the
    change SEG (New / Enlarging / Stable / Shrinking), and the SR carries the comparison.
``overlay``
    The overlay series, built by the follow-up step :func:`run_overlay` once SEG and SR are
    queued for sending (they are what the radiologist waits for).

All output UIDs derive from ``job_key`` (input study, series and instance set, plus the model
version), so running the same job twice writes the same SOP Instance UIDs: the outbox and the
PACS then see one object, not two.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dicom_node.receive.spool import save_dataset
from dicom_node.run.followup import compare_with_prior
from dicom_node.run.options import PipelineOptions

if TYPE_CHECKING:
    from dicom_node.run.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["PipelineError", "run_ms_lesions", "PIPELINES", "FOLLOW_UPS", "routable_pipelines"]

_SEGMENTERS: dict[str, Any] = {}
# The FLAIR of this worker's last job, kept for its overlay step (same worker process as a rule:
# the step then does not read and decode the series again; another process reloads it).
_LAST_FLAIR: dict[str, Volume] = {}


class PipelineError(RuntimeError):
    """A job cannot produce a result; the message is the reason shown to users."""


def _segmenter(device: str, opts: PipelineOptions) -> Any:
    """One model per worker process, device and inference setting, loaded on first use.

    ``precision``: ``auto`` (CPU bf16 where the CPU has it natively, else fp32; CUDA fp16),
    ``fp32`` or ``bf16``."""
    weights, tta, precision = opts.weights, opts.tta, opts.precision
    key = f"{device}:{weights}:{tta}:{precision}"
    if key not in _SEGMENTERS:
        from ai.infer import Segmenter, bf16_for

        _SEGMENTERS[key] = Segmenter(weights=weights, device=device, tta=tta, bf16=bf16_for(precision))
    return _SEGMENTERS[key]


def warm_up(device: str, opts: PipelineOptions) -> str:
    """Load the model and exercise the encoders once (highdicom loads its code tables on first
    use, ~0.7 s), so the first study pays neither; return the model version."""
    import tempfile

    import SimpleITK as sitk

    from dicom_node.devtools.synthetic import blob_labels, result_from_labels
    from dicom_node.devtools.wrap import write_mr_series
    from dicom_node.encode.seg import build_seg
    from dicom_node.encode.sr import build_sr
    from dicom_node.run.volume import load_series

    version = str(_segmenter(device, opts).model_version)
    img = sitk.GetImageFromArray(np.full((4, 16, 16), 100.0, np.float32))
    with tempfile.TemporaryDirectory(prefix="dicom-node-warmup-") as tmp:
        vol = load_series(write_mr_series(img, Path(tmp), study_uid="2.25.1", series_number=1,
                                          series_description="warm-up", contrast="FLAIR"))
        res = result_from_labels(blob_labels((4, 16, 16), [((2, 8, 8), 2.0)]), vol.image)
        seg = build_seg(res, vol, job_key="warm-up")
        build_sr(res, vol, seg, job_key="warm-up")
    return version


#: a FLAIR whose slices are at least this thick (mm) and not axial gets :func:`slice_plane_note`
THICK_SLICE_MM = 2.0


def slice_plane_note(image: Any) -> str | None:
    """The caveat the report carries for a FLAIR of thick coronal or sagittal slices, else None.

    The model reads axial slices; a thick non-axial series reaches it blurred within each axial
    slice, which it never saw in training. On one brain cut into thick slabs it drew more false
    lesions on sagittal slabs than on axial ones (ai/weights/MODEL_CARD.md, "Slice orientation").
    The default routing prefers an axial FLAIR among 2D ones (config/routing.yaml)."""
    from ai.registration import orientation_class

    plane, thick = orientation_class(image), float(image.GetSpacing()[2])
    if plane == "axial" or thick < THICK_SLICE_MM:
        return None
    return (f"FLAIR of {plane} slices {thick:.1f} mm thick: the model reads axial slices and was "
            f"validated on axial 2D and 3D FLAIR; on thick {plane} slices expect more false "
            "lesions (model card: Slice orientation). An axial or 3D FLAIR is preferred.")


def _write_dataset(ds: Any, path: Path) -> Path:
    # Atomic, not fsync-ed: the runner copies every result into the durable outbox before the
    # job is marked done; a crash before that re-runs the job, which rewrites these files.
    return save_dataset(ds, path, durable=False)


def run_ms_lesions(job: dict[str, Any]) -> dict[str, Any]:
    """Run the MS lesion pipeline for one job.

    Parameters
    ----------
    job : dict
        ``job_id``, ``job_key``, ``inputs`` (``{role: [paths]}``, role ``flair`` required,
        ``t1`` optional), ``out_dir``, ``device`` (auto|cpu|cuda), and optional ``options``
        (:meth:`PipelineOptions.as_dict <dicom_node.run.options.PipelineOptions.as_dict>`;
        absent keys take the defaults).

    Returns
    -------
    dict
        ``files``: ``[{"path", "kind", "sop_instance_uid", "overlay"}]``; ``summary`` (study
        summary), ``lesions`` (list of dicts), ``model``, ``timings_s``, and ``followup``
        (the name of the step that builds the overlay) when the overlay is wanted.

    Raises
    ------
    PipelineError
        With a user-facing reason (missing FLAIR, volume refused, ...).
    """

    opts = PipelineOptions.from_dict(job.get("options"))
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    inputs: dict[str, list[str]] = job["inputs"]
    if not inputs.get("flair"):
        raise PipelineError("no FLAIR series among the job's inputs")

    t0 = time.perf_counter()
    notes: list[str] = []
    alternates: dict[str, list[list[str]]] = job.get("alternates") or {}
    flair, refused = _load_first([inputs["flair"], *alternates.get("flair", [])])
    if flair is None:
        raise PipelineError(f"FLAIR series refused: {refused[0]}"
                            + (f" (and {len(refused) - 1} other FLAIR candidate(s))"
                               if len(refused) > 1 else ""))
    if refused:  # the preferred FLAIR could not be read; the next candidate by the rule is used
        log.warning("job %s: preferred FLAIR series refused (%s); using series %s", job["job_id"],
                    refused[0], flair.series_uid)
        notes.append(f"preferred FLAIR series not used ({refused[0][:200]}); next candidate "
                     f"{flair.series_uid} used")
    caveat = slice_plane_note(flair.image)
    if caveat:
        log.warning("job %s: FLAIR series %s: %s", job["job_id"], flair.series_uid, caveat)
        notes.append(caveat)
    _LAST_FLAIR.clear()
    if opts.overlay:
        _LAST_FLAIR[job["job_id"]] = flair
    t1_vol = None
    if inputs.get("t1"):
        t1_vol, refused = _load_first([inputs["t1"], *alternates.get("t1", [])])
        if refused:
            # T1 is optional (e.g. its pixels do not decode): another qualifying T1, else
            # FLAIR-only; said in the log, the job's reason and the SR.
            what = (f"next candidate {t1_vol.series_uid} used" if t1_vol is not None
                    else "FLAIR-only analysis")
            log.warning("job %s: T1 series refused (%s); %s", job["job_id"], refused[0], what)
            notes.append(f"T1 series not used ({refused[0][:200]}); {what}")
    timings["load"] = time.perf_counter() - t0

    seg = _segmenter(job.get("device", "auto"), opts)
    result = seg.segment(
        flair.image,
        t1_vol.image if t1_vol is not None else None,
        threshold=opts.threshold,
        min_voxels=opts.min_voxels,
        min_volume_mm3=opts.min_volume_mm3,
        grow=opts.thin_slice_grow,
    )
    for k, v in (result.timings_s or {}).items():
        timings[k] = float(v)
    # Same input + same model -> same UIDs (exactly once in the PACS); a new model -> new ones.
    key = f'{job["job_key"]}:{result.model_version}'

    change = None
    if job.get("prior") is not None:
        t0 = time.perf_counter()
        try:
            change = compare_with_prior(job, flair, result, seg, opts)
        except Exception as exc:  # a comparison never fails the follow-up's result
            log.exception("job %s: comparison with the prior failed", job["job_id"])
            p = job["prior"]
            change = _without_comparison(
                f"comparison with the prior failed: {type(exc).__name__}: {str(exc)[:200]}",
                str(p.get("study_uid", "")), str(p.get("study_date", "")), str(p.get("accession", "")))
        timings["prior"] = time.perf_counter() - t0
        if change.comparable:
            log.info("job %s: compared with prior %s (%s, %s days): %d new, %d enlarging, "
                     "activity %s%s", job["job_id"], change.prior_study_uid, change.prior_study_date,
                     change.interval_days, change.n_new, change.n_enlarging,
                     "yes" if change.activity else "no",
                     " (prior lesions reused)" if change.prior_reused else "")
        else:
            log.info("job %s: no comparable prior: %s", job["job_id"], change.reason)

    t0 = time.perf_counter()
    from dicom_node.encode.seg import build_seg
    from dicom_node.encode.sr import build_sr, lesion_tracking
    files: list[dict[str, Any]] = []
    seg_ds = None
    if result.lesions:  # a SEG without segments is invalid: none is written for 0 lesions
        seg_ds = build_seg(result, flair, job_key=key)
        files.append(_entry("SEG", _write_dataset(seg_ds, out_dir / "seg.dcm"), seg_ds))
        if opts.fractional:  # the probability map as an extra SEG (own UIDs)
            frac = build_seg(result, flair, job_key=key, fractional=True)
            files.append(_entry("SEG", _write_dataset(frac, out_dir / "seg_fractional.dcm"),
                                frac))
    change_seg = None
    if change is not None and change.comparable:
        from dicom_node.encode.change import build_change_seg

        try:
            change_seg = build_change_seg(change, flair, job_key=key, model_name=result.model_name,
                                          model_version=result.model_version)
            sr_ds = build_sr(result, flair, seg_ds, job_key=key, notes=notes, change=change,
                             change_seg=change_seg)
        except Exception as exc:  # the comparison is not reported rather than the study
            log.exception("job %s: the comparison could not be encoded", job["job_id"])
            change, change_seg = _without_comparison(
                f"comparison could not be encoded: {type(exc).__name__}: {str(exc)[:200]}",
                change.prior_study_uid, change.prior_study_date, change.prior_accession), None
        if change_seg is not None:
            files.append(_entry("SEG", _write_dataset(change_seg, out_dir / "seg_change.dcm"),
                                change_seg))
    if change is None or not change.comparable:
        sr_ds = build_sr(result, flair, seg_ds, job_key=key, notes=notes, change=change)
    files.append(_entry("SR", _write_dataset(sr_ds, out_dir / "sr.dcm"), sr_ds))
    tracking = lesion_tracking(result, key, change)
    timings["encode"] = time.perf_counter() - t0

    out = {
        "job_id": job["job_id"],
        "job_key": key,
        "study_uid": flair.study_uid,
        "flair_series_uid": flair.series_uid,
        "t1_series_uid": t1_vol.series_uid if t1_vol is not None else None,
        "model": {"name": result.model_name, "version": result.model_version},
        "lesion_rule": opts.lesion_rule(),
        "spacing_mm": list(result.spacing_mm),
        "summary": result.summary.to_dict(),
        "lesions": [les.to_dict() for les in result.lesions],
        "files": files,
        "timings_s": timings,
        "notes": notes,
        "seg_sr_written_at": time.time(),  # wall clock, for end-to-end timing
        # lesion id -> (tracking UID, identifier) as the SR carries them: a later study of the
        # patient reuses them (and the labels and probabilities below) when it compares.
        "tracking": {str(k): list(v) for k, v in tracking.items()},
    }
    if change is not None:
        out["change"] = change.to_dict()
        out["prior_retrieval"] = {k: job["prior"].get(k) for k in ("retrieved", "retrieve_s")}
        if change.change_map is not None:
            np.savez_compressed(out_dir / "change.npz", change_map=change.change_map)
    np.savez_compressed(out_dir / "labels.npz", labels=result.labels)
    np.savez_compressed(out_dir / "probability.npz",
                        probability=np.round(np.clip(result.probability, 0, 1) * 255).astype(np.uint8))
    if opts.overlay:
        # The overlay series is built in a second step, after SEG + SR are on their way.
        out["followup"] = "ms-lesions-overlay"
    _write_json(out, out_dir / "result.json")
    return out


def _without_comparison(reason: str, prior_uid: str, prior_date: str, accession: str) -> Any:
    """"No comparison reported" with the reason, keeping the reference to the prior study."""
    from ai.types import ChangeReport

    return ChangeReport(False, reason=reason, prior_study_uid=prior_uid,
                        prior_study_date=prior_date, prior_accession=accession)


def _load_first(candidates: list[list[str]]) -> tuple[Volume | None, list[str]]:
    """The first candidate series (spool paths) that loads as a volume, and why each one
    before it was refused."""
    from dicom_node.run.volume import VolumeError, load_series

    refused: list[str] = []
    for paths in candidates:
        if not paths:
            continue
        try:
            return load_series([Path(p) for p in paths]), refused
        except VolumeError as exc:
            refused.append(str(exc))
    return None, refused


def run_overlay(job: dict[str, Any]) -> dict[str, Any]:
    """Second step of ``ms-lesions``: the overlay series from the saved lesion labels.

    Returns the updated result (``files`` gains the overlay images, ``timings_s`` gains
    ``overlay``).
    """
    from ai.types import Lesion, SegmentationResult, StudySummary
    from dicom_node.encode.overlay import build_overlay
    from dicom_node.run.volume import load_series

    t0 = time.perf_counter()
    out_dir = Path(job["out_dir"])
    res = json.loads((out_dir / "result.json").read_text())
    flair = _LAST_FLAIR.pop(job["job_id"], None) or load_series([Path(p) for p in job["inputs"]["flair"]])
    labels = np.load(out_dir / "labels.npz")["labels"]
    result = SegmentationResult(
        labels=labels, probability=np.zeros(labels.shape, np.float32),
        lesions=[Lesion(**les) for les in res["lesions"]],
        summary=StudySummary(**res["summary"]), model_name=res["model"]["name"],
        model_version=res["model"]["version"], spacing_mm=tuple(res["spacing_mm"]))
    files = [f for f in res["files"] if f["kind"] != "OVERLAY"]
    change = None
    if res.get("change"):
        from ai.types import ChangeReport, LesionChange

        d = dict(res["change"])
        d["lesions"] = [LesionChange(**x) for x in d.get("lesions", [])]
        cm = out_dir / "change.npz"
        d["change_map"] = np.load(cm)["change_map"] if cm.exists() else None
        change = ChangeReport(**d)
    for i, ds in enumerate(build_overlay(result, flair, job_key=res["job_key"], change=change)):
        files.append(_entry("OVERLAY", _write_dataset(ds, out_dir / f"overlay_{i:04d}.dcm"), ds,
                            overlay=True))
    res["files"] = files
    res["timings_s"]["overlay"] = time.perf_counter() - t0
    res.pop("followup", None)
    _write_json(res, out_dir / "result.json")
    return res


def _entry(kind: str, path: Path, ds: Any, overlay: bool = False) -> dict[str, Any]:
    """A result file with the UIDs the outbox needs (so that it copies the file, unread)."""
    return {"kind": kind, "overlay": overlay, "path": str(path),
            "sop_instance_uid": str(ds.SOPInstanceUID), "sop_class_uid": str(ds.SOPClassUID),
            "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID)}


def _write_json(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


#: The one pipeline registry: pipelines by the name routing.yaml's ``pipeline:`` uses, and the
#: follow-up steps a result names (``followup``), which rules cannot name (:data:`FOLLOW_UPS`).
PIPELINES = {"ms-lesions": run_ms_lesions, "ms-lesions-overlay": run_overlay}
FOLLOW_UPS = frozenset({"ms-lesions-overlay"})


def routable_pipelines() -> list[str]:
    """Names a routing rule may use: the registry without its follow-up steps."""
    return [name for name in PIPELINES if name not in FOLLOW_UPS]
