"""Follow-up latency (``bench/end_to_end.py --prior``): what comparing with the prior adds.

Orthanc holds two FLAIR + T1 studies of one patient (``../shared/data/ms/longitudinal/patient01``
study 1 and 2, wrapped as DICOM). Three nodes, one after the other, each with a fresh data folder:

``single``     prior comparison off: the follow-up as a single study (the reference)
``cached``     prior on; the node analysed the prior study before (it was sent first), so its
               lesions are reused and nothing is retrieved
``sr``         prior on, fresh node, the ``cached`` node's SR still in the prior study: the prior
               is retrieved (C-MOVE, its images and the node's SR), segmented again, and its
               lesions keep the SR's tracking UIDs (the node lost its results, or another node
               instance analysed the prior)
``retrieved``  prior on, fresh node, no SR of the node in the PACS: the prior is found (C-FIND),
               retrieved (C-MOVE) and segmented

For each: last instance of the follow-up acknowledged -> its SEG(s) + SR in Orthanc (total), the
pipeline stages from ``result.json`` (``prior``: load, comparability, registration, matching and,
uncached, the prior's segmentation), and the prior retrieval time (C-FIND + C-MOVE + indexing).
Target: ``cached`` adds <= 10 s to ``single`` on 2 CPU cores.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from end_to_end import start_node, status  # noqa: E402

from dicom_node.devtools.demo import _node_config, prior_routing  # noqa: E402
from dicom_node.devtools.orthanc import OrthancServer  # noqa: E402

LONG = REPO.parent / "shared" / "data" / "ms" / "longitudinal" / "patient01"


def _write(work: Path, tag: str, date: str) -> str:
    import SimpleITK as sitk

    from dicom_node.devtools.wrap import write_mr_series
    from dicom_node.encode.uids import derive_uid

    uid = derive_uid("bench-prior", tag)
    n = 1 if tag == "prior" else 2
    for contrast, name, number in (("FLAIR", f"study{n}_FLAIR", 3), ("T1", f"study{n}_T1W", 4)):
        write_mr_series(sitk.ReadImage(str(LONG / f"{name}.nii.gz")), work / tag / contrast,
                        study_uid=uid, series_number=number, series_description=f"AX {contrast}",
                        contrast=contrast, patient_id="BENCH-FU", study_date=date, orient="LPS")
    return uid


def _routing(work: Path, prior: bool) -> Path:
    if prior:
        return prior_routing(work / "routing-prior.yaml", lookback_days=3650)
    return REPO / "config" / "routing.yaml"


def _send_and_wait(orthanc: OrthancServer, cfg_path: Path, cfg: dict, sid: str, study_uid: str,
                   n_seg: int) -> tuple[float, dict[str, Any]]:
    orthanc.store_to("ainode", [sid])
    t_ack = time.time()
    while True:
        mods: dict[str, int] = {}
        for s in orthanc.get(f"/studies/{sid}/series"):
            m = s["MainDicomTags"].get("Modality")
            mods[m] = mods.get(m, 0) + 1
        if mods.get("SEG", 0) >= n_seg and mods.get("SR"):
            break
        if time.time() - t_ack > 900:
            raise RuntimeError(f"no results after 900 s: see {cfg['data_dir']}/../node.log")
        time.sleep(0.05)
    total = time.time() - t_ack
    while True:
        job = next((j for j in status(cfg_path)["jobs"]
                    if j["study_uid"] == study_uid and j["state"] in ("done", "failed")), None)
        if job is not None:
            break
        time.sleep(0.5)
    res = json.loads((Path(cfg["data_dir"]) / "results" / job["id"] / "result.json").read_text())
    return total, res


def _clear_results(orthanc: OrthancServer, studies: dict[str, tuple[str, str]], keep: str = "") -> None:
    """Remove what an earlier node sent (same input, same model: same UIDs), so that each
    mode's wait sees its own results arrive; the results in study ``keep`` stay."""
    for tag, (sid, _uid) in studies.items():
        if tag == keep:
            continue
        for s in orthanc.get(f"/studies/{sid}/series"):
            if s["MainDicomTags"].get("Modality") != "MR":
                orthanc.session.delete(f"{orthanc.url}/series/{s['ID']}", timeout=30).raise_for_status()


def one_node(work: Path, orthanc: OrthancServer, studies: dict[str, tuple[str, str]],
             mode: str) -> dict[str, Any]:
    _clear_results(orthanc, studies, keep="prior" if mode == "sr" else "")
    work.mkdir(parents=True)
    cfg_path, cfg = _node_config(work, orthanc)
    cfg["completion"] = {"quiet_seconds": 2}
    cfg["routing_file"] = str(_routing(work, mode != "single"))
    node = start_node(work, cfg_path, cfg)
    try:
        orthanc.register_modality("ainode", "AINODE", "127.0.0.1", cfg["port"])
        if mode == "cached":
            _send_and_wait(orthanc, cfg_path, cfg, *studies["prior"], n_seg=1)
        total, res = _send_and_wait(orthanc, cfg_path, cfg, *studies["follow"],
                                    n_seg=1 if mode == "single" else 2)
        row: dict[str, Any] = {"total": total}
        row.update({k: float(v) for k, v in res["timings_s"].items() if k != "overlay"})
        retr = res.get("prior_retrieval") or {}
        row["prior retrieval"] = float(retr.get("retrieve_s") or 0.0)
        row["_retrieved"] = retr.get("retrieved")
        ch = res.get("change") or {}
        row["_change"] = (f"{ch.get('n_new')} new, {ch.get('n_enlarging')} enlarging, reused "
                          f"{ch.get('prior_reused')}" if ch.get("comparable") else ch.get("reason", "-"))
        log = (work / "node.log").read_text(errors="replace") if (work / "node.log").exists() else ""
        row["_change"] += ("; prior tracking UIDs from the node's SR"
                           if "taken from the node's SR" in log else "")
        return row
    finally:
        node.terminate()
        node.wait(30)


def run(work: Path) -> int:
    if not LONG.is_dir():
        print(f"needs {LONG} (two studies of one patient)")
        return 2
    orthanc = OrthancServer(work / "orthanc").start()
    try:
        studies = {}
        for tag, date in (("prior", "20190305"), ("follow", "20200611")):
            uid = _write(work / "studies", tag, date)
            orthanc.upload_dir(work / "studies" / tag)
            studies[tag] = (orthanc.find_study(uid), uid)
        rows = {m: one_node(work / m, orthanc, studies, m) for m in ("single", "cached", "sr", "retrieved")}
    finally:
        orthanc.stop()
    keys: list[str] = []
    for r in rows.values():
        keys += [k for k in r if not k.startswith("_") and k not in keys]
    print(f"{'stage (s)':<16}" + "".join(f"{m:>11}" for m in rows))
    for k in keys:
        print(f"{k:<16}" + "".join(f"{r.get(k, 0.0):>11.2f}" for r in rows.values()))
    for m, r in rows.items():
        print(f"{m}: {r['_change']}; instances retrieved: {r['_retrieved']}")
    added = rows["cached"]["total"] - rows["single"]["total"]
    print(f"\nfollow-up with a cached prior adds {added:.1f} s to the single-study job "
          f"(target <= 10 s on 2 CPU cores); retrieval of the prior took "
          f"{rows['retrieved']['prior retrieval']:.1f} s; a prior backed only by the node's SR in "
          f"the PACS (retrieved, segmented again) adds {rows['sr']['total'] - rows['single']['total']:.1f} s")
    return 0
