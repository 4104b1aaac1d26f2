"""The one pynetdicom guard: it holds for the installed pynetdicom, and it notices drift."""

from __future__ import annotations

import re
from pathlib import Path

import pynetdicom
import pytest

import dicom_node._pynetdicom as guard
from dicom_node._pynetdicom import gate

PKG = Path(guard.__file__).resolve().parents[1]


def test_guard_holds_for_the_installed_pynetdicom():
    assert guard.problems() == ()
    assert pynetdicom.__version__.startswith(guard.VERIFIED_SERIES + ".")


def test_pyproject_pins_the_verified_series():
    text = (PKG.parent / "pyproject.toml").read_text()
    pin = re.search(r'"pynetdicom~=(\d+\.\d+)\.\d+"', text)
    assert pin and pin.group(1) == guard.VERIFIED_SERIES


def test_a_missing_private_name_or_another_series_is_reported(monkeypatch):
    monkeypatch.setitem(guard.PRIVATE_NAMES, "pynetdicom.acse:ACSE", ("_no_such_internal",))
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    guard.problems.cache_clear()
    try:
        found = guard.problems()
        assert any("_no_such_internal" in p for p in found)
        assert any("3.1.0" in p for p in found)
        with pytest.raises(RuntimeError, match="association gate"):
            gate.set_gate(pynetdicom.AE(), lambda ae, addr, called: None)
    finally:
        guard.problems.cache_clear()


def test_every_private_pynetdicom_name_used_is_listed():
    """A private pynetdicom attribute used anywhere in the package must be in PRIVATE_NAMES."""
    listed = {n for names in guard.PRIVATE_NAMES.values() for n in names}
    ours = {"_node_wait", "_node_pending", "_node_incoming", "_node_guard"}  # attributes the node sets itself
    used: set[str] = set()
    for path in PKG.joinpath("dicom_node").rglob("*.py"):
        text = path.read_text()
        if "pynetdicom" not in text:
            continue
        used |= set(re.findall(r"\b(?:assoc|dul|dimse|acse|ACSE|Association)\.(_[a-z][a-z_]*)\b", text))
    assert used - ours <= listed, f"private pynetdicom names not in the guard: {sorted(used - ours - listed)}"
