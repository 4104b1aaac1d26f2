"""Run dicom3tools ``dciodvfy`` and parse its report.

``dciodvfy`` prints its findings on stderr and exits 0 even when it reports errors, so the
result is judged by counting the ``Error -`` lines. The Debian build (2022) does not know the
Label Map Segmentation SOP class; the node never writes one by default.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

__all__ = ["DciodvfyReport", "validate_file", "validate_dataset", "available"]

DCIODVFY = "dciodvfy"


@dataclass
class DciodvfyReport:
    """Parsed output of one dciodvfy run."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    text: str = ""

    @property
    def ok(self) -> bool:
        """No ``Error -`` lines."""
        return not self.errors


def available() -> bool:
    """True when the ``dciodvfy`` executable is on PATH."""
    return shutil.which(DCIODVFY) is not None


def validate_file(path: Path | str, *, timeout: float = 120.0) -> DciodvfyReport:
    """Run ``dciodvfy`` on one file and return its errors and warnings."""
    exe = shutil.which(DCIODVFY)
    if exe is None:
        raise FileNotFoundError("dciodvfy not found (Debian package dicom3tools)")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=timeout,
                          errors="replace")
    text = proc.stderr + proc.stdout
    report = DciodvfyReport(text=text)
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Error -"):
            report.errors.append(s)
        elif s.startswith("Warning -"):
            report.warnings.append(s)
    return report


def validate_dataset(ds: Dataset, **kw) -> DciodvfyReport:
    """Write ``ds`` to a temporary file and validate it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "obj.dcm"
        ds.save_as(path, enforce_file_format=True)
        return validate_file(path, **kw)
