"""What every ``dicom-node`` command shares: the default config path and loading it or exiting 2."""

from __future__ import annotations

import sys

from dicom_node.config import ConfigError, NodeConfig, load_config

DEFAULT_CONFIG = "config/node.yaml"


def add_config_option(parser) -> None:
    """Add ``--config`` (default ``config/node.yaml``) to a command's parser."""
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="node.yaml (default: %(default)s)")


def load_or_exit(path: str) -> NodeConfig:
    """Load node.yaml; on a config error print it and exit with status 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
