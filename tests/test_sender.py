"""Outbox / C-STORE sender against a real dcmtk storescp: delivery, backoff, dead letter, restart."""
from __future__ import annotations

import copy
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import RLELossless

from dicom_node.devtools.orthanc import free_port
from dicom_node.devtools.synthetic import blob_labels, result_from_labels
from dicom_node.devtools.wrap import write_mr_series
from dicom_node.encode.overlay import build_overlay
from dicom_node.encode.seg import build_seg
from dicom_node.encode.sr import build_sr
from dicom_node.run.volume import load_series
from dicom_node.send.outbox import Destination, Outbox

STORESCP = "/usr/bin/storescp"  # dcmtk (a pynetdicom 'storescp' may shadow it on PATH)
pytestmark = pytest.mark.skipif(not os.access(STORESCP, os.X_OK), reason="dcmtk storescp not installed")


class StoreSCP:
    """A real dcmtk storescp on a loopback port, writing what it receives to ``out``."""

    def __init__(self, port: int, out: Path, accept_all: bool = True, aet: str = "STORESCP"):
        self.port, self.out, self.aet = port, out, aet
        out.mkdir(parents=True, exist_ok=True)
        args = [STORESCP, "-aet", aet, "-od", str(out), "--single-process"]
        if accept_all:
            args.append("+xa")
        args.append(str(port))
        env = dict(os.environ, TCP_NODELAY="1")
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"storescp exited: {self.proc.stdout.read().decode(errors='replace')}")
            time.sleep(0.05)
        raise RuntimeError("storescp did not start listening")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def received(self) -> list[pydicom.Dataset]:
        return [pydicom.dcmread(p) for p in sorted(self.out.iterdir()) if p.is_file()]

    @property
    def dest(self) -> Destination:
        return Destination(self.aet, "127.0.0.1", self.port)


@pytest.fixture()
def scps():
    started: list[StoreSCP] = []

    def start(port: int, out: Path, **kw) -> StoreSCP:
        s = StoreSCP(port, out, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """SEG + SR + overlay (RLE) datasets of a small synthetic case."""
    tmp = tmp_path_factory.mktemp("case")
    img = sitk.GetImageFromArray((np.random.default_rng(1).random((6, 32, 32)) * 400).astype(np.float32))
    vol = load_series(write_mr_series(img, tmp, study_uid="1.2.826.0.1.3680043.99.4", contrast="FLAIR"))
    labels = blob_labels((6, 32, 32), [((2, 10, 10), 2.0), ((4, 20, 22), 2.5)])
    res = result_from_labels(labels, vol.image, ["periventricular", "infratentorial"])
    seg = build_seg(res, vol, job_key="send")
    sr = build_sr(res, vol, seg, job_key="send")
    overlay = build_overlay(res, vol, job_key="send", min_size=64)[:2]
    return [seg, sr, *overlay]


def _uids(datasets) -> list[str]:
    return sorted(str(ds.SOPInstanceUID) for ds in datasets)


def test_delivers_each_object_once_with_its_transfer_syntax(tmp_path, scps, results):
    scp = scps(free_port(), tmp_path / "rx")
    ob = Outbox(tmp_path / "ob.sqlite3", tmp_path / "files")
    for ds in results:
        ob.enqueue("job1", ds, scp.dest)
        ob.enqueue("job1", ds, scp.dest)  # idempotent
    assert ob.pending_count("job1") == len(results)
    assert ob.send_due() == len(results)
    got = scp.received()
    assert _uids(got) == _uids(results)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in got}
    for ds in results:  # RLE overlay stays RLE, SEG/SR uncompressed
        assert by_uid[ds.SOPInstanceUID].file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert {it.state for it in ob.items("job1")} == {"sent"}
    assert not any(it.path.exists() for it in ob.items("job1"))
    # enqueue again after sending: nothing new goes out
    for ds in results:
        ob.enqueue("job1-rerun", ds, scp.dest)
    assert ob.send_due() == 0
    assert len(scp.received()) == len(results)


