"""Hostile connections against the real node process (issue 12, points 1 and 2), loopback only.

* A PDU header that declares 0xFFFFFFFF bytes (as the first PDU, and as a P-DATA-TF inside an
  established association, on the fast and on the stock DIMSE path) is refused before anything
  is allocated: the node's peak RSS stays put, the connection is aborted, the refusal is logged
  and counted.
* An address the allow-list refuses is closed at accept (127.0.0.2 is loopback too): twenty of
  its connections do not delay a legitimate sender.
* A connection that sends nothing, or drips its A-ASSOCIATE-RQ a byte a second, is closed when
  the request deadline passes; more connections than ``scp.max_connections_per_address`` from
  one address are closed at accept.
* A peer that sends valid but tiny P-DATA-TF PDUs (one byte of a data set each), each just
  under ``scp.network_timeout``, is cut off (``scp.min_message_rate``), while a slow but honest
  sender whose data set takes longer than ``network_timeout`` still gets its instance stored.
"""
from __future__ import annotations

import re
import socket
import struct
import time
from io import BytesIO
from pathlib import Path

import pytest
import requests
from node_harness import association_rq
from orthanc_harness import free_port

HUGE = b"\xff\xff\xff\xff"


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _metric(port: int, reason: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    m = re.search(rf'^dicom_node_associations_rejected_total{{reason="{reason}"}} ([0-9.e+]+)$',
                  text, re.M)
    return float(m.group(1)) if m else 0.0


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the peer closed ``sock`` (reading and discarding), None if it did not."""
    t0 = time.monotonic()
    sock.settimeout(0.5)
    while time.monotonic() - t0 < seconds:
        try:
            if not sock.recv(4096):
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - t0
    return None


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


@pytest.mark.parametrize("fast", [True, False], ids=["fast-dimse", "stock-dimse"])
def test_huge_pdu_header_is_refused_before_allocation(node_factory, fast):
    http = free_port()
    node = node_factory(runner={"enabled": False}, http={"port": http},
                        scp={"fast_dimse": fast})
    assert node.echo()
    base = _peak_rss_mb(node.proc.pid)

    # 1. as the first PDU of a connection
    s = _connect(node.port)
    s.sendall(b"\x01\x00" + HUGE + b"\x00" * 1024)
    assert _closed_within(s, 10) is not None, "connection not closed"
    s.close()
    # 2. as a P-DATA-TF inside an established association
    s = _connect(node.port)
    s.sendall(association_rq(node, "HOSTILE"))
    s.settimeout(10)
    ac = s.recv(6)
    assert ac[:1] == b"\x02", f"no A-ASSOCIATE-AC: {ac!r}"
    s.sendall(b"\x04\x00" + HUGE + b"\x00" * 65536)
    assert _closed_within(s, 10) is not None, "association not aborted"
    s.close()

    time.sleep(0.5)
    peak = _peak_rss_mb(node.proc.pid)
    print(f"peak RSS under two 0xFFFFFFFF PDU headers: {base:.0f} -> {peak:.0f} MB")
    assert peak - base < 64, f"peak RSS grew {base:.0f} -> {peak:.0f} MB"
    log = node.log_text()
    assert log.count("declares 4294967295 bytes") == 2, log[-3000:]
    assert _metric(http, "pdu_too_large") == 2
    assert node.alive() and node.echo()


def test_refused_address_is_closed_at_accept_and_blocks_nobody(node_factory):
    http = free_port()
    node = node_factory(runner={"enabled": False}, http={"port": http},
                        allowed_peers=[{"host": "127.0.0.1"}])
    hostile = []
    for _ in range(20):
        s = _connect(node.port, source="127.0.0.2")
        s.sendall(b"\x01\x00" + HUGE)
        hostile.append(s)
    t0 = time.monotonic()
    assert node.echo()  # the legitimate sender gets through at once
    assert time.monotonic() - t0 < 5
    for s in hostile:
        assert _closed_within(s, 5) is not None
        s.close()
    assert node.log_text().count("peer=127.0.0.2") == 20
    assert "address not in allowed_peers" in node.log_text()
    assert _metric(http, "address") == 20


def test_idle_and_dripping_connections_are_closed_at_the_request_deadline(node_factory):
    http = free_port()
    node = node_factory(runner={"enabled": False}, http={"port": http},
                        scp={"association_request_timeout": 3, "max_connections_per_address": 3})
    rq = association_rq(node, "HOSTILE")
    idle = _connect(node.port)
    drip = _connect(node.port)
    third = _connect(node.port)
    extra = _connect(node.port)  # the fourth from one address: closed at accept
    assert _closed_within(extra, 2) is not None
    t0 = time.monotonic()
    closed = None
    for i in range(len(rq)):  # a byte a second: a drip never resets the deadline
        try:
            drip.sendall(rq[i:i + 1])
        except OSError:
            closed = time.monotonic() - t0
            break
        if _closed_within(drip, 1.0) is not None:
            closed = time.monotonic() - t0
            break
    assert closed is not None and closed < 6, closed
    assert _closed_within(idle, 6) is not None
    assert _closed_within(third, 6) is not None
    for s in (idle, drip, third, extra):
        s.close()
    # a refusal's log line may follow the close of its socket by moments: wait for all four
    deadline = time.monotonic() + 5
    while node.log_text().count("connection refused") < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    log = node.log_text()
    assert "A-ASSOCIATE-RQ not complete 3 s after connecting" in log
    assert "no A-ASSOCIATE-RQ within 3 s" in log
    assert log.count("connection refused") == 4, log  # each refusal logged once
    assert "scp.max_connections_per_address" in log
    assert _metric(http, "timeout") >= 3
    assert _metric(http, "per_address_limit") == 1
    deadline = time.monotonic() + 5  # the closed connections' threads end within moments
    while not node.echo():
        assert time.monotonic() < deadline, node.log_text()[-3000:]
        time.sleep(0.5)


def test_association_limit_refusal_is_logged_and_counted(node_factory):
    """Over ``scp.max_associations`` a peer gets A-ASSOCIATE-RJ (local limit), a log line and
    a count, and the slots come back when the open associations end."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    http = free_port()
    node = node_factory(runner={"enabled": False}, http={"port": http},
                        scp={"max_associations": 2})
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    held = [ae.associate("127.0.0.1", node.port, ae_title=node.ae_title) for _ in range(2)]
    assert all(a.is_established for a in held)
    third = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert third.is_rejected
    assert "scp.max_associations=2" in node.log_text()
    assert _metric(http, "max_associations") == 1
    for a in held:
        a.release()
    deadline = time.monotonic() + 5
    while not node.echo():
        assert time.monotonic() < deadline
        time.sleep(0.3)


MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _mr_dataset() -> tuple[str, bytes]:
    """(SOP Instance UID, Explicit VR Little Endian data set bytes) of one 64 x 128 MR slice."""
    import pydicom
    from dicom_factory import make_mr_series

    ds = make_mr_series(1, 64, 128)[0]
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    raw = buf.getvalue()
    (glen,) = struct.unpack("<I", raw[140:144])
    return str(ds.SOPInstanceUID), raw[144 + glen:]


def _store_pdus(sop_uid: str, data_set: bytes, max_pdu: int) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE-RQ (context 1) as pynetdicom encodes them."""
    from pynetdicom import dimse_messages
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.pdu import P_DATA_TF

    rq = C_STORE()
    rq.MessageID = 1
    rq.AffectedSOPClassUID = MR_STORAGE
    rq.AffectedSOPInstanceUID = sop_uid
    rq.Priority = 0
    rq.DataSet = BytesIO(data_set)
    msg = dimse_messages.C_STORE_RQ()
    msg.primitive_to_message(rq)
    return [P_DATA_TF(p).encode() for p in msg.encode_msg(1, max_pdu)]


def _associate_for_mr(node) -> socket.socket:
    s = _connect(node.port)
    s.sendall(association_rq(node, "SLOWSCU", MR_STORAGE, EXPLICIT_LE))
    s.settimeout(10)
    head = _recv_all(s, 6)
    assert head[:1] == b"\x02", f"no A-ASSOCIATE-AC: {head!r}"
    _recv_all(s, struct.unpack(">I", head[2:6])[0])
    return s


def _recv_all(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return buf


def _store_status(s: socket.socket) -> int:
    """Status of the C-STORE-RSP that arrives on ``s`` (one P-DATA-TF, one command PDV)."""
    head = _recv_all(s, 6)
    assert head[:1] == b"\x04", f"no P-DATA-TF: {head!r}"
    body = _recv_all(s, struct.unpack(">I", head[2:6])[0])
    command = body[6:]  # PDV length (4), context ID, message control header
    pos = 0
    while pos < len(command):
        group, elem, length = struct.unpack_from("<HHI", command, pos)
        if (group, elem) == (0, 0x0900):
            return int(struct.unpack_from("<H", command, pos + 8)[0])
        pos += 8 + length
    raise AssertionError("no Status in the C-STORE-RSP")


@pytest.mark.parametrize("fast", [True, False], ids=["fast-dimse", "stock-dimse"])
def test_tiny_pdu_drip_is_cut_off_and_a_slow_honest_sender_is_not(node_factory, fast):
    http = free_port()
    node = node_factory(runner={"enabled": False}, http={"port": http},
                        scp={"fast_dimse": fast, "network_timeout": 3,
                             "min_message_rate": 1024})
    spool = Path(node.cfg["data_dir"]) / "spool"

    # 1. honest but slow: 1 KiB PDUs, four a second; the data set takes longer than
    #    network_timeout (3 s) but averages 4 KiB/s, above scp.min_message_rate
    uid, data_set = _mr_dataset()
    pdus = _store_pdus(uid, data_set, 1024)
    s = _associate_for_mr(node)
    t0 = time.monotonic()
    for pdu in pdus:
        s.sendall(pdu)
        time.sleep(0.25)
    took = time.monotonic() - t0
    assert took > 3, took
    assert _store_status(s) == 0x0000
    assert [p.name for p in spool.rglob("*.dcm")] == [f"{uid}.dcm"]
    s.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-RELEASE-RQ
    assert _recv_all(s, 10)[:1] == b"\x06"  # A-RELEASE-RP: the association was kept
    s.close()

    # 2. a drip: the command set whole, then one byte of the data set per PDU, each 2 s after
    #    the last (under the 3 s network_timeout, which it would otherwise reset for ever)
    uid2, data_set2 = _mr_dataset()
    command = _store_pdus(uid2, b"", 16384)[0]
    s = _associate_for_mr(node)
    s.sendall(command)
    t0 = time.monotonic()
    closed, sent = None, 0
    for byte in data_set2[:8]:
        try:
            s.sendall(b"\x04\x00\x00\x00\x00\x07\x00\x00\x00\x03\x01\x00" + bytes([byte]))
        except OSError:
            closed = time.monotonic() - t0
            break
        sent += 1
        if _closed_within(s, 2.0) is not None:
            closed = time.monotonic() - t0
            break
    s.close()
    print(f"drip: {sent} one-byte PDUs, cut off after {closed} s")
    assert closed is not None and closed < 9, f"drip still connected after {sent} PDUs"
    assert sent >= 2  # each PDU came in time: the message rate cut it off, not a PDU deadline
    deadline = time.monotonic() + 5
    while "DIMSE message too slow" not in node.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = node.log_text()
    assert re.search(r"connection refused: peer=127\.0\.0\.1:\d+ reason=DIMSE message too "
                     r"slow: \d+ bytes in [0-9.]+ s, less than scp.min_message_rate=1024 "
                     r"bytes/s after scp.network_timeout=3 s", log), log[-3000:]
    assert _metric(http, "slow_message") == 1
    assert [p.name for p in spool.rglob("*.dcm")] == [f"{uid}.dcm"]  # nothing of the drip
    assert node.alive() and node.echo()
