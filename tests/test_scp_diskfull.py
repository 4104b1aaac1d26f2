"""A full disk during C-STORE: failure status 0xA700, nothing partial, the node stays up.

Real, not injected: the node's data directory is a tiny tmpfs (needs root to mount; skipped
otherwise; the injected variant is tests/test_spool.py::test_failed_write_leaves_nothing_partial).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from dicom_factory import make_mr_series, write_series
from node_harness import STORESCU

pytestmark = pytest.mark.skipif(not Path(STORESCU).exists(), reason="dcmtk not installed")


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_answers_out_of_resources_and_leaves_nothing_partial(tiny_fs, node_factory,
                                                                      tmp_path):
    node = node_factory(data_dir=str(tiny_fs / "data"), min_free_disk_mb=0,
                        runner={"enabled": False}, completion={"quiet_seconds": 1})
    # 30 slices of 256x256x2 bytes (~130 KiB each, ~4 MiB) do not fit in 3 MiB
    ser = make_mr_series(30, 256, 256, contrast="FLAIR")
    files = write_series(ser, tmp_path / "src")
    r = node.storescu(*files)
    out = r.stdout + r.stderr
    n_ok = out.count("Received Store Response (Success)")
    # dcmtk shows 0xA7xx as "Refused: OutOfResources" and stops sending after it
    n_fail = out.count("Received Store Response (Refused: OutOfResources)")
    assert n_ok > 0 and n_fail == 1 and n_ok + n_fail <= len(files), out
    assert "C-STORE failed (0xA700): spool write error ENOSPC" in node.log_text()
    spool = tiny_fs / "data" / "spool"
    assert not [p for p in spool.rglob(".tmp-*")], "temporary files left behind"
    stored = sorted(spool.rglob("*.dcm"))
    assert len(stored) == n_ok
    by_uid = {ds.SOPInstanceUID: f for ds, f in zip(ser, files, strict=False)}
    for p in stored:  # every stored file is complete and intact
        got = pydicom.dcmread(p)
        assert got.PixelData == pydicom.dcmread(by_uid[p.stem]).PixelData
    assert node.alive() and node.echo()
