"""Logging set-up for the node: plain text or one JSON object per line.

Patient names never reach the logs: the node logs UIDs only, and pynetdicom's own logger (which
can dump datasets at DEBUG) is kept at WARNING.

Values in log messages come from the network (UIDs, AE titles, pynetdicom's and pydicom's
warnings about them), so no record may add a line of its own: in the text format every control
character of a message (newline, carriage return, NUL, ESC, ..., and the Unicode line and
paragraph separators) is written as an escape (``\n``, ``\x00``), and the continuation lines
of a traceback are indented. This holds for every logger, the libraries' included, because it
is done by the root handler's formatter. The JSON format escapes them by construction.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

__all__ = ["setup_logging", "JsonFormatter", "EscapingFormatter", "escape_controls"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028",
                 0x2029: "\\u2029"})


def escape_controls(text: str) -> str:
    """``text`` with every control character (and U+2028/U+2029) written as an escape."""
    return text.translate(_ESCAPES)


class EscapingFormatter(logging.Formatter):
    """The text format, one record per line whatever the message holds (see module doc)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message.rstrip("\r\n"))
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


def _indent(text: str) -> str:
    lines = text.split("\n")
    return "\n".join([escape_controls(lines[0])]
                     + ["    " + escape_controls(line) for line in lines[1:]])


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(fmt: str = "text", level: str = "INFO", file: Path | None = None) -> None:
    """Configure the root logger (idempotent: replaces handlers installed before)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if file:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        f = EscapingFormatter(TEXT_FORMAT)
        f.converter = time.gmtime
        handler.setFormatter(f)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # pynetdicom logs every DIMSE message at INFO (slow, noisy) and datasets at DEBUG.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # Library warnings (highdicom, pydicom) go through the same handler and format.
    logging.captureWarnings(True)
