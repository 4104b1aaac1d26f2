"""Start and drive a real Orthanc (Debian ``/usr/sbin/Orthanc``): used by the demo, the tests
and the benchmarks (never mocked).

Example::

    with OrthancServer(tmp_path / "orthanc") as o:        # free loopback ports, own storage
        ids = o.upload_dir(folder)                         # REST upload -> instance ids
        o.register_modality("node", "AINODE", "127.0.0.1", 11112)
        o.store_to("node", ids)                            # Orthanc C-STOREs them (sync job)
        o.instance_file(ids[0])                            # bytes Orthanc stored

The process runs with ``TCP_NODELAY=1`` in its environment (Orthanc 1.10 otherwise keeps Nagle
on: ~40 ms per C-STORE on loopback) and ``"Plugins": []``. ``stop()`` sends SIGTERM and waits for
the PID to exit. The config starts from the template ``orthanc/orthanc.json``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

import requests

REPO = Path(__file__).resolve().parents[2]  # the checkout (template in orthanc/)
ORTHANC_BIN = Path("/usr/sbin/Orthanc")
TEMPLATE = REPO / "orthanc" / "orthanc.json"

__all__ = ["OrthancServer", "free_port", "ORTHANC_BIN", "dicom_env", "stop_process"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (as free as the kernel says right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dicom_env(**extra: str) -> dict[str, str]:
    """Environment for Orthanc/dcmtk processes: ``TCP_NODELAY=1`` (see module docstring)."""
    return {**os.environ, "TCP_NODELAY": "1", **extra}


def stop_process(proc: subprocess.Popen | None, timeout: float = 20.0) -> int | None:
    """SIGTERM ``proc`` and wait for it to exit (SIGKILL after ``timeout``); its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class OrthancServer:
    """Start/stop a real Orthanc with its own storage directory on free loopback ports.

    Parameters
    ----------
    workdir : Path
        Holds ``orthanc.json``, ``storage/`` and ``orthanc.log``.
    aet : str
        Orthanc's DICOM AE title.
    config : dict, optional
        Keys merged over the template (e.g. ``{"Plugins": [...]}``).
    """

    def __init__(self, workdir: Path | str, aet: str = "ORTHANC",
                 config: dict[str, Any] | None = None) -> None:
        self.workdir = Path(workdir)
        self.aet = aet
        self.extra = dict(config or {})
        self.http_port = 0
        self.dicom_port = 0
        self.proc: subprocess.Popen | None = None
        self.session = requests.Session()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "OrthancServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        storage = self.workdir / "storage"
        storage.mkdir(exist_ok=True)
        cfg = json.loads(TEMPLATE.read_text()) if TEMPLATE.exists() else {}
        for _attempt in range(3):
            self.http_port, self.dicom_port = free_port(), free_port()
            cfg.update({
                "Name": f"test-{self.aet}", "StorageDirectory": str(storage),
                "IndexDirectory": str(storage), "HttpPort": self.http_port,
                "DicomPort": self.dicom_port, "DicomAet": self.aet, "Plugins": [],
                "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
                "DicomModalities": {},
            })
            cfg.update(self.extra)
            self.config_path = self.workdir / "orthanc.json"
            self.config_path.write_text(json.dumps(cfg, indent=1))
            self.log_path = self.workdir / "orthanc.log"
            if self._launch(timeout):
                return self
            self.stop()
        raise RuntimeError(f"Orthanc did not start; see {self.log_path}:\n"
                           + self.log_path.read_text(errors="replace")[-2000:])

    def _launch(self, timeout: float) -> bool:
        """Start the process on ``config_path``; True once its REST API answers."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(ORTHANC_BIN), str(self.config_path)], env=dicom_env(), stdout=log,
                stderr=subprocess.STDOUT, cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.session.get(self.url + "/system", timeout=1).ok:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
        return False

    def restart(self, timeout: float = 30.0) -> "OrthancServer":
        """Start again with the same configuration file: same ports, same storage."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("Orthanc is still running")
        if not self._launch(timeout):
            raise RuntimeError(f"Orthanc did not restart; see {self.log_path}")
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then wait for the PID to exit (SIGKILL after ``timeout``)."""
        stop_process(self.proc, timeout)
        self.proc = None

    def __enter__(self) -> "OrthancServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # -- REST ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw: Any) -> requests.Response:
        """One REST call, sent again once on a new connection when Orthanc closed the kept-alive
        one just as the request went out (RemoteDisconnected: no response, nothing processed;
        seen in full test runs). Every REST call goes through here."""
        try:
            return self.session.request(method, self.url + path, **kw)
        except requests.ConnectionError as exc:
            if "RemoteDisconnected" not in repr(exc):
                raise
            self.session.close()
            return self.session.request(method, self.url + path, **kw)

    def get(self, path: str, **kw: Any) -> Any:
        r = self._request("GET", path, timeout=kw.pop("timeout", 60), **kw)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        data = body if isinstance(body, (bytes, bytearray)) else json.dumps(body)
        r = self._request("POST", path, data=data, timeout=kw.pop("timeout", 600), **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    def upload(self, path: Path | str) -> str:
        """Upload one DICOM file; return its Orthanc instance id."""
        res = self.post("/instances", Path(path).read_bytes())
        return res["ID"]

    def upload_bytes(self, data: bytes) -> str:
        return self.post("/instances", data)["ID"]

    def upload_dir(self, folder: Path | str) -> list[str]:
        """Upload every file below ``folder`` (recursively, sorted); return instance ids."""
        ids = []
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                ids.append(self.upload(p))
        return ids

    def instances(self) -> list[str]:
        return self.get("/instances")

    def study_instances(self, study_id: str) -> list[dict]:
        """Instances of an Orthanc study id (``/studies/{id}/instances``)."""
        return self.get(f"/studies/{study_id}/instances")

    def instance_tags(self, instance_id: str) -> dict:
        return self.get(f"/instances/{instance_id}/simplified-tags")

    def instance_file(self, instance_id: str) -> bytes:
        r = self._request("GET", f"/instances/{instance_id}/file", timeout=60)
        r.raise_for_status()
        return r.content

    def find_study(self, study_uid: str) -> str | None:
        res = self.post("/tools/lookup", study_uid.encode())
        for r in res or []:
            if r.get("Type") == "Study":
                return r["ID"]
        return None

    def register_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """``PUT /modalities/<name>`` (run-time registration of a DICOM peer)."""
        r = self._request("PUT", f"/modalities/{name}",
                          data=json.dumps({"AET": aet, "Host": host, "Port": port}), timeout=30)
        r.raise_for_status()

    def echo(self, modality: str) -> bool:
        r = self._request("POST", f"/modalities/{modality}/echo", data="{}", timeout=30)
        return r.ok

    def store_to(self, modality: str, resource_ids: Iterable[str], timeout: float = 600) -> Any:
        """C-STORE resources (instance/series/study ids) to a registered modality (synchronous).

        Raises ``requests.HTTPError`` when Orthanc reports a failure.
        """
        body = {"Resources": list(resource_ids), "Synchronous": True}
        return self.post(f"/modalities/{modality}/store", body, timeout=timeout)
