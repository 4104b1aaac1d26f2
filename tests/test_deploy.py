"""deploy/ stays consistent with the code: compose, Dockerfiles, systemd unit, example configs.

No Docker engine runs here, so the compose file, the Dockerfiles and the unit are parsed and
checked against the real config schema (``load_config``), the real CLI parser and the real
Orthanc autoroute script; the example configuration is also run for real (``dicom-node serve``)
and the container healthcheck command is executed against it.
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from dicom_node.cli import build_parser
from dicom_node.config import load_config
from dicom_node.devtools.orthanc import free_port
from dicom_node.route.rules import load_rules

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
UNIT = DEPLOY / "dicom-node.service"
DOCKER_EXAMPLES = DEPLOY / "examples" / "docker"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda"]


# --------------------------------------------------------------------------- helpers
def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> host source (relative sources resolved against deploy/)."""
    out = {}
    for v in service.get("volumes") or []:
        parts = v.split(":")
        src, dst = parts[0], parts[1]
        out[dst] = str((DEPLOY / src).resolve()) if src.startswith((".", "/")) else src
    return out


def _ports(service: dict) -> dict[int, int]:
    """Container port -> published host port."""
    out = {}
    for p in service.get("ports") or []:
        host, container = str(p).rsplit(":", 1)[-2:] if ":" in str(p) else (p, p)
        out[int(container)] = int(host)
    return out


def _orthanc_env_key(var: str) -> list[str]:
    """orthancteam image rule: ORTHANC__DICOM_MODALITIES -> ["DicomModalities"] (path)."""
    assert var.startswith("ORTHANC__")
    return ["".join(w.capitalize() for w in level.split("_"))
            for level in var[len("ORTHANC__"):].split("__")]


def _orthanc_config(service: dict) -> dict:
    """The Orthanc configuration the image builds from ORTHANC__* variables (values as JSON)."""
    cfg: dict = {}
    for var, value in _env(service).items():
        if not var.startswith("ORTHANC__"):
            continue
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        node = cfg
        path = _orthanc_env_key(var)
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = parsed
    return cfg


