"""dicom_node._pynetdicom.fastdimse: byte-for-byte the same as pynetdicom, and the same C-STOREs end to end."""

from __future__ import annotations

import threading
import time
from io import BytesIO

import pytest
from dicom_factory import make_mr_series
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom import dimse_messages as dm
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]

from dicom_node._pynetdicom import fastdimse
from dicom_node._pynetdicom.reactor import pause_reactor

MR = "1.2.840.10008.5.1.4.1.1.4"


def stock_rsp_bytes(prim: C_STORE) -> bytes:
    msg = dm.C_STORE_RSP()
    msg.primitive_to_message(prim)
    return encode(msg.command_set, True, True)


def rq_pdata(prim) -> list[P_DATA]:
    cls = {C_STORE: dm.C_STORE_RQ, C_ECHO: dm.C_ECHO_RQ, C_FIND: dm.C_FIND_RQ}[type(prim)]
    msg = cls()
    msg.primitive_to_message(prim)
    return list(msg.encode_msg(1, 0))


def stock_decode(pdata: list[P_DATA]):
    msg = dm.DIMSEMessage()
    for p in pdata:
        if msg.decode_msg(p):
            return msg.message_to_primitive()
    raise AssertionError("incomplete")


def test_available():
    assert fastdimse.available()


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xA900, 0xC000, 0xB000, 0xFFFF])
@pytest.mark.parametrize("uids", [
    (MR, "1.2.3.4"),  # odd, even
    ("1.2.840.10008.5.1.4.1.1.4.1", "1.2.826.0.1.3680043.8.498.12345678901234567890123"),
    (MR, None),
    (None, "1.2.3"),
    (None, None),
])
@pytest.mark.parametrize("msg_id", [0, 1, 4242, 65535])
def test_c_store_rsp_encoding_is_pynetdicoms(status, uids, msg_id):
    prim = C_STORE()
    prim.MessageID = msg_id
    prim.MessageIDBeingRespondedTo = msg_id
    prim.AffectedSOPClassUID, prim.AffectedSOPInstanceUID = uids
    prim.Status = status
    assert fastdimse.encode_c_store_rsp(msg_id, status, *uids) == stock_rsp_bytes(prim)


@pytest.mark.parametrize("priority", [0, 1, 2])
@pytest.mark.parametrize("move", [None, ("MOVESCU", 7), ("A", 0)])
@pytest.mark.parametrize("uid", ["1.2.3.4", "1.2.3.45", "1.2.826.0.1.3680043.8.498.1"])
def test_c_store_rq_decoding_is_pynetdicoms(priority, move, uid):
    prim = C_STORE()
    prim.MessageID = 9
    prim.AffectedSOPClassUID = MR
    prim.AffectedSOPInstanceUID = uid
    prim.Priority = priority
    if move:
        prim.MoveOriginatorApplicationEntityTitle, prim.MoveOriginatorMessageID = move
    prim.DataSet = BytesIO(b"\x08\x00\x18\x00\x00\x00\x00\x00")
    pdata = rq_pdata(prim)
    stock = stock_decode(pdata)
    ours = fastdimse.c_store_request(fastdimse.decode_command_set(
        pdata[0].presentation_data_value_list[0][1][1:]))
    for attr in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
                 "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID",
                 "MessageIDBeingRespondedTo", "Status"):
        assert getattr(ours, attr) == getattr(stock, attr), attr


def raw_command(elements: list[tuple[int, bytes]]) -> bytes:
    import struct

    body = b"".join(struct.pack("<HHI", 0, e, len(v)) + v for e, v in elements)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


US = lambda v: v.to_bytes(2, "little")  # noqa: E731

GOOD = [(0x0002, b"1.2.840.10008.5.1.4.1.1.4\0"), (0x0100, US(1)), (0x0110, US(5)),
        (0x0700, US(2)), (0x0800, US(0)), (0x1000, b"1.2.3 ")]


def test_padding_is_removed_as_pydicom_does():
    req = fastdimse.c_store_request(fastdimse.decode_command_set(raw_command(GOOD)))
    assert req.AffectedSOPClassUID == MR and req.AffectedSOPInstanceUID == "1.2.3"
    assert req.MessageID == 5 and req.Priority == 2


@pytest.mark.parametrize("elements", [
    [(e, US(0x0101)) if e == 0x0800 else (e, v) for e, v in GOOD],  # no data set
    [(e, US(0x0030)) if e == 0x0100 else (e, v) for e, v in GOOD],  # C-ECHO-RQ
    [*GOOD, (0x0900, US(0))],  # an element a C-STORE-RQ does not have
    [(e, b"1.2\\3.4") if e == 0x1000 else (e, v) for e, v in GOOD],  # multi-valued UID
    [(e, b"\x05\x00\x00\x00") if e == 0x0110 else (e, v) for e, v in GOOD],  # US of 4 bytes
    [(e, b"1." * 40) if e == 0x1000 else (e, v) for e, v in GOOD],  # UID over 64 characters
    [(e, US(9)) if e == 0x0700 else (e, v) for e, v in GOOD],  # invalid priority
])
def test_anything_unusual_is_left_to_pynetdicom(elements):
    assert fastdimse.c_store_request(fastdimse.decode_command_set(raw_command(elements))) is None


