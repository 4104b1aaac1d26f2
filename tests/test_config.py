"""node.yaml loading: defaults, path resolution, errors that name file, line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dicom_node.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_shipped_config_loads_with_contract_defaults():
    cfg = load_config(REPO / "config" / "node.yaml")
    assert cfg.ae_title == "AINODE"
    assert cfg.port == 11112
    assert cfg.data_dir.is_absolute() and cfg.routing_file.is_absolute()
    assert cfg.index_path == cfg.data_dir / "index.sqlite3"
    assert cfg.completion.quiet_seconds > 0
    assert cfg.log.format in ("text", "json")


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    p = tmp_path / "sub" / "node.yaml"
    p.parent.mkdir()
    p.write_text("data_dir: ./d\nrouting_file: r.yaml\n")
    cfg = load_config(p)
    assert cfg.data_dir == (p.parent / "d").resolve()
    assert cfg.routing_file == (p.parent / "r.yaml").resolve()


@pytest.mark.parametrize(
    "text, line, field",
    [
        ("ae_title: AINODE\nport: 70000\n", 2, "port"),
        ("ae_title: AINODE\ncompletion:\n  quiet_seconds: -1\n", 3, "completion.quiet_seconds"),
        ("allowed_peers:\n  - host: 127.0.0.1\n  - {}\n", 3, "allowed_peers.1"),
        ("port: 11112\nbogus_key: 1\n", 2, "bogus_key"),
        ("log:\n  format: xml\n", 2, "log.format"),
        ("ae_title: THIS_AE_TITLE_IS_TOO_LONG\n", 1, "ae_title"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, text, line, field):
    p = tmp_path / "node.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert f"{p}:{line}: {field}" in msg, msg


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "node.yaml"
    p.write_text("port: 1\nallowed_peers: [\n  host: x\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert str(p) in str(ei.value) and "invalid YAML" in str(ei.value)


def test_serve_with_invalid_config_exits_non_zero_with_the_message(tmp_path):
    p = tmp_path / "node.yaml"
    p.write_text("port: not-a-number\n")
    r = subprocess.run([sys.executable, "-m", "dicom_node.cli", "serve", "--config", str(p)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert f"{p}:1: port" in r.stderr


def test_shipped_config_states_the_safe_defaults():
    """config/node.yaml (what operators copy) says what the node does without it: bounded
    PDUs, request deadline, per-address cap, called AE check, the 72 h retry policy."""
    from dicom_node.config import NodeConfig

    cfg, default = load_config(REPO / "config" / "node.yaml"), NodeConfig()
    assert cfg.scp == default.scp and cfg.scp.max_pdu > 0
    assert cfg.outbox == default.outbox and cfg.outbox.retry_for_hours >= 24
    assert cfg.completion.release_grace_seconds == default.completion.release_grace_seconds


def _serve_rc(tmp_path: Path, routing: str) -> subprocess.CompletedProcess[str]:
    rules = tmp_path / "routing.yaml"
    rules.write_text(routing)
    node = tmp_path / "node.yaml"
    node.write_text(f"data_dir: {tmp_path / 'data'}\nrouting_file: {rules}\nport: 0\n"
                    "peers:\n  - {name: pacs, ae_title: PACS, host: 127.0.0.1, port: 11112}\n")
    return subprocess.run([sys.executable, "-m", "dicom_node.cli", "serve", "--config", str(node)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


RULE = """version: 1
rules:
  - name: brain
    pipeline: {pipeline}
    inputs: {{flair: {{required: true, when: {{contrast: FLAIR}}}}}}
    destinations:
      - peer: pacs
      - peer: {peer}
"""


def test_serve_refuses_a_destination_naming_a_peer_node_yaml_lacks(tmp_path):
    r = _serve_rc(tmp_path, RULE.format(pipeline="ms-lesions", peer="research-pacs"))
    assert r.returncode == 2, r.stderr
    assert (f"{tmp_path / 'routing.yaml'}:8: rules[0].destinations[1].peer (rule brain): "
            "unknown peer 'research-pacs' (node.yaml peers: pacs)") in r.stderr


def test_serve_refuses_a_rule_naming_a_pipeline_the_runner_lacks(tmp_path):
    r = _serve_rc(tmp_path, RULE.format(pipeline="ms-lesion", peer="pacs"))
    assert r.returncode == 2, r.stderr
    assert f"{tmp_path / 'routing.yaml'}:4: rules[0].pipeline (rule brain): unknown pipeline 'ms-lesion'" in r.stderr


PRIOR_RULE = """version: 1
rules:
  - name: brain
    pipeline: ms-lesions
    inputs: {{flair: {{required: true, when: {{contrast: FLAIR}}}}}}
    prior:
      enabled: {enabled}
      peer: archive
      lookback_days: {days}
"""


def test_serve_refuses_a_prior_block_naming_a_peer_node_yaml_lacks(tmp_path):
    r = _serve_rc(tmp_path, PRIOR_RULE.format(enabled="true", days=365))
    assert r.returncode == 2, r.stderr
    assert (f"{tmp_path / 'routing.yaml'}:8: rules[0].prior.peer (rule brain): "
            "unknown peer 'archive' (node.yaml peers: pacs)") in r.stderr


def test_a_prior_block_is_checked_like_every_rule_field(tmp_path):
    from dicom_node.route.rules import RulesConfigError, loads_rules

    with pytest.raises(RulesConfigError, match=r"lookback_days"):
        loads_rules(PRIOR_RULE.format(enabled="true", days=0))
    off = loads_rules(PRIOR_RULE.format(enabled="false", days=365))
    assert off.rules[0].prior["enabled"] is False
    assert off.unknown_peers({"pacs"}) == []  # a switched-off prior needs no peer
    on = loads_rules(PRIOR_RULE.format(enabled="true", days=365))
    assert on.rules[0].prior == {"enabled": True, "peer": "archive", "lookback_days": 365,
                                 "modality": "MR", "timeout_seconds": 300.0, "retrieve": "move"}
    assert "archive" in on.peer_names()
