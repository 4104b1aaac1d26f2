"""The README's test command also enforces the linters: ruff and mypy as configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = BIN / tool
    assert exe.exists(), f"{tool} is not installed in {BIN}: pip install -e '.[test]'"
    return subprocess.run([str(exe), *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    r = _run("ruff", "check", "--no-cache", ".")
    assert r.returncode == 0, f"ruff findings:\n{r.stdout}{r.stderr}"


def test_mypy_finds_nothing():
    r = _run("mypy", "--no-incremental")
    assert r.returncode == 0, f"mypy findings:\n{r.stdout}{r.stderr}"
