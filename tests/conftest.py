"""Shared pytest fixtures.

* ``orthanc``: a real Orthanc (Debian ``/usr/sbin/Orthanc``) on free loopback ports with its own
  storage in ``tmp_path``, ``TCP_NODELAY=1`` in its environment, stopped with SIGTERM.
* ``shared_dicom``: ``../shared/data/dicom`` beside the repository (skips when absent).
* ``node_factory``: start the node as a real subprocess (``NodeProcess``), stopped at teardown.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from orthanc_harness import ORTHANC_BIN, OrthancServer

from ai.memory import tune

tune()  # the tests' own model runs get memory as the node's workers do (runner.allocator: tuned)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def orthanc(tmp_path: Path):
    """A running real Orthanc (``OrthancServer``); skipped when the package is missing."""
    if not ORTHANC_BIN.exists():
        pytest.skip("Debian package orthanc not installed (/usr/sbin/Orthanc)")
    srv = OrthancServer(tmp_path / "orthanc").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def shared_dicom() -> Path:
    """``../shared/data/dicom`` (the multi-vendor corpus); skips when absent."""
    p = SHARED_DATA / "dicom"
    if not p.is_dir():
        pytest.skip(f"shared DICOM corpus not found at {p}")
    return p


@pytest.fixture
def node_factory(tmp_path: Path):
    """``make(**config_overrides) -> NodeProcess`` (started); all stopped at teardown."""
    from node_harness import NodeProcess

    started: list[NodeProcess] = []

    def make(name: str = "node", start: bool = True, **overrides) -> NodeProcess:
        n = NodeProcess(tmp_path / name, **overrides)
        started.append(n)
        return n.start() if start else n

    yield make
    for n in started:
        n.stop()
