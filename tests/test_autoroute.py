"""Orthanc-side autorouting (orthanc/autoroute.lua, orthanc/autoroute.py) against real peers.

1. The routing half, now: a real Orthanc running the script forwards an MR series uploaded over
   REST to a dcmtk ``storescp`` standing in for the node's AE; non-MR objects, the node's own
   outputs (SeriesDescription "RESEARCH USE ONLY") and series sent by the node's AE are not
   forwarded (no loop).
2. The whole chain: upload to Orthanc only, the real node (``dicom-node serve``) gets the study
   from the Lua script and its SEG + SR appear in the same study in Orthanc.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dicom_factory import make_mr_series, write_series
from orthanc_harness import ORTHANC_BIN, OrthancServer, dicom_env, free_port
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
LUA = REPO / "orthanc" / "autoroute.lua"
PY_SCRIPT = REPO / "orthanc" / "autoroute.py"
STORESCP = Path("/usr/bin/storescp")
STORESCU = Path("/usr/bin/storescu")
PYTHON_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancPython.so")
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

pytestmark = [
    pytest.mark.orthanc,
    pytest.mark.skipif(not ORTHANC_BIN.exists(), reason="Debian package orthanc not installed"),
    pytest.mark.skipif(not STORESCP.exists(), reason="Debian package dcmtk not installed"),
]


# --------------------------------------------------------------------------- helpers
def _env() -> dict[str, str]:
    return dicom_env()


def _orthanc(workdir: Path, settings: dict) -> OrthancServer:
    """The shared test harness's real Orthanc, with the autoroute settings merged in."""
    return OrthancServer(workdir / "orthanc", config={"UnknownSopClassAccepted": True,
                                                      **settings}).start()


def _orthanc_log(orthanc: OrthancServer) -> str:
    return orthanc.log_path.read_text(errors="replace")