def _healthcheck_url(cmd: list[str] | str) -> str:
    text = cmd if isinstance(cmd, str) else " ".join(cmd)
    m = re.search(r"http://[^'\"\s]+", text)
    assert m, f"no URL in healthcheck {text!r}"
    return m.group(0)


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        instr, _, rest = buf.partition(" ")
        lines.append((instr.upper(), rest.strip()))
        buf = ""
    return lines


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule (simplified): the last matching pattern wins; a directory covers its tree."""
    ignored = False
    parents = [path] + [str(p) for p in Path(path).parents if str(p) != "."]
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(p, pat) for p in parents):
            ignored = not neg
    return ignored


# --------------------------------------------------------------------------- example configs
@pytest.mark.parametrize("path", [DEPLOY / "examples" / "node.yaml", DOCKER_EXAMPLES / "node.yaml"],
                         ids=["bare-metal", "docker"])
def test_example_node_configs_load_with_the_real_schema(path: Path):
    cfg = load_config(path)
    assert cfg.routing_file.is_file(), f"{path}: routing_file {cfg.routing_file} missing"
    assert cfg.http.port, "examples enable /healthz + /metrics"
    assert cfg.peers and (cfg.allowed_peers or cfg.allow_any_peer)


@pytest.mark.parametrize("path", [DEPLOY / "examples" / "node.yaml", DOCKER_EXAMPLES / "node.yaml"],
                         ids=["bare-metal", "docker"])
def test_example_routing_rules_load_and_name_known_peers(path: Path):
    cfg = load_config(path)
    load_rules(cfg.routing_file)  # raises with file/line/field on any error
    text = yaml.safe_load(cfg.routing_file.read_text())
    names = {p.name for p in cfg.peers}
    peers_used = set(re.findall(r"'peer': '([^']+)'", repr(text)))
    assert peers_used <= names, f"routing.yaml names peers {peers_used - names} unknown to node.yaml"


# --------------------------------------------------------------------------- compose
def test_compose_node_service_matches_config_and_cli():
    compose = _compose()
    node = compose["services"]["ainode"]
    mounts = _mounts(node)
    # the command is one the real CLI accepts, and its config is the mounted example
    assert node["command"][0] == "dicom-node"
    args = build_parser().parse_args(node["command"][1:])
    assert args.command == "serve"
    assert Path(mounts[args.config]) == (DOCKER_EXAMPLES / "node.yaml").resolve()
    cfg = load_config(mounts[args.config])
    # routing.yaml is mounted where node.yaml resolves it (beside it, in the container)
    container_routing = str(Path(args.config).parent / cfg.routing_file.name)
    assert Path(mounts[container_routing]) == cfg.routing_file
    # spool + index + outbox live on a named (persistent) volume
    assert mounts[str(cfg.data_dir)] in compose["volumes"]
    # DICOM and HTTP ports published, healthcheck on /healthz of http.port
    ports = _ports(node)
    assert cfg.port in ports and cfg.http.port in ports
    assert cfg.http.host == "0.0.0.0", "other containers (Prometheus) must reach /metrics"
    url = _healthcheck_url(node["healthcheck"]["test"])
    assert url == f"http://127.0.0.1:{cfg.http.port}/healthz"
    assert _env(node)["TCP_NODELAY"] == "1"
    # the Prometheus example scrapes this service on http.port
    prom = yaml.safe_load((DEPLOY / "examples" / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "dicom-node"]
    assert job["metrics_path"] == "/metrics"
    assert f"ainode:{cfg.http.port}" in job["static_configs"][0]["targets"]
    # GPU reservation
    devices = node["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    # build context is the repository and the Dockerfile exists
    assert (DEPLOY / node["build"]["context"]).resolve() == REPO
    assert (REPO / node["build"]["dockerfile"]).is_file()


def test_compose_orthanc_autoroutes_to_the_node():
    compose = _compose()
    orthanc, node = compose["services"]["orthanc"], compose["services"]["ainode"]
    assert orthanc["image"].startswith("orthancteam/orthanc:")
    ocfg = _orthanc_config(orthanc)
    cfg = load_config(_mounts(node)[build_parser().parse_args(node["command"][1:]).config])
    # Orthanc's modality entry for the node: its AE title, its service name, its DICOM port
    target = ocfg["AiNodeAutoroute"]["Target"]
    aet, host, port = ocfg["DicomModalities"][target]
    assert (aet, host, port) == (cfg.ae_title, "ainode", cfg.port)
    # the Lua script is mounted from the repo and listed; it reads the same settings key
    mounts = _mounts(orthanc)
    (lua_path,) = ocfg["LuaScripts"]
    assert Path(mounts[lua_path]) == (REPO / "orthanc" / "autoroute.lua").resolve()
    assert "config['AiNodeAutoroute']" in (REPO / "orthanc" / "autoroute.lua").read_text()
    # the node accepts Orthanc and sends results back to it
    assert any(p.ae_title == ocfg["DicomAet"] for p in cfg.allowed_peers)
    back = [p for p in cfg.peers if p.host == "orthanc"]
    assert back and back[0].ae_title == ocfg["DicomAet"]
    assert back[0].port == ocfg.get("DicomPort", 4242) and back[0].port in _ports(orthanc)
    assert 0 < int(ocfg["StableAge"]) <= 60
    assert _env(orthanc)["TCP_NODELAY"] == "1"
    assert orthanc["healthcheck"]["test"]
    assert any(v.startswith("orthanc-db:") for v in orthanc["volumes"])


# --------------------------------------------------------------------------- Dockerfiles
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_exist_and_cmd_runs_the_cli(dockerfile: Path):
    instrs = _dockerfile(dockerfile)
    ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
    patterns = [ln.strip() for ln in ignore_file.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    copied_to: dict[str, str] = {}
    for instr, rest in instrs:
        if instr != "COPY":
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        *srcs, dst = parts
        for src in srcs:
            assert (REPO / src).exists(), f"{dockerfile.name}: COPY {src}: not in the repository"
            assert not _dockerignored(src, patterns), f"{dockerfile.name}: {src} is dockerignored"
            copied_to[str(Path(dst) / Path(src).name) if dst.endswith("/") else dst] = src
    (cmd,) = [json.loads(rest) for instr, rest in instrs if instr == "CMD"]
    args = build_parser().parse_args(cmd[1:])
    assert cmd[0] == "dicom-node" and args.command == "serve"
    cfg = load_config(REPO / copied_to[args.config])  # the image's default config
    expose = {int(p) for instr, rest in instrs if instr == "EXPOSE" for p in rest.split()}
    assert {cfg.port, cfg.http.port} <= expose
    (hc,) = [rest for instr, rest in instrs if instr == "HEALTHCHECK"]
    assert _healthcheck_url(hc) == f"http://127.0.0.1:{cfg.http.port}/healthz"
    env = " ".join(rest for instr, rest in instrs if instr == "ENV")
    assert "TCP_NODELAY=1" in env
    # torch pin identical to pyproject's
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.replace(" ", "").startswith("torch==")]
    assert f'"{pin}"' in dockerfile.read_text()
    if dockerfile.name == "Dockerfile":
        assert "--index-url https://download.pytorch.org/whl/cpu" in dockerfile.read_text()
    # the console script the CMD calls is the one pyproject installs
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["dicom-node"] == "dicom_node.cli:main"


# --------------------------------------------------------------------------- systemd
def test_systemd_unit_runs_the_cli_with_the_example_config():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keys are case-sensitive in systemd
    unit.read_string(UNIT.read_text())
    svc = unit["Service"]
    exec_start = shlex.split(svc["ExecStart"])
    assert exec_start[0].endswith("/.venv/bin/dicom-node")
    args = build_parser().parse_args(exec_start[1:])
    assert args.command == "serve" and args.config == "/etc/dicom-node/node.yaml"
    assert svc["Restart"] == "on-failure"
    envs = [ln.split("=", 1)[1] for ln in UNIT.read_text().splitlines()
            if ln.startswith("Environment=")]
    assert "TCP_NODELAY=1" in envs
    # the example config's data_dir is the unit's StateDirectory (created, owned, writable)
    cfg = load_config(DEPLOY / "examples" / "node.yaml")
    assert cfg.data_dir == Path("/var/lib") / svc["StateDirectory"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


# --------------------------------------------------------------------------- for real
@pytest.mark.slow
def test_docker_example_config_serves_and_container_healthcheck_passes(tmp_path: Path):
    """The compose node config, with only its data_dir and ports moved, runs the real node;
    the compose healthcheck command (with that port) succeeds, ``status`` works, SIGTERM stops."""
    data = yaml.safe_load((DOCKER_EXAMPLES / "node.yaml").read_text())
    orig_http_port = data["http"]["port"]
    dicom_port, http_port = free_port(), free_port()
    data.update(data_dir=str(tmp_path / "data"), port=dicom_port)
    data["http"].update(port=http_port, host="127.0.0.1")
    cfg_path = tmp_path / "node.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    (tmp_path / "routing.yaml").write_text((DOCKER_EXAMPLES / "routing.yaml").read_text())
    exe = Path(sys.executable).with_name("dicom-node")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([str(exe), "serve", "--config", str(cfg_path)],
                            stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "TCP_NODELAY": "1"})
    try:
        url = f"http://127.0.0.1:{http_port}/healthz"
        deadline, body = time.time() + 60, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.3)
        assert body is not None, (tmp_path / "serve.log").read_text()[-3000:]
        assert body["status"] == "ok"
        hc = _compose()["services"]["ainode"]["healthcheck"]["test"]
        assert hc[0] == "CMD" and hc[1] == "python"
        hc_cmd = [sys.executable] + [a.replace(f"127.0.0.1:{orig_http_port}/",
                                               f"127.0.0.1:{http_port}/") for a in hc[2:]]
        assert subprocess.run(hc_cmd, timeout=20).returncode == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
            assert b"dicom_node_spool_free_bytes" in r.read()
        st = subprocess.run([str(exe), "status", "--config", str(cfg_path), "--json"],
                            capture_output=True, text=True, timeout=60)
        assert st.returncode == 0 and "jobs" in json.loads(st.stdout)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = None
        log.close()
    assert rc == 0, (tmp_path / "serve.log").read_text()[-3000:]
