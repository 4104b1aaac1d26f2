"""Orthanc -> MS lesion AI node autorouting, for Orthanc's Python plugin (research use only).

Same behaviour and settings as ``autoroute.lua`` (use one of the two, not both), plus retries:
a series whose C-STORE to the node fails (node down, network) is retried with exponential
backoff (``RetryDelays`` seconds), so an outage of the node loses nothing.

Enable it (Debian: ``apt-get install orthanc-python``) with, in the Orthanc configuration::

    "Plugins": ["/usr/share/orthanc/plugins"],          // or the path of libOrthancPython.so
    "PythonScript": "/path/to/orthanc/autoroute.py",
    "DicomModalities": {"ainode": ["AINODE", "10.0.0.5", 11112]},
    "StableAge": 20,
    "AiNodeAutoroute": {"Target": "ainode"}               // optional, see autoroute.lua

Extra setting: ``"RetryDelays": [10, 30, 60, 300, 900]`` (seconds between attempts).
"""

from __future__ import annotations

import json
import queue
import threading
import time

import orthanc  # provided by the Orthanc Python plugin

DEFAULTS = {
    "Target": "ainode",
    "Modalities": ["MR"],
    "SkipDescriptions": ["RESEARCH USE", "AI NODE"],
    "SkipManufacturers": ["MS-DICOM-NODE"],
    "SkipFromAets": [],
    "Enabled": True,
    "RetryDelays": [10, 30, 60, 300, 900],
}


def _load_settings() -> dict:
    settings = dict(DEFAULTS)
    try:
        config = json.loads(orthanc.GetConfiguration())
        settings.update(config.get("AiNodeAutoroute") or {})
    except Exception as exc:  # noqa: BLE001 - never break Orthanc start-up
        orthanc.LogWarning(f"ai-node autoroute: cannot read configuration: {exc}")
    return settings


SETTINGS = _load_settings()
_work: "queue.Queue[tuple[float, str, int]]" = queue.Queue()
_stop = threading.Event()


def _get_json(uri: str):
    return json.loads(orthanc.RestApiGet(uri))


def _upper_list(values) -> list[str]:
    return [str(v).upper() for v in (values or []) if str(v)]


def _target_aet(target: str) -> str | None:
    try:
        return _get_json(f"/modalities/{target}/configuration").get("AET")
    except Exception:  # noqa: BLE001 - best effort: any failure gives the fallback
        try:
            m = json.loads(orthanc.GetConfiguration()).get("DicomModalities", {}).get(target)
            return m[0] if isinstance(m, list) else (m or {}).get("AET")
        except Exception:  # noqa: BLE001 - best effort: any failure gives the fallback
            return None


def skip_reason(series_id: str) -> str | None:
    """Why a stable series is not forwarded, or None when it must be forwarded."""
    if not SETTINGS.get("Enabled", True):
        return "autoroute disabled"
    series = _get_json(f"/series/{series_id}")
    tags = series.get("MainDicomTags", {})
    modality = str(tags.get("Modality", "")).upper()
    if modality not in _upper_list(SETTINGS["Modalities"]):
        return f"modality {modality or '?'} not forwarded"
    desc = str(tags.get("SeriesDescription", "")).upper()
    if any(s in desc for s in _upper_list(SETTINGS["SkipDescriptions"])):
        return "series description marks a node output"
    manu = str(tags.get("Manufacturer", "")).upper()
    if any(s in manu for s in _upper_list(SETTINGS["SkipManufacturers"])):
        return "manufacturer marks a node output"
    instances = series.get("Instances") or []
    if instances:
        try:
            sender = orthanc.RestApiGet(f"/instances/{instances[0]}/metadata/RemoteAET")
            sender = sender.decode() if isinstance(sender, bytes) else str(sender)
        except Exception:  # noqa: BLE001 - best effort: any failure gives the fallback
            sender = ""
        if sender:
            node = (_target_aet(SETTINGS["Target"]) or "").upper()
            if sender.upper() == node or sender.upper() in _upper_list(SETTINGS["SkipFromAets"]):
                return f"sent by {sender} (node output)"
    return None


def _store(series_id: str) -> None:
    body = json.dumps({"Resources": [series_id], "Synchronous": True})
    orthanc.RestApiPost(f"/modalities/{SETTINGS['Target']}/store", body)


def _worker() -> None:
    delays = [float(d) for d in SETTINGS.get("RetryDelays") or []]
    while not _stop.is_set():
        try:
            due, series_id, attempt = _work.get(timeout=1.0)
        except queue.Empty:
            continue
        wait = due - time.time()
        if wait > 0:
            time.sleep(min(wait, 1.0))
            _work.put((due, series_id, attempt))
            continue
        try:
            _store(series_id)
            orthanc.LogWarning(f"ai-node autoroute: forwarded series {series_id} to "
                               f"{SETTINGS['Target']} (attempt {attempt + 1})")
        except Exception as exc:  # noqa: BLE001 - best effort: any failure gives the fallback
            if attempt < len(delays):
                orthanc.LogWarning(f"ai-node autoroute: forwarding series {series_id} failed "
                                   f"({exc}); retry in {delays[attempt]:.0f} s")
                _work.put((time.time() + delays[attempt], series_id, attempt + 1))
            else:
                orthanc.LogError(f"ai-node autoroute: GAVE UP forwarding series {series_id} "
                                 f"after {attempt + 1} attempts: {exc}")


def on_change(change_type, level, resource_id) -> None:
    """Orthanc change callback: queue stable series that must go to the node."""
    if change_type == orthanc.ChangeType.ORTHANC_STOPPED:
        _stop.set()
        return
    if change_type != orthanc.ChangeType.STABLE_SERIES:
        return
    try:
        reason = skip_reason(resource_id)
    except Exception as exc:  # noqa: BLE001 - best effort: any failure gives the fallback
        orthanc.LogError(f"ai-node autoroute: cannot inspect series {resource_id}: {exc}")
        return
    if reason:
        orthanc.LogWarning(f"ai-node autoroute: skip series {resource_id}: {reason}")
        return
    _work.put((0.0, resource_id, 0))


threading.Thread(target=_worker, name="ai-node-autoroute", daemon=True).start()
orthanc.RegisterOnChangeCallback(on_change)
orthanc.LogWarning(f"ai-node autoroute (python): loaded, target modality \"{SETTINGS['Target']}\"")
