"""The ``ms-lesions`` pipeline: spool files in, DICOM result files out.

This module runs inside the runner's worker process (see :mod:`dicom_node.runner`), which is the
only place where the node touches torch: :mod:`ai` is imported lazily here, so the receiving side
of the node never loads it. Input and output are plain data (paths and dicts) so they cross the
process boundary cheaply.

Steps and the timings they record (seconds, in ``result["timings_s"]``):

``load``
    FLAIR (and T1) volumes from the spooled instances (:func:`dicom_node.volume.load_series`).
``preprocess``, ``inference``, ``postprocess``
    As reported by :class:`ai.infer.Segmenter`.
``encode``
    DICOM-SEG, TID 1500 SR and the overlay series (:mod:`dicom_node.encode`).

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
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["PipelineError", "run_ms_lesions", "PIPELINES"]

_SEGMENTERS: dict[str, Any] = {}


class PipelineError(RuntimeError):
    """A job cannot produce a result; the message is the reason shown to users."""


def _segmenter(device: str, weights: str | None) -> Any:
    """One model per worker process and device, loaded on first use."""
    key = f"{device}:{weights}"
    if key not in _SEGMENTERS:
        from ai.infer import Segmenter

        _SEGMENTERS[key] = Segmenter(weights=weights, device=device)
    return _SEGMENTERS[key]


def _write_dataset(ds: Any, path: Path) -> Path:
    tmp = path.with_suffix(".tmp")
    ds.save_as(tmp, enforce_file_format=True)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def run_ms_lesions(job: dict[str, Any]) -> dict[str, Any]:
    """Run the MS lesion pipeline for one job.

    Parameters
    ----------
    job : dict
        ``job_id``, ``job_key``, ``inputs`` (``{role: [paths]}``, role ``flair`` required,
        ``t1`` optional), ``out_dir``, ``device`` (auto|cpu|cuda), and optional ``options``:
        ``threshold``, ``min_voxels``, ``min_volume_mm3``, ``fractional`` (bool: also send
        the probability map as a FRACTIONAL SEG),
        ``overlay`` (bool), ``weights`` (path or None for the shipped model).

    Returns
    -------
    dict
        ``files``: ``[{"path", "kind", "sop_instance_uid", "overlay"}]``; ``summary`` (study
        summary), ``lesions`` (list of dicts), ``model`` and ``timings_s``.

    Raises
    ------
    PipelineError
        With a user-facing reason (missing FLAIR, volume refused, ...).
    """
    from .volume import VolumeError, load_series

    opts = dict(job.get("options") or {})
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    inputs: dict[str, list[str]] = job["inputs"]
    if not inputs.get("flair"):
        raise PipelineError("no FLAIR series among the job's inputs")

    t0 = time.perf_counter()
    try:
        flair = load_series([Path(p) for p in inputs["flair"]])
    except VolumeError as exc:
        raise PipelineError(f"FLAIR series refused: {exc}") from exc
    t1_vol = None
    if inputs.get("t1"):
        try:
            t1_vol = load_series([Path(p) for p in inputs["t1"]])
        except VolumeError as exc:
            # T1 is optional: go on FLAIR-only and say so.
            log.warning("job %s: T1 series refused (%s); running FLAIR-only", job["job_id"], exc)
    timings["load"] = time.perf_counter() - t0

    seg = _segmenter(job.get("device", "auto"), opts.get("weights"))
    result = seg.segment(
        flair.image,
        t1_vol.image if t1_vol is not None else None,
        threshold=float(opts.get("threshold", 0.5)),
        min_voxels=int(opts.get("min_voxels", 3)),
        min_volume_mm3=float(opts.get("min_volume_mm3", 10.0)),
    )
    for k, v in (result.timings_s or {}).items():
        timings[k] = float(v)

    t0 = time.perf_counter()
    from .encode.overlay import build_overlay
    from .encode.seg import build_seg
    from .encode.sr import build_sr

    # Same input + same model -> same UIDs (exactly once in the PACS); a new model -> new ones.
    key = f'{job["job_key"]}:{result.model_version}'
    files: list[dict[str, Any]] = []
    seg_ds = None
    if result.lesions:  # a SEG without segments is invalid: none is written for 0 lesions
        seg_ds = build_seg(result, flair, job_key=key)
        files.append({"kind": "SEG", "overlay": False,
                      "path": str(_write_dataset(seg_ds, out_dir / "seg.dcm")),
                      "sop_instance_uid": str(seg_ds.SOPInstanceUID)})
        if opts.get("fractional"):  # the probability map as an extra SEG (own UIDs)
            frac = build_seg(result, flair, job_key=key, fractional=True)
            files.append({"kind": "SEG", "overlay": False,
                          "path": str(_write_dataset(frac, out_dir / "seg_fractional.dcm")),
                          "sop_instance_uid": str(frac.SOPInstanceUID)})
    sr_ds = build_sr(result, flair, seg_ds, job_key=key)
    files.append({"kind": "SR", "overlay": False,
                  "path": str(_write_dataset(sr_ds, out_dir / "sr.dcm")),
                  "sop_instance_uid": str(sr_ds.SOPInstanceUID)})
    if opts.get("overlay", True):
        for i, ds in enumerate(build_overlay(result, flair, job_key=key)):
            files.append({"kind": "OVERLAY", "overlay": True,
                          "path": str(_write_dataset(ds, out_dir / f"overlay_{i:04d}.dcm")),
                          "sop_instance_uid": str(ds.SOPInstanceUID)})
    timings["encode"] = time.perf_counter() - t0

    out = {
        "job_id": job["job_id"],
        "study_uid": flair.study_uid,
        "flair_series_uid": flair.series_uid,
        "t1_series_uid": t1_vol.series_uid if t1_vol is not None else None,
        "model": {"name": result.model_name, "version": result.model_version},
        "summary": result.summary.to_dict(),
        "lesions": [les.to_dict() for les in result.lesions],
        "files": files,
        "timings_s": timings,
    }
    (out_dir / "result.json").write_text(json.dumps(out, indent=2, default=float))
    return out


#: Pipelines by the name used in routing.yaml ``pipeline:``.
PIPELINES = {"ms-lesions": run_ms_lesions}