def test_malformed_command_sets_are_not_decoded():
    raw = raw_command(GOOD)
    assert fastdimse.decode_command_set(raw[:-3]) is None  # value cut short
    assert fastdimse.decode_command_set(raw[:5]) is None  # header cut short
    assert fastdimse.decode_command_set(b"\x08\x00" + raw[2:]) is None  # group 0008
    assert fastdimse.decode_command_set(raw + raw[12:20]) is None  # repeated element
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = Verification
    cmd = rq_pdata(echo)[0].presentation_data_value_list[0][1][1:]
    assert fastdimse.c_store_request(fastdimse.decode_command_set(cmd)) is None


@pytest.mark.parametrize("pdvs", [
    [(1, b"\x03" + b"x" * 99)],
    [(1, b"\x00" + bytes(range(256)) * 10), (3, b"\x02abc")],
    [(255, b"\x01"), (1, b"\x03\x00")],
])
def test_p_data_tf_codec_is_pynetdicoms(pdvs):
    p = P_DATA()
    p.presentation_data_value_list.extend(pdvs)
    encoded = P_DATA_TF(p).encode()
    assert fastdimse.encode_p_data_tf(pdvs) == encoded
    split = fastdimse.split_p_data_tf(encoded[6:])
    stock = P_DATA_TF()
    stock.decode(encoded)
    assert [(c, bytes(d)) for c, d in split] == stock.to_primitive().presentation_data_value_list


def test_malformed_p_data_tf_is_left_to_pynetdicom():
    body = fastdimse.encode_p_data_tf([(1, b"\x03abc")])[6:]
    assert fastdimse.split_p_data_tf(body[:-1]) is None
    assert fastdimse.split_p_data_tf(b"") is None
    assert fastdimse.split_p_data_tf(b"\x00\x00\x00\x01\x01") is None  # no control header


# -- end to end: a pynetdicom SCU against an SCP with and without the fast paths -------------
class Receiver:
    """A pynetdicom Storage SCP recording what its handler sees; ``fast`` installs fastdimse."""

    def __init__(self, fast: bool, max_pdu: int = 0, extra_handlers=()) -> None:
        self.got: list[tuple] = []
        self.threads: list[str] = []
        self.installed: list[bool] = []
        self.fast = fast
        ae = AE("RECEIVER")
        ae.maximum_pdu_size = max_pdu
        ae.add_supported_context(MRImageStorage, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self.on_store), (evt.EVT_CONN_OPEN, self.on_open),
                    *extra_handlers]
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.port = self.server.server_address[1]

    def on_open(self, event) -> None:
        if self.fast:
            self.installed.append(fastdimse.install(event.assoc))

    def on_store(self, event) -> int:
        r = event.request
        self.threads.append(type(threading.current_thread()).__name__)
        if r.MessageID == 4:
            raise RuntimeError("handler failure")
        self.got.append((r.MessageID, str(r.AffectedSOPClassUID), str(r.AffectedSOPInstanceUID),
                         r.Priority, r.MoveOriginatorApplicationEntityTitle,
                         r.MoveOriginatorMessageID, r.DataSet.getvalue(),
                         str(event.context.transfer_syntax)))
        return 0xB000 if r.MessageID == 3 else 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def send(port: int, datasets, max_pdu: int = 16382, move=None) -> list[tuple]:
    ae = AE("SENDER")
    ae.maximum_pdu_size = max_pdu
    ae.add_requested_context(MRImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="RECEIVER")
    assert assoc.is_established
    out = [assoc.send_c_echo().Status]
    for i, ds in enumerate(datasets, start=1):
        kw = {"originator_aet": move[0], "originator_id": move[1]} if move else {}
        pause_reactor(assoc)  # as the node's sender: pynetdicom issue 435 (dicom_node._pynetdicom.reactor)
        rsp = assoc.send_c_store(ds, msg_id=i, **kw)
        out.append((rsp.Status, rsp.get("AffectedSOPInstanceUID"), rsp.get("ErrorComment")))
    assoc.release()
    return out


