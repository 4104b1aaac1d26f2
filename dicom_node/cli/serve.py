"""``dicom-node serve``: run the node (Storage SCP, completion, routing) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import sys

from dicom_node.cli.common import add_config_option, load_or_exit


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``serve`` command."""
    s = sub.add_parser("serve", help="run the Storage SCP, completion and routing")
    add_config_option(s)
    s.add_argument("--port", type=int, default=None, help="override the configured port")
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the node (Storage SCP, completion, routing) until SIGTERM/SIGINT."""
    from dicom_node.config import ConfigError
    from dicom_node.ops.logsetup import setup_logging

    cfg = load_or_exit(args.config)
    if args.port is not None:
        cfg.port = args.port
    setup_logging(cfg.log.format, cfg.log.level, cfg.log.file)
    from dicom_node.service import Node

    try:
        node = Node(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        node.run_forever()
    except OSError as exc:  # e.g. port in use
        print(f"error: cannot start the node: {exc}", file=sys.stderr)
        return 1
    return 0