def test_a_result_file_is_queued_as_written_and_delivered(tmp_path, scps, results):
    """enqueue_file: the outbox holds the pipeline's bytes (no read and re-encode), once."""
    scp = scps(free_port(), tmp_path / "rx")
    ob = Outbox(tmp_path / "ob.sqlite3", tmp_path / "files")
    sources = {}
    for i, ds in enumerate(results):
        src = tmp_path / f"result_{i}.dcm"
        ds.save_as(src, enforce_file_format=True)
        sources[str(ds.SOPInstanceUID)] = src
        for _ in range(2):  # idempotent, as enqueue
            ob.enqueue_file("job1", src, scp.dest, sop_instance_uid=str(ds.SOPInstanceUID),
                            sop_class_uid=str(ds.SOPClassUID),
                            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID))
    items = ob.items("job1")
    assert len(items) == len(results)
    for it in items:
        assert it.path.read_bytes() == sources[it.sop_instance_uid].read_bytes()
    assert ob.send_due() == len(results)
    got = scp.received()
    assert _uids(got) == _uids(results)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in got}
    for ds in results:
        assert by_uid[ds.SOPInstanceUID].file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def test_compressed_object_decompressed_for_a_peer_without_rle(tmp_path, scps, results):
    scp = scps(free_port(), tmp_path / "rx", accept_all=False)  # uncompressed only
    ob = Outbox(tmp_path / "ob.sqlite3", tmp_path / "files")
    rle = [ds for ds in results if ds.file_meta.TransferSyntaxUID == RLELossless]
    assert rle
    for ds in rle:
        ob.enqueue("j", ds, scp.dest)
    assert ob.send_due() == len(rle)
    got = {str(d.SOPInstanceUID): d for d in scp.received()}
    for ds in rle:
        rx = got[ds.SOPInstanceUID]
        assert not rx.file_meta.TransferSyntaxUID.is_compressed
        assert np.array_equal(rx.pixel_array, ds.pixel_array)


def test_peer_down_backoff_then_delivered_exactly_once(tmp_path, scps, results):
    port = free_port()
    dest = Destination("STORESCP", "127.0.0.1", port)
    ob = Outbox(tmp_path / "ob.sqlite3", tmp_path / "files", max_attempts=5, base_delay_s=2.0)
    for ds in results:
        ob.enqueue("j", ds, dest)
    t0 = time.time() + 10.0  # the schedule is driven by `now`
    assert ob.send_due(now=t0) == 0  # connection refused
    items = ob.items("j")
    assert all(it.state == "pending" and it.attempts == 1 and it.last_error for it in items)
    assert all(it.next_try == pytest.approx(t0 + 2.0) for it in items)
    assert ob.send_due(now=t0 + 1.0) == 0  # not due yet: no attempt
    assert all(it.attempts == 1 for it in ob.items("j"))
    assert ob.send_due(now=t0 + 2.5) == 0  # second failure -> 4 s backoff
    assert all(it.attempts == 2 and it.next_try == pytest.approx(t0 + 2.5 + 4.0) for it in ob.items("j"))

    scp = scps(port, tmp_path / "rx")  # peer comes up
    assert ob.send_due(now=t0 + 5.0) == 0  # still backing off
    assert ob.send_due(now=t0 + 7.0) == len(results)
    assert ob.send_due(now=t0 + 100.0) == 0
    assert _uids(scp.received()) == _uids(results)  # exactly once
    assert ob.counts("j") == {"pending": 0, "sent": len(results), "dead": 0}


def test_dead_letter_after_max_attempts_and_retry(tmp_path, scps, results):
    port = free_port()
    dest = Destination("STORESCP", "127.0.0.1", port)
    ob = Outbox(tmp_path / "ob.sqlite3", tmp_path / "files", max_attempts=3, base_delay_s=1.0)
    ob.enqueue("j", results[1], dest)
    t = time.time()
    for _ in range(5):
        ob.send_due(now=t)
        t += 1000.0
    (item,) = ob.items("j")
    assert item.state == "dead" and item.attempts == 3
    assert "connection failed" in item.last_error
    scp = scps(port, tmp_path / "rx")
    assert ob.send_due(now=t) == 0  # dead items are not retried automatically
    assert ob.retry_dead("j") == 1
    assert ob.send_due(now=t) == 1
    assert _uids(scp.received()) == [str(results[1].SOPInstanceUID)]


def test_survives_restart(tmp_path, scps, results):
    port = free_port()
    dest = Destination("STORESCP", "127.0.0.1", port)
    ob = Outbox(tmp_path / "ob.sqlite3", tmp_path / "files", base_delay_s=2.0)
    for ds in results:
        ob.enqueue("j", ds, dest)
    ob.send_due()  # peer down: one failed attempt recorded
    ob.close()
    del ob

    scp = scps(port, tmp_path / "rx")
    ob2 = Outbox(tmp_path / "ob.sqlite3", tmp_path / "files", base_delay_s=2.0)
    assert ob2.pending_count("j") == len(results)
    assert all(it.attempts == 1 for it in ob2.items("j"))
    assert ob2.send_due(now=time.time() + 2.0) == len(results)
    assert _uids(scp.received()) == _uids(results)