@pytest.mark.parametrize("scp_pdu,scu_pdu", [(0, 16382), (1024, 16382), (0, 0)])
def test_same_requests_and_responses_as_stock_pynetdicom(scp_pdu, scu_pdu):
    series = make_mr_series(4, 64, 64)
    results = {}
    for fast in (False, True):
        rx = Receiver(fast, max_pdu=scp_pdu)
        try:
            rsps = send(rx.port, series, max_pdu=scu_pdu, move=("MOVER", 77))
        finally:
            rx.stop()
        results[fast] = (rsps, rx.got)
        if fast:
            assert rx.installed == [True]
    assert results[True] == results[False]
    rsps, got = results[True]
    assert [r[0] for r in rsps[1:]] == [0, 0, 0xB000, 0xC211]  # 0xC211: the handler raised
    assert len(got) == 3 and got[0][4:6] == ("MOVER", 77)


def test_c_stores_are_served_in_the_dul_thread_unless_disabled(monkeypatch):
    for inline, thread in ((True, "DULServiceProvider"), (False, "Association")):
        monkeypatch.setattr(fastdimse, "INLINE_STORE", inline)
        rx = Receiver(True)
        try:
            out = send(rx.port, make_mr_series(2, 16, 16))
        finally:
            rx.stop()
        assert out[0] == 0 and [r[0] for r in out[1:]] == [0, 0]
        assert rx.threads == [thread, thread]


def test_bound_dimse_handlers_see_every_message(monkeypatch):
    """A handler bound to EVT_DIMSE_RECV (not pynetdicom's logging one) gets stock messages."""
    seen = []
    calls = []
    real = fastdimse.c_store_request
    monkeypatch.setattr(fastdimse, "c_store_request", lambda f: calls.append(1) or real(f))
    rx = Receiver(True, extra_handlers=[(evt.EVT_DIMSE_RECV, lambda e: seen.append(
        type(e.message).__name__))])
    try:
        send(rx.port, make_mr_series(2, 16, 16))
    finally:
        rx.stop()
    assert seen.count("C_STORE_RQ") == 2 and "C_ECHO_RQ" in seen
    assert calls == [] and len(rx.got) == 2


def test_fast_path_is_taken(monkeypatch):
    made = []
    real = fastdimse.c_store_request

    def spy(fields):
        made.append(real(fields))
        return made[-1]

    monkeypatch.setattr(fastdimse, "c_store_request", spy)
    rx = Receiver(True)
    try:
        send(rx.port, make_mr_series(3, 16, 16))
    finally:
        rx.stop()
    assert len(rx.got) == 3
    assert sum(m is not None for m in made) == 3  # the C-STOREs; the C-ECHO went stock


def test_chunked_to_file_mode_stays_stock(monkeypatch):
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    calls = []
    real = fastdimse.c_store_request
    monkeypatch.setattr(fastdimse, "c_store_request", lambda f: calls.append(1) or real(f))
    rx = Receiver(True)
    try:
        out = send(rx.port, make_mr_series(1, 16, 16))
    finally:
        rx.stop()
    assert out[1][0] == 0 and calls == []


def test_idle_waits_end_when_work_arrives():
    """The reactors' sleep is the thread's wait; a queued primitive wakes the DUL at once."""
    from dicom_node._pynetdicom.net import _PollClock

    clock = _PollClock(0.001)
    woke = threading.Event()
    t0 = time.perf_counter()

    class T(threading.Thread):
        def run(self) -> None:
            clock.sleep(0.05)
            woke.set()

    t = T()
    waits: list[float] = []
    t._node_wait = waits.append  # type: ignore[attr-defined]
    t.start()
    t.join(1)
    assert woke.is_set() and waits == [0.05] and time.perf_counter() - t0 < 0.05

    wake = fastdimse._Wake()
    q = fastdimse._WakingQueue(wake)

    class Dul:
        class socket:
            socket = wake.r  # readable only when woken

    threading.Timer(0.02, q.put, args=("primitive",)).start()
    t0 = time.perf_counter()
    fastdimse._dul_wait(Dul, wake, 2.0)
    assert time.perf_counter() - t0 < 1.0 and q.get_nowait() == "primitive"
    wake.close()
    wake.set()  # after the DUL ended: ignored


def test_internals_that_differ_leave_pynetdicom_stock(monkeypatch, caplog):
    from dicom_node._pynetdicom import fastcheck

    monkeypatch.setattr(fastcheck, "_AVAILABLE", None)
    monkeypatch.setattr(fastcheck, "_self_check", lambda: "C-STORE-RSP encoding differs")
    with caplog.at_level("WARNING", logger="dicom_node._pynetdicom.fastdimse"):
        assert not fastdimse.available()
    assert "fast DIMSE paths off" in caplog.text and "encoding differs" in caplog.text
    rx = Receiver(True)
    try:
        out = send(rx.port, make_mr_series(1, 16, 16))
    finally:
        rx.stop()
    assert rx.installed == [False] and out[1][0] == 0 and rx.threads == ["Association"]
