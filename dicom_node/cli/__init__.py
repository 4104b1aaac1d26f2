"""The ``dicom-node`` command line: one module per command, each with ``add_parser`` and ``cmd_*``.

A new command is a new module here with ``add_parser(sub)``, plus its name in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse

from dicom_node.cli import demo, retry, rules_test, serve, status

COMMANDS = (serve, status, retry, demo, rules_test)


def build_parser() -> argparse.ArgumentParser:
    """The ``dicom-node`` parser with every command of :data:`COMMANDS`."""
    p = argparse.ArgumentParser(prog="dicom-node",
                                description="MS lesion DICOM AI node (research use only)")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one ``dicom-node`` command; return its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
