"""Ingest benchmark: Orthanc -> our Storage SCP vs Orthanc -> dcmtk ``storescp +B``.

The same series (default: the 170-slice Philips 3D MPRAGE of ../shared/data/dicom when present,
else a synthetic 176 x 256 x 256 series; ``--synthetic`` forces it) is C-STOREd by a real Orthanc
(``POST /modalities/<name>/store``, synchronous) to the node (``dicom-node serve`` subprocess)
and to dcmtk ``storescp +B`` (bit-preserving writes), alternating, for several rounds. Every
process runs with ``TCP_NODELAY=1``. Each round starts both receivers on an empty directory.

The node runs as configured by default (``ingest.fsync: true``: every instance is on disk before
its response; ``storescp`` never fsyncs). ``--also-nofsync`` adds a receiver per round, the node
with ``ingest.fsync: false``, for a like-for-like comparison of the software path;
``--also-stock`` one with ``scp.fast_dimse: false`` (pynetdicom's own C-STORE path).

Since every acknowledged instance costs the node one ``fsync``, the run ends by timing that on the
scratch file system (``fsync`` of a new file the size of an instance, median of 60): on a virtual
disk it varies from a fraction of a millisecond to several, and bounds the ratio.

Prints instances/s of both per round and the medians, the ratio node/storescp (target >= 0.5),
and the node's delay from last instance to "series complete" (early completion by known size
for the synthetic series, which carries ImagesInAcquisition; the quiet period otherwise).

Usage::

    .venv/bin/python bench/ingest.py [--rounds 5] [--synthetic] [--quiet-seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from dicom_factory import make_mr_series, write_series  # noqa: E402
from node_harness import NodeProcess  # noqa: E402
from orthanc_harness import OrthancServer, dicom_env, free_port  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "dicom"
REAL_SERIES = SHARED / "dcm_qa_philips_enh" / "philips_elition_ADNI_Sag3D_MPRAGE"
STORESCP = "/usr/bin/storescp"


def start_storescp(out_dir: Path, port: int) -> subprocess.Popen:
    out_dir.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([STORESCP, "+B", "-aet", "STORESCP", "-od", str(out_dir), str(port)],
                         env=dicom_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(0.3)
    return p


def stop(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


def fsync_latency_ms(folder: Path, size: int, samples: int = 60) -> float:
    """Median time of ``fsync`` on a freshly written file of ``size`` bytes in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    times = []
    for i in range(samples):
        fd = os.open(folder / f"probe{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - t0) * 1000)
        finally:
            os.close(fd)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--synthetic", action="store_true", help="176 x 256 x 256 synthetic series")
    ap.add_argument("--quiet-seconds", type=float, default=2.0)
    ap.add_argument("--poll-ms", type=float, default=None,
                    help="scp.poll_interval_ms of the node (default: node.yaml's default)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--also-nofsync", action="store_true",
                    help="also time the node with ingest.fsync: false")
    ap.add_argument("--also-stock", action="store_true",
                    help="also time the node with scp.fast_dimse: false (stock pynetdicom path)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        if args.synthetic or not REAL_SERIES.is_dir():
            src = write_series(make_mr_series(176, 256, 256, contrast="T1",
                                              images_in_acquisition=True), work / "series")
            label = "synthetic 176 x 256 x 256 T1 (ImagesInAcquisition set)"
        else:
            src = sorted(p for p in REAL_SERIES.iterdir() if p.is_file())
            label = f"{REAL_SERIES.relative_to(SHARED)} ({len(src)} files)"
        n = len(src)
        mb = sum(p.stat().st_size for p in src) / 2**20
        print(f"series: {label}, {n} instances, {mb:.1f} MiB")

        orthanc = OrthancServer(work / "orthanc").start()
        ids = [orthanc.upload(p) for p in src]
        series_id = orthanc.get(f"/instances/{ids[0]}/series")["ID"]
        scp_port = free_port()
        orthanc.register_modality("storescp", "STORESCP", "127.0.0.1", scp_port)

        node_rates, scp_rates, delays, wall_delays = [], [], [], []
        nofsync_rates: list[float] = []
        stock_rates: list[float] = []
        for rnd in range(1, args.rounds + 1):
            for wanted, name, rates, extra_cfg in (
                    (args.also_nofsync, "nofsync", nofsync_rates, {"ingest": {"fsync": False}}),
                    (args.also_stock, "stock", stock_rates, {"scp": {"fast_dimse": False}})):
                if not wanted:
                    continue
                other = NodeProcess(work / f"{name}{rnd}", runner={"enabled": False},
                                    min_free_disk_mb=0, **extra_cfg).start()
                orthanc.register_modality(name, other.ae_title, "127.0.0.1", other.port)
                t0 = time.perf_counter()
                orthanc.store_to(name, [series_id])
                rates.append(n / (time.perf_counter() - t0))
                other.stop()
            # --- our node (fresh data dir, not timed: start-up) ---
            node_dir = work / f"node{rnd}"
            extra = {"scp": {"poll_interval_ms": args.poll_ms}} if args.poll_ms is not None else {}
            node = NodeProcess(node_dir, completion={"quiet_seconds": args.quiet_seconds},
                               runner={"enabled": False}, log={"level": "INFO"},
                               min_free_disk_mb=0, **extra).start()
            orthanc.register_modality("ainode", node.ae_title, "127.0.0.1", node.port)
            t0 = time.perf_counter()
            orthanc.store_to("ainode", [series_id])
            dt_node = time.perf_counter() - t0
            t_sent = time.time()
            st = node.wait_for(lambda s: bool(s["series"]) and all(
                x["state"] == "complete" for x in s["series"]), timeout=120, interval=0.05)
            wall = time.time() - t_sent
            ser = st["series"][0]
            assert ser["n_instances"] == n, ser
            delays.append(float(ser["complete_delay_s"]))
            wall_delays.append(wall)
            reason = ser["completion_reason"]
            node.stop()

            # --- dcmtk storescp +B ---
            scp = start_storescp(work / f"storescp{rnd}", scp_port)
            t0 = time.perf_counter()
            orthanc.store_to("storescp", [series_id])
            dt_scp = time.perf_counter() - t0
            stop(scp)
            got = len(list((work / f"storescp{rnd}").iterdir()))
            assert got == n, f"storescp wrote {got} files"

            node_rates.append(n / dt_node)
            scp_rates.append(n / dt_scp)
            print(f"round {rnd}: node {dt_node:6.3f} s = {n / dt_node:7.1f} inst/s | "
                  f"storescp +B {dt_scp:6.3f} s = {n / dt_scp:7.1f} inst/s | ratio "
                  f"{dt_scp / dt_node:5.2f} | last instance -> complete {delays[-1]:.3f} s "
                  f"({reason})"
                  + (f" | node without fsync {nofsync_rates[-1]:7.1f} inst/s"
                     if nofsync_rates else "")
                  + (f" | stock pynetdicom path {stock_rates[-1]:7.1f} inst/s"
                     if stock_rates else ""))
        orthanc.stop()
        fsync_ms = fsync_latency_ms(work / "fsync-probe", int(mb * 2**20 / n))

        med_node, med_scp = statistics.median(node_rates), statistics.median(scp_rates)
        ratio = med_node / med_scp
        print()
        print(f"median node       : {med_node:7.1f} instances/s")
        print(f"median storescp +B: {med_scp:7.1f} instances/s")
        print(f"ratio node/storescp: {ratio:.2f} (target >= 0.5) -> "
              f"{'OK' if ratio >= 0.5 else 'BELOW TARGET'}")
        for rates, what in ((nofsync_rates, "ingest.fsync false"),
                            (stock_rates, "scp.fast_dimse false")):
            if rates:
                m = statistics.median(rates)
                print(f"median node, {what}: {m:7.1f} instances/s (ratio {m / med_scp:.2f})")
        load = os.getloadavg()
        print(f"fsync of a new {mb * 1024 / n:.0f} KiB file on this file system: median "
              f"{fsync_ms:.2f} ms | load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"last instance -> series complete: median {statistics.median(delays):.3f} s "
              f"(recorded by the node; observed via status polling "
              f"{statistics.median(wall_delays):.3f} s after the store returned)")
        print(json.dumps({"series": label, "instances": n, "node_inst_per_s": round(med_node, 1),
                          "storescp_inst_per_s": round(med_scp, 1), "ratio": round(ratio, 3),
                          "node_nofsync_inst_per_s": round(statistics.median(nofsync_rates), 1)
                          if nofsync_rates else None,
                          "node_stock_inst_per_s": round(statistics.median(stock_rates), 1)
                          if stock_rates else None,
                          "fsync_ms": round(fsync_ms, 2), "loadavg_1min": round(load[0], 2),
                          "complete_delay_s": round(statistics.median(delays), 3)}))
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
