"""``dicom-node demo``: the whole chain on one machine, against a real Orthanc.

1. Build a brain MR study (FLAIR + T1) as DICOM: the real MS case
   ``../shared/data/ms/cross_sectional/patient19`` when it exists beside the checkout, otherwise
   a synthetic brain phantom with MS-like lesions that the project generates.
2. Start Orthanc (Debian package) on free loopback ports with the project's Lua autorouting
   (``orthanc/autoroute.lua``), and the node (``dicom-node serve``) as a subprocess.
3. Upload the study to Orthanc only. Orthanc forwards the stable MR series to the node, which
   classifies and routes them, runs the model, and C-STOREs a DICOM-SEG, a TID 1500 SR and an
   overlay series back into the same study in Orthanc.
4. Print the lesion table and where to look in Orthanc.

Research use only: not a medical device.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from dicom_node.devtools.orthanc import OrthancServer, dicom_env, free_port

REPO = Path(__file__).resolve().parents[2]
SHARED_CASE = REPO.parent / "shared" / "data" / "ms" / "cross_sectional" / "patient19"

__all__ = ["run_demo", "build_study"]


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def build_study(workdir: Path, case_dir: Path | None = None) -> tuple[Any, str]:
    """Write the demo study as DICOM below ``workdir``; return ``(WrappedStudy, origin)``."""
    from dicom_node.devtools.wrap import nifti_case_to_study

    if case_dir is None and SHARED_CASE.is_dir():
        case_dir = SHARED_CASE
    if case_dir is not None:
        return nifti_case_to_study(case_dir, workdir / "study"), f"real MS case {case_dir.name}"
    from ai.synth import make_phantom, write_case  # synthetic phantom, generated here

    ph = make_phantom(seed=20261121)
    case = workdir / "phantom"
    write_case(ph, case)
    return nifti_case_to_study(case, workdir / "study"), "synthetic brain phantom (seed 20261121)"


def _node_config(workdir: Path, orthanc: OrthancServer) -> tuple[Path, dict[str, Any]]:
    cfg: dict[str, Any] = {
        "ae_title": "AINODE",
        "host": "127.0.0.1",
        "port": free_port(),
        "data_dir": str(workdir / "node"),
        "allowed_peers": [{"host": "127.0.0.1"}],
        "peers": [{"name": "orthanc", "ae_title": orthanc.aet, "host": "127.0.0.1",
                   "port": orthanc.dicom_port}],
        "completion": {"quiet_seconds": 3},
        "min_free_disk_mb": 100,
        "routing_file": str(REPO / "config" / "routing.yaml"),
        "http": {"port": free_port()},
        "log": {"level": "INFO", "format": "text"},
    }
    path = workdir / "node.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, cfg


def _results_in_orthanc(orthanc: OrthancServer, study_uid: str) -> dict[str, list[dict]]:
    sid = orthanc.find_study(study_uid)
    out: dict[str, list[dict]] = {}
    if not sid:
        return out
    for s in orthanc.get(f"/studies/{sid}/series"):
        out.setdefault(s["MainDicomTags"].get("Modality", "?"), []).append(s)
    return out


def _job_result(data_dir: Path, study_uid: str) -> dict[str, Any] | None:
    from dicom_node.run.runner import load_result
    from dicom_node.store.index import Index
    from dicom_node.store.jobs import JobQueue, JobState

    idx = data_dir / "index.sqlite3"
    if not idx.exists():
        return None
    jobs = [j for j in JobQueue(Index(idx)).list(study_uid=study_uid) if j.state == JobState.DONE]
    for j in sorted(jobs, key=lambda j: j.updated_at, reverse=True):
        res = load_result(data_dir, j.id)
        if res:
            return res
    return None


def print_lesion_table(result: dict[str, Any]) -> None:
    """Print the lesion table and the study summary of a job's ``result.json``."""
    from ai.types import DETECTION_LIMITS_SHORT, LOCATION_LABELS

    s = result["summary"]
    print()
    print(f"  {'id':>3}  {'location':<24} {'volume mm3':>10}  {'size':<7} {'mean p':>6} {'max p':>6}")
    for les in result["lesions"]:
        print(f"  {les['id']:>3}  {LOCATION_LABELS.get(les['location'], les['location']):<24} "
              f"{les['volume_mm3']:>10.1f}  {les['size_class']:<7} "
              f"{les['mean_probability']:>6.2f} {les.get('max_probability', float('nan')):>6.2f}")
    print()
    print(f"  lesions: {s['lesion_count']}, total volume {s['total_volume_mm3'] / 1000:.2f} ml, "
          f"load: {s['load_category']}")
    if "low_confidence_count" in s:
        print(f"  low confidence (mean probability < {s['confidence_cut']:.2f}): {s['low_confidence_count']}")
    per_loc = ", ".join(f"{LOCATION_LABELS.get(k, k)} {v}" for k, v in
                        s["counts_by_location"].items())
    print(f"  by location: {per_loc}")
    print(f"  dissemination in space (brain MRI, McDonald 2017): "
          f"{'met' if s['dis_met'] else 'not met'} ({', '.join(s['dis_areas']) or 'no area'})")
    print(f"  detection limits: {DETECTION_LIMITS_SHORT}")
    ch = result.get("change")
    if ch is not None:
        if ch.get("comparable"):
            print(f"  compared with the prior study of {ch['prior_study_date']} "
                  f"({ch['interval_days']} days): {ch['n_new']} new, {ch['n_enlarging']} enlarging, "
                  f"{ch['total_volume_prior_mm3'] / 1000:.2f} -> {ch['total_volume_now_mm3'] / 1000:.2f} ml; "
                  f"new disease activity: {'yes' if ch['activity'] else 'no'}")
        else:
            print(f"  no comparable prior: {ch['reason']}")
    t = result.get("timings_s") or {}
    if t:
        print("  timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()))
    print(f"  model: {result['model']['name']} {result['model']['version'][:12]}")
    print()


def run_demo(workdir: Path, *, case_dir: Path | None = None, keep: bool | None = None,
             timeout: float = 900.0) -> int:
    """Run the demo; return a process exit code (0: SEG and SR arrived in Orthanc)."""
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    _say(f"working directory: {workdir}")
    t0 = time.time()
    study, origin = build_study(workdir, case_dir)
    n_files = len(study.all_files)
    _say(f"study {study.study_uid}: {origin}, series {', '.join(study.series)}, "
         f"{n_files} DICOM files ({time.time() - t0:.1f} s)")

    orthanc = OrthancServer(workdir / "orthanc", config={
        "LuaScripts": [str(REPO / "orthanc" / "autoroute.lua")],
        "StableAge": 3,
        "AiNodeAutoroute": {"Target": "ainode"},
    })
    node_proc: subprocess.Popen | None = None
    try:
        orthanc.start()
        _say(f"Orthanc up: {orthanc.url} (DICOM {orthanc.aet}@127.0.0.1:{orthanc.dicom_port})")
        cfg_path, cfg = _node_config(workdir, orthanc)
        # The demo compares with the patient's prior study in Orthanc (C-FIND, C-MOVE to the node,
        # which Orthanc knows as a modality below); the demo patient has none, which is said.
        cfg["routing_file"] = str(prior_routing(workdir / "routing.yaml"))
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        log_path = workdir / "node.log"
        with log_path.open("ab") as log:
            node_proc = subprocess.Popen(
                [sys.executable, "-m", "dicom_node.cli", "serve", "--config", str(cfg_path)],
                stdout=log, stderr=subprocess.STDOUT, env=dicom_env(), cwd=REPO)
        _wait_port(cfg["port"], node_proc, 60)
        _say(f"node up: AINODE@127.0.0.1:{cfg['port']} (metrics "
             f"http://127.0.0.1:{cfg['http']['port']}/metrics, log {log_path})")
        orthanc.register_modality("ainode", "AINODE", "127.0.0.1", cfg["port"])
        t_up = time.time()
        for p in study.all_files:
            orthanc.upload(p)
        _say(f"uploaded {n_files} instances to Orthanc in {time.time() - t_up:.1f} s; Orthanc "
             "autoroutes stable MR series to the node")

        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            if node_proc.poll() is not None:
                _say(f"the node exited ({node_proc.returncode}); log tail:\n"
                     + log_path.read_text(errors="replace")[-3000:])
                return 1
            found = _results_in_orthanc(orthanc, study.study_uid)
            state = ", ".join(f"{k}: {len(v)}" for k, v in sorted(found.items()))
            if state != last:
                _say(f"series in the Orthanc study: {state}")
                last = state
            if "SR" in found and ("SEG" in found or _no_lesions(workdir, study.study_uid)):
                break
            failed = _failed_jobs(Path(cfg["data_dir"]), study.study_uid)
            if failed:
                _say("job failed: " + "; ".join(failed))
                return 1
            time.sleep(1.0)
        else:
            _say(f"timed out after {timeout:.0f} s; node log: {log_path}")
            return 1
        _say(f"SEG and SR in Orthanc {time.time() - t_up:.1f} s after the upload started; "
             "the overlay series follows")
        # The job is done once its overlay series is built and queued; then it is sent.
        result = None
        while time.time() < deadline and result is None:
            result = _job_result(Path(cfg["data_dir"]), study.study_uid)
            time.sleep(0.5)
        n_overlay = sum(1 for f in (result or {}).get("files", []) if f["kind"] == "OVERLAY")
        while time.time() < deadline:
            found = _results_in_orthanc(orthanc, study.study_uid)
            if sum(len(s.get("Instances", [])) for s in found.get("OT", [])) >= n_overlay:
                break
            time.sleep(0.5)
        _say(f"all results in Orthanc {time.time() - t_up:.1f} s after the upload started")
        if result:
            print_lesion_table(result)
        sid = orthanc.find_study(study.study_uid)
        print(f"  Orthanc Explorer: {orthanc.url}/app/explorer.html#study?uuid={sid}")
        for mod, label in (("SEG", "DICOM-SEG (lesions by location)"),
                           ("SR", "TID 1500 measurement report"),
                           ("OT", "overlay series (burned-in outlines)")):
            for s in found.get(mod, []):
                desc = s["MainDicomTags"].get("SeriesDescription", "")
                if mod == "OT" and "summary" in desc.lower():
                    label = "summary image (lesion table)"
                print(f"  {label:<36} series {s['ID']}  '{desc}'  "
                      f"({len(s.get('Instances', []))} instance(s))")
        print("  Research use only: not a medical device.")
        if keep is None:
            keep = sys.stdin is not None and sys.stdin.isatty()
        if keep:
            _say("Orthanc and the node keep running; press Ctrl-C to stop")
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        if node_proc is not None and node_proc.poll() is None:
            node_proc.send_signal(signal.SIGTERM)
            try:
                node_proc.wait(30)
            except subprocess.TimeoutExpired:
                node_proc.kill()
        orthanc.stop()


def prior_routing(path: Path, *, retrieve: str = "move", lookback_days: int = 1825,
                  optional_grace_seconds: float | None = None) -> Path:
    """Write the shipped routing.yaml to ``path`` with its ``prior:`` block switched on (peer
    ``orthanc``, the demo's, the tests' and the bench's PACS); ``optional_grace_seconds`` also
    shortens the wait for an optional T1. Raises RuntimeError when no rule has a prior block."""
    doc = yaml.safe_load((REPO / "config" / "routing.yaml").read_text())
    priors = [rule["prior"] for rule in doc["rules"] if "prior" in rule]
    if not priors:
        raise RuntimeError("config/routing.yaml has no rule with a prior: block")
    for rule in doc["rules"]:
        if "prior" in rule:
            rule["prior"].update(enabled=True, retrieve=retrieve, lookback_days=lookback_days)
        if optional_grace_seconds is not None:
            rule["optional_grace_seconds"] = optional_grace_seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _no_lesions(workdir: Path, study_uid: str) -> bool:
    res = _job_result(workdir / "node", study_uid)
    if not res:
        return False
    return res["summary"]["lesion_count"] == 0


def _failed_jobs(data_dir: Path, study_uid: str) -> list[str]:
    from dicom_node.store.index import Index
    from dicom_node.store.jobs import JobQueue, JobState

    idx = data_dir / "index.sqlite3"
    if not idx.exists():
        return []
    return [f"{j.id}: {j.reason}" for j in JobQueue(Index(idx)).list(study_uid=study_uid)
            if j.state == JobState.FAILED]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the node exited with {proc.returncode} at start-up")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the node did not listen on {port} within {timeout:.0f} s")


def main_args(args: Any) -> int:
    """Entry point for ``dicom-node demo`` (see :mod:`dicom_node.cli`)."""
    os.environ.setdefault("TCP_NODELAY", "1")
    return run_demo(Path(args.workdir), case_dir=Path(args.case) if args.case else None,
                    keep=args.keep, timeout=args.timeout)

