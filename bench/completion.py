"""Series completion step, isolated: classification and study routing once a series is complete.

``bench/end_to_end.py`` counts completion as "last instance -> series complete", which is the
quiet period or the association-release grace; the work done at completion (the series'
headers, its classification, the study's routing into a job) happens after that and is hidden
in "queue+other". This script times that work alone, in process:

1. a node (:class:`dicom_node.service.Node`, runner off, no timer fires) receives a study
   from dcmtk ``storescu`` (patient19's FLAIR + T1 wrapped as DICOM when ``../shared`` has it,
   else the synthetic phantom; or ``--series DIR ...``);
2. each series is completed by hand, ``--repeat`` times (the series is set back to
   ``receiving`` in between), and the parts are timed: headers (everything but classification
   in the classification step), classification (``classify_series``), routing
   (``evaluate_study``).

Figures are medians over the repeats, in milliseconds. Run::

    nice -n 10 .venv/bin/python bench/completion.py [--repeat 5] [--series DIR ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicom_node.devtools.demo import SHARED_CASE, build_study  # noqa: E402
from dicom_node.devtools.orthanc import dicom_env, free_port  # noqa: E402

STORESCU = "/usr/bin/storescu"


def _node(work: Path) -> Any:
    from dicom_node.config import NodeConfig
    from dicom_node.service import Node

    cfg = NodeConfig.model_validate({
        "ae_title": "AINODE", "host": "127.0.0.1", "port": free_port(),
        "data_dir": str(work / "node"), "allowed_peers": [{"host": "127.0.0.1"}],
        "completion": {"quiet_seconds": 3600, "early": False, "release_grace_seconds": 0},
        "runner": {"enabled": False}, "http": {"port": 0}, "min_free_disk_mb": 10,
        "routing_file": str(REPO / "config" / "routing.yaml"),
        "log": {"level": "WARNING", "format": "text"},
    })
    svc = Node(cfg)
    svc.start()
    return svc


def run(work: Path, folders: list[Path], repeat: int) -> dict[str, dict[str, float]]:
    svc = _node(work)
    cm = svc.completion
    spent: dict[str, float] = {}
    classify = cm.classify

    def timed_classify(headers: list[Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return classify(headers)
        finally:
            spent["classify"] = spent.get("classify", 0.0) + time.perf_counter() - t0

    cm.classify = timed_classify
    try:
        for f in folders:
            r = subprocess.run([STORESCU, "-aet", "BENCH", "-aec", "AINODE", "+sd", "+r", "-R",
                                "127.0.0.1", str(svc.scp.port), str(f)], env=dicom_env(),
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise RuntimeError(r.stdout + r.stderr)
        total = sum(len([p for p in f.rglob("*") if p.is_file()]) for f in folders)
        deadline = time.time() + 60
        while sum(s["n_instances"] for s in svc.index.list_series()) < total:
            if time.time() > deadline:
                raise RuntimeError("the index writer did not index every instance")
            time.sleep(0.1)
        out: dict[str, dict[str, float]] = {}
        for s in svc.index.list_series():
            uid = s["series_uid"]
            parts: dict[str, list[float]] = {"headers": [], "classify": [], "routing": [],
                                             "total": []}
            for _ in range(repeat):
                svc.index.conn().execute("UPDATE series SET state='receiving' WHERE series_uid=?",
                                         (uid,))
                row = svc.index.mark_series_complete(uid, now=time.time(), reason="bench")
                assert row is not None
                spent.clear()
                t0 = time.perf_counter()
                cm._classify(row)
                t1 = time.perf_counter()
                cm.evaluate_study(row["study_uid"])
                t2 = time.perf_counter()
                parts["classify"].append(spent.get("classify", 0.0))
                parts["headers"].append((t1 - t0) - spent.get("classify", 0.0))
                parts["routing"].append(t2 - t1)
                parts["total"].append(t2 - t0)
            info = svc.index.series(uid) or {}
            label = f"{info.get('contrast') or '?'} ({s['n_instances']} instances)"
            out[label] = {k: statistics.median(v) * 1000 for k, v in parts.items()}
        return out
    finally:
        svc.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--series", nargs="*", default=None, help="DICOM folders to send instead "
                    "of the demo study")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-completion-") as tmp:
        work = Path(tmp)
        if a.series:
            folders, origin = [Path(p) for p in a.series], ", ".join(a.series)
        else:
            study, origin = build_study(work, SHARED_CASE if SHARED_CASE.is_dir() else None)
            folders = [work / "study"]
        print(f"study: {origin}", flush=True)
        rows = run(work, folders, a.repeat)
    print(f"\n{'series':<28}{'headers':>10}{'classify':>10}{'routing':>10}{'total':>10}  (ms, "
          f"median of {a.repeat})")
    for label, p in rows.items():
        print(f"{label:<28}{p['headers']:>10.1f}{p['classify']:>10.1f}{p['routing']:>10.1f}"
              f"{p['total']:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
