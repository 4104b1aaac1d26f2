"""A series completes when the association that delivered it is released (plus a short grace),
not only after the quiet period; the quiet period stays the fallback. Real node, dcmtk storescu.
"""
from __future__ import annotations

import time

from dicom_factory import make_mr_series, write_series

N = 12


def _series(node, uid):
    st = node.status()
    return next((s for s in st["series"] if s["series_uid"] == uid), None)


def test_series_completes_at_association_release(node_factory, tmp_path):
    node = node_factory(runner={"enabled": False},
                        completion={"quiet_seconds": 60, "release_grace_seconds": 1})
    dss = make_mr_series(N, 16, 16, contrast="FLAIR")
    files = write_series(dss, tmp_path / "one")
    assert node.storescu(*files).returncode == 0  # one association for the series
    sent = time.monotonic()
    uid = str(dss[0].SeriesInstanceUID)
    node.wait_for(lambda st: (_series(node, uid) or {}).get("state") == "complete", timeout=30)
    s = _series(node, uid)
    assert time.monotonic() - sent < 10  # not the 60 s quiet period
    assert s["completion_reason"] == "association-released" and s["n_instances"] == N


def test_one_association_per_instance_completes_once_with_every_instance(node_factory, tmp_path):
    node = node_factory(runner={"enabled": False},
                        completion={"quiet_seconds": 60, "release_grace_seconds": 2})
    dss = make_mr_series(N, 16, 16, contrast="FLAIR")
    files = write_series(dss, tmp_path / "each")
    for f in files:  # a sender that opens an association per instance
        assert node.storescu(f).returncode == 0
    uid = str(dss[0].SeriesInstanceUID)
    node.wait_for(lambda st: (_series(node, uid) or {}).get("state") == "complete", timeout=30)
    time.sleep(3)
    s = _series(node, uid)
    assert s["n_instances"] == N and s["completions"] == 1, s


def test_quiet_period_is_the_fallback_when_release_completion_is_off(node_factory, tmp_path):
    node = node_factory(runner={"enabled": False},
                        completion={"quiet_seconds": 3, "release_grace_seconds": 0})
    dss = make_mr_series(4, 16, 16, contrast="FLAIR")
    assert node.storescu(*write_series(dss, tmp_path / "q")).returncode == 0
    uid = str(dss[0].SeriesInstanceUID)
    node.wait_for(lambda st: (_series(node, uid) or {}).get("state") == "complete", timeout=30)
    assert _series(node, uid)["completion_reason"] == "quiet-period"