def test_sop_class_the_peer_refuses_is_recorded_not_sent(tmp_path, scps, results):
    scp = scps(free_port(), tmp_path / "rx")
    ob = Outbox(tmp_path / "ob.sqlite3", tmp_path / "files", max_attempts=2)
    odd = results[1].copy()
    odd.SOPClassUID = "1.2.826.0.1.3680043.99.999.1"  # not a storage SOP class storescp knows
    odd.file_meta = results[1].file_meta.copy()
    odd.file_meta.MediaStorageSOPClassUID = odd.SOPClassUID
    ob.enqueue("j", odd, scp.dest)
    ob.enqueue("j", results[0], scp.dest)
    assert ob.send_due() == 1  # the SEG goes through on the same association
    bad = [it for it in ob.items("j") if it.state != "sent"]
    assert len(bad) == 1 and "no presentation context" in bad[0].last_error
    assert _uids(scp.received()) == [str(results[0].SOPInstanceUID)]


def test_default_policy_keeps_trying_for_a_day_then_delivers_when_the_pacs_returns(
        tmp_path, scps, results):
    """The node's default retry policy (node.yaml without an ``outbox`` section), in simulated
    time: a PACS away for 24 hours leaves the result pending, never dead, with the gap between
    attempts capped; when it answers C-ECHO again the result goes out at once, exactly once."""
    from dicom_node.config import NodeConfig

    opts = NodeConfig().outbox.outbox_options()
    port = free_port()
    dest = Destination("STORESCP", "127.0.0.1", port)
    ob = Outbox(tmp_path / "ob.sqlite3", tmp_path / "files", **opts)
    ob.enqueue("j", results[0], dest)
    t0 = t = time.time()
    attempts_at = []
    while t - t0 < 2 * 3600:  # the backoff grows to its cap
        ob.send_due(now=t)
        attempts_at.append(t)
        t = ob.items("j")[0].next_try
    gaps = np.diff(attempts_at)
    assert gaps.max() == opts["max_delay_s"] <= 900
    for hours in (12, 24, 30):  # later attempts, one each (the outcome depends on the time)
        t = t0 + hours * 3600
        ob.send_due(now=t)
        (item,) = ob.items("j")
        assert item.state == "pending", f"dead after {hours} h"
    assert ob.oldest_undelivered_age(now=t) >= 24 * 3600
    ob.send_due(now=t)  # one more failure: the next attempt is max_delay_s away
    assert ob.items("j")[0].next_try - t == opts["max_delay_s"]
    scp = scps(port, tmp_path / "rx")
    t += 1.0  # the PACS is back a second later...
    assert ob.probe_destinations(now=t) == 1  # ...but it answers C-ECHO: due now
    assert ob.send_due(now=t) == 1
    assert ob.send_due(now=t + 10_000) == 0
    assert _uids(scp.received()) == [str(results[0].SOPInstanceUID)]
    assert ob.oldest_undelivered_age(now=t) == 0.0


def test_dead_letters_go_out_when_the_destination_answers_echo_again(tmp_path, scps, results):
    port = free_port()
    dest = Destination("STORESCP", "127.0.0.1", port)
    ob = Outbox(tmp_path / "ob.sqlite3", tmp_path / "files", max_attempts=0, base_delay_s=1.0,
                max_delay_s=4.0, retry_for_s=20.0, echo_interval_s=5.0)
    ob.enqueue("j", results[0], dest)
    t = time.time()
    while ob.items("j")[0].state == "pending":
        ob.send_due(now=t)
        t += 4.0
    assert ob.items("j")[0].state == "dead"
    assert ob.probe_destinations(now=t) == 0  # still down
    scp = scps(port, tmp_path / "rx")
    assert ob.probe_destinations(now=t + 1.0) == 0  # not again within echo_interval_s
    assert ob.probe_destinations(now=t + 5.0) == 1
    assert ob.items("j")[0].state == "pending"
    assert ob.send_due(now=t + 5.0) == 1
    assert _uids(scp.received()) == [str(results[0].SOPInstanceUID)]


def test_echo_does_not_revive_what_the_pacs_refused(tmp_path, scps, results):
    scp = scps(free_port(), tmp_path / "rx")
    ob = Outbox(tmp_path / "ob.sqlite3", tmp_path / "files", max_attempts=1, echo_interval_s=1.0)
    odd = copy.deepcopy(results[2])  # Dataset.copy() shares the elements
    odd.SOPClassUID = "1.2.826.0.1.3680043.99.999.1"  # not a storage SOP class storescp knows
    odd.file_meta.MediaStorageSOPClassUID = odd.SOPClassUID
    ob.enqueue("j", odd, scp.dest)
    ob.enqueue("j", results[0], scp.dest)
    assert ob.send_due() == 1
    assert [it.state for it in ob.items("j")] == ["dead", "sent"]
    assert ob.probe_destinations(now=time.time() + 10) == 0
    assert [it.state for it in ob.items("j")] == ["dead", "sent"]
