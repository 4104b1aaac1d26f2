"""Run the node as a real subprocess (``python -m dicom_node.cli serve``) for end-to-end tests.

Example::

    node = NodeProcess(tmp_path / "node", quiet_seconds=2).start()
    ...                       # send to 127.0.0.1:node.port, AE node.ae_title
    node.status()             # ``dicom-node status --json`` as a dict
    node.stop()               # SIGTERM, wait for exit
    node.log_text()           # everything the node logged
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from orthanc_harness import dicom_env, free_port, stop_process

REPO = Path(__file__).resolve().parents[1]
ECHOSCU = "/usr/bin/echoscu"  # absolute: pyenv shims may shadow dcmtk with pynetdicom's apps
STORESCU = "/usr/bin/storescu"

#: dcmtk storescu option that proposes a compressed transfer syntax (and uncompressed ones).
STORESCU_TS_OPTION = {
    "1.2.840.10008.1.2": "-xi",  # implicit VR little endian only
    "1.2.840.10008.1.2.2": "-xb",  # explicit VR big endian first
    "1.2.840.10008.1.2.4.70": "-xs",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "-xt",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "-xu",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "-xw",  # JPEG 2000
    "1.2.840.10008.1.2.4.50": "-xy",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "-xx",  # JPEG extended
    "1.2.840.10008.1.2.5": "-xr",  # RLE lossless
    "1.2.840.10008.1.2.1.99": "-xd",  # deflated explicit VR little endian
}


def _file_ts(path: Path | str) -> str:
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        return str(ds.file_meta.get("TransferSyntaxUID", ""))
    except Exception:  # noqa: BLE001
        return ""


__all__ = ["NodeProcess", "STORESCU_TS_OPTION", "ECHOSCU", "STORESCU", "write_node_config",
           "fast_routing", "association_rq"]


def write_node_config(workdir: Path, **overrides: Any) -> Path:
    """Write a node.yaml for tests (free port, data below ``workdir``); return its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {
        "ae_title": "AINODE",
        "host": "127.0.0.1",
        "port": free_port(),
        "data_dir": str(workdir / "data"),
        "allowed_peers": [{"host": "127.0.0.1"}],
        "completion": {"quiet_seconds": 2},
        "min_free_disk_mb": 10,
        "routing_file": str(REPO / "config" / "routing.yaml"),
        "log": {"level": "INFO", "format": "text"},
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    path = workdir / "node.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class NodeProcess:
    """The node in a subprocess.

    Parameters
    ----------
    workdir : Path
    config : Path, optional
        An existing node.yaml; otherwise one is written by :func:`write_node_config` with
        ``overrides``.
    """

    def __init__(self, workdir: Path, config: Path | None = None, **overrides: Any) -> None:
        self.workdir = Path(workdir)
        self.config = config or write_node_config(self.workdir, **overrides)
        self.cfg = yaml.safe_load(Path(self.config).read_text())
        self.log_path = self.workdir / "node.log"
        self.proc: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return int(self.cfg["port"])

    @property
    def ae_title(self) -> str:
        return str(self.cfg.get("ae_title", "AINODE"))

    def start(self, timeout: float = 30.0) -> "NodeProcess":
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dicom_node.cli", "serve", "--config", str(self.config)],
            cwd=REPO, env=dicom_env(PYTHONUNBUFFERED="1"), stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        # the metrics endpoint starts after the SCP: when one is configured, ready means both
        http = bool((self.cfg.get("http") or {}).get("port"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log_text()}")
            text = self.log_text()
            if "storage SCP listening" in text and (
                    not http or "metrics: serving" in text or "metrics endpoint not started" in text):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"node did not start:\n{self.log_text()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def echo(self, aet: str = "ECHOSCU") -> bool:
        r = subprocess.run([ECHOSCU, "-aet", aet, "-aec", self.ae_title, "127.0.0.1",
                            str(self.port)], env=dicom_env(), capture_output=True, timeout=30)
        return r.returncode == 0

    def storescu(self, *paths: Path | str, aet: str = "STORESCU", extra: list[str] | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
        """Run dcmtk storescu (``-R``: propose exactly each file's SOP class and transfer syntax)."""
        cmd = [STORESCU, "-aet", aet, "-aec", self.ae_title, "+sd", "+r", "-R", "-v",
               *(extra or []), "127.0.0.1", str(self.port), *[str(p) for p in paths]]
        return subprocess.run(cmd, env=dicom_env(), capture_output=True, text=True,
                              timeout=timeout)

    def storescu_own_ts(self, *paths: Path | str, aet: str = "STORESCU",
                        timeout: float = 300) -> list[subprocess.CompletedProcess]:
        """Send files in their own transfer syntax: one storescu run per syntax, with the
        ``-x?`` option that makes dcmtk propose it (see :data:`STORESCU_TS_OPTION`)."""
        groups: dict[str, list[str]] = {}
        for p in paths:
            files = [p] if Path(p).is_file() else sorted(
                f for f in Path(p).rglob("*") if f.is_file())
            for f in files:
                groups.setdefault(STORESCU_TS_OPTION.get(_file_ts(f), ""), []).append(str(f))
        return [self.storescu(*fs, aet=aet, extra=[opt] if opt else None, timeout=timeout)
                for opt, fs in groups.items()]

    def status(self) -> dict[str, Any]:
        """What ``dicom-node status --json`` prints. Read in this process (the same function
        the command calls): a ``status`` subprocess per poll cost 0.7 s of CPU, taken from the
        node under test on a 2-core machine. The command itself: test_cli_status_retry."""
        from dicom_node.cli.status import status_dict
        from dicom_node.config import load_config

        return json.loads(json.dumps(status_dict(load_config(self.config)), default=str))

    def wait_for(self, pred, timeout: float = 30.0, interval: float = 0.2) -> dict[str, Any]:
        """Poll :meth:`status` until ``pred(status)`` is true; return the last status."""
        deadline = time.monotonic() + timeout
        st = self.status()
        while not pred(st):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met; status={json.dumps(st)[:2000]}\n"
                                   f"log:\n{self.log_text()[-3000:]}")
            time.sleep(interval)
            st = self.status()
        return st

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        code = stop_process(self.proc, timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL (crash simulation)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def fast_routing(workdir: Path) -> Path:
    """The shipped routing.yaml without its 120 s wait for an optional T1 (FLAIR-only test
    studies would otherwise wait for it); returns the new file's path."""
    rules = (REPO / "config" / "routing.yaml").read_text()
    if "optional_grace_seconds: 120" not in rules:
        raise RuntimeError("config/routing.yaml no longer has optional_grace_seconds: 120")
    path = Path(workdir) / "routing-fast.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rules.replace("optional_grace_seconds: 120", "optional_grace_seconds: 1"))
    return path


def association_rq(node: "NodeProcess", calling_ae: str = "TESTSCU",
                   abstract_syntax: str = "1.2.840.10008.1.1",
                   transfer_syntax: str | None = None) -> bytes:
    """The bytes of a real A-ASSOCIATE-RQ for one presentation context (ID 1; Verification
    unless ``abstract_syntax`` is given, with ``transfer_syntax`` or pynetdicom's default ones)
    to ``node`` (built by pynetdicom), for tests that speak to the node on a raw socket."""
    from pynetdicom import build_context
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
    from pynetdicom.transport import AddressInformation

    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title = calling_ae
    prim.called_ae_title = node.ae_title
    cx = build_context(abstract_syntax, transfer_syntax)
    cx.context_id = 1
    prim.presentation_context_definition_list = [cx]
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16384
    prim.user_information = [ml]
    prim.calling_presentation_address = AddressInformation("127.0.0.1", 0)
    prim.called_presentation_address = AddressInformation("127.0.0.1", node.port)
    return A_ASSOCIATE_RQ(prim).encode()