class _StoreSCP:
    """dcmtk storescp standing in for the node's AE; files land in ``self.dir``."""

    def __init__(self, workdir: Path, aet: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = workdir / "received"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log = (workdir / "storescp.log").open("wb")
        self.proc = subprocess.Popen(
            [str(STORESCP), "-aet", aet, "-od", str(self.dir), str(self.port)],
            env=_env(), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("storescp did not start")

    def sop_uids(self) -> set[str]:
        # storescp names files <modality prefix>.<SOPInstanceUID>
        return {p.name.split(".", 1)[1] for p in self.dir.iterdir() if "." in p.name}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


def make_series(out: Path, *, modality: str = "MR", sop_class: str = MR_STORAGE, n: int = 3,
                description: str = "AX FLAIR", study_uid: str | None = None,
                manufacturer: str = "ACME") -> tuple[str, list[str]]:
    """Write a small synthetic series (the tests' one builder, relabelled); returns
    (SeriesInstanceUID, SOP Instance UIDs)."""
    series = make_mr_series(n, 8, 8, study_uid=study_uid, description=description,
                            patient_id="AUTOROUTE1", patient_name="Autoroute^Test",
                            extra={"Modality": modality, "SOPClassUID": sop_class,
                                   "Manufacturer": manufacturer})
    for ds in series:
        ds.file_meta.MediaStorageSOPClassUID = sop_class
    write_series(series, out)
    return str(series[0].SeriesInstanceUID), [str(ds.SOPInstanceUID) for ds in series]


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# --------------------------------------------------------------------------- routing half
VARIANTS = ["lua", "python"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_orthanc_forwards_stable_mr_series_only(tmp_path: Path, variant: str):
    if variant == "python" and not PYTHON_PLUGIN.exists():
        pytest.skip("Debian package orthanc-python not installed (optional variant)")
    target = "node-under-test"  # not the script's default: proves the setting is read
    scp = _StoreSCP(tmp_path, aet="AINODE")
    settings = {"AiNodeAutoroute": {"Target": target}, "StableAge": 2}
    if variant == "lua":
        settings["LuaScripts"] = [str(LUA)]
    else:
        settings.update(Plugins=[str(PYTHON_PLUGIN)], PythonScript=str(PY_SCRIPT))
    orthanc = _orthanc(tmp_path, settings)
    try:
        # the node's AE registered at run time, as a site admin would with the REST API
        orthanc.register_modality(target, "AINODE", "127.0.0.1", scp.port)
        study = generate_uid()
        mr_series, mr_sops = make_series(tmp_path / "mr", study_uid=study)
        make_series(tmp_path / "seg", modality="SEG", sop_class=SEG_STORAGE, n=1,
                    study_uid=study, description="MS lesions SEG (RESEARCH USE ONLY)")
        make_series(tmp_path / "overlay", study_uid=study,
                    description="MS lesion overlay - RESEARCH USE ONLY")
        make_series(tmp_path / "ct", modality="CT", sop_class=CT_STORAGE, n=2, study_uid=study)
        # an MR series that the node itself sent back (calling AE = the node's AE)
        _, from_node = make_series(tmp_path / "from-node", study_uid=study,
                                   description="derived by node")
        for folder in ("seg", "overlay", "ct", "mr"):
            for f in sorted((tmp_path / folder).glob("*.dcm")):
                orthanc.upload(f)
        subprocess.run([str(STORESCU), "-aet", "AINODE", "-aec", "ORTHANC", "127.0.0.1",
                        str(orthanc.dicom_port), *map(str, sorted((tmp_path / "from-node")
                                                                  .glob("*.dcm")))],
                       env=_env(), check=True, capture_output=True, timeout=60)

        _wait(lambda: set(mr_sops) <= scp.sop_uids(), 45, "the MR series at the node's AE")
        # every series stable (each has had its chance to be forwarded), then a short margin
        all_series = orthanc.get("/series")
        assert len(all_series) == 5
        _wait(lambda: all(orthanc.get(f"/series/{s}")["IsStable"] for s in all_series), 30,
              "all series stable in Orthanc")
        time.sleep(2.0)
        assert scp.sop_uids() == set(mr_sops), "only the acquired MR series may be forwarded"
        assert not set(from_node) & scp.sop_uids()
        log = _orthanc_log(orthanc)
        assert "skip series" in log and "node output" in log
        assert "not forwarded" in log  # SEG and CT
    finally:
        orthanc.stop()
        scp.stop()


def test_python_variant_retries_when_node_is_down(tmp_path: Path):
    """orthanc-python variant: a series stable while the node is down arrives once it is up."""
    if not PYTHON_PLUGIN.exists():
        pytest.skip("Debian package orthanc-python not installed (optional variant)")
    port = free_port()
    orthanc = _orthanc(tmp_path, {
        "Plugins": [str(PYTHON_PLUGIN)], "PythonScript": str(PY_SCRIPT), "StableAge": 1,
        "DicomModalities": {"ainode": ["AINODE", "127.0.0.1", port]},
        "AiNodeAutoroute": {"RetryDelays": [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]},
    })
    scp = None
    try:
        _, sops = make_series(tmp_path / "mr")
        for f in sorted((tmp_path / "mr").glob("*.dcm")):
            orthanc.upload(f)
        _wait(lambda: "retry in" in _orthanc_log(orthanc), 30, "a failed first forwarding attempt")
        scp = _StoreSCP(tmp_path, aet="AINODE", port=port)
        _wait(lambda: set(sops) <= scp.sop_uids(), 30, "the series after the node came up")
    finally:
        orthanc.stop()
        if scp is not None:
            scp.stop()


# --------------------------------------------------------------------------- whole chain
CHAIN_TIMEOUT = 600.0


@pytest.mark.slow
def test_upload_to_orthanc_only_results_appear_in_the_study(tmp_path: Path):
    """Upload a FLAIR + T1 study to Orthanc over REST, nothing else: the Lua script forwards
    it, the node (``dicom-node serve``) segments it, SEG + SR land in the same study, and the
    results are not forwarded back to the node (no loop)."""
    import yaml

    from dicom_node.devtools.demo import build_study

    wrapped, origin = build_study(tmp_path / "study")
    orthanc = _orthanc(tmp_path, {"LuaScripts": [str(LUA)], "StableAge": 2,
                                  "AiNodeAutoroute": {"Target": "ainode"}})
    node_port = free_port()
    cfg = {
        "ae_title": "AINODE", "host": "127.0.0.1", "port": node_port,
        "data_dir": str(tmp_path / "node-data"),
        "allowed_peers": [{"ae_title": orthanc.aet}],
        "peers": [{"name": "orthanc", "ae_title": orthanc.aet, "host": "127.0.0.1",
                   "port": orthanc.dicom_port}],
        "completion": {"quiet_seconds": 2}, "min_free_disk_mb": 10,
        "routing_file": str(REPO / "config" / "routing.yaml"),
        "log": {"level": "INFO", "format": "text"},
    }
    cfg_path = tmp_path / "node.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    node_log = tmp_path / "node.log"
    exe = Path(sys.executable).with_name("dicom-node")
    with node_log.open("wb") as out:
        node = subprocess.Popen([str(exe), "serve", "--config", str(cfg_path)], stdout=out,
                                stderr=subprocess.STDOUT, env=_env())
    try:
        orthanc.register_modality("ainode", "AINODE", "127.0.0.1", node_port)
        for f in wrapped.all_files:  # REST upload only: no store_to, no storescu
            orthanc.upload(f)
        sid = orthanc.find_study(wrapped.study_uid)

        def modalities() -> dict[str, list[dict]]:
            out: dict[str, list[dict]] = {}
            for s in orthanc.get(f"/studies/{sid}/series"):
                out.setdefault(s["MainDicomTags"].get("Modality", "?"), []).append(s)
            return out

        deadline = time.time() + CHAIN_TIMEOUT
        while time.time() < deadline:
            assert node.poll() is None, node_log.read_text()[-3000:]
            found = modalities()
            if "SEG" in found and "SR" in found:
                break
            time.sleep(2)
        else:
            raise AssertionError(f"no SEG + SR in Orthanc after {CHAIN_TIMEOUT:.0f} s ({origin})"
                                 f"\n{node_log.read_text()[-4000:]}")
        # results are stable in Orthanc (the script had its chance), then check no loop
        _wait(lambda: all(orthanc.get(f"/series/{s['ID']}")["IsStable"]
                          for lst in modalities().values() for s in lst), 60, "stable series")
        time.sleep(3)
        jobs = [orthanc.get(f"/jobs/{j}") for j in orthanc.get("/jobs")]
        stores = [j for j in jobs if j.get("Type") == "DicomModalityStore"]
        assert len(stores) == len(wrapped.series), \
            f"{len(stores)} forwards for {len(wrapped.series)} acquired series: results looped"
        log = _orthanc_log(orthanc)
        assert "skip series" in log
        for mod in ("SEG", "SR"):
            desc = modalities()[mod][0]["MainDicomTags"].get("SeriesDescription", "")
            assert "RESEARCH" in desc.upper()
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
        orthanc.stop()
