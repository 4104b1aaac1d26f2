"""Storage SCP: accepts every storage SOP class and transfer syntax, spools the bytes received.

* C-ECHO (Verification) and C-STORE for any storage SOP class, standard or private, with any
  transfer syntax the requestor proposes (pynetdicom ``UNRESTRICTED_STORAGE_SERVICE``; no
  128-context limit on our side).
* Each instance is written as the encoded bytes received (file meta + dataset as sent, no
  decode/re-encode) atomically and durably *before* the success status goes back. A write error
  (disk full, I/O error) answers ``0xA700`` and leaves nothing partial.
* Index rows are queued to :class:`dicom_node.store.writer.IndexWriter` (batched, off the hot path).
* Associations are gated (:mod:`dicom_node.receive.admission`): allow-list of calling AE
  titles / source addresses and a free-disk threshold; a refused association gets an
  A-ASSOCIATE-RJ and a log line.
* ``TCP_NODELAY`` on the listening and accepted sockets.
* Per instance, only a few header values are read, straight from the received bytes
  (:mod:`dicom_node.receive.headerscan`; the first instance of a series is decoded in full), and
  pynetdicom's generic C-STORE machinery is short-cut by :mod:`dicom_node._pynetdicom.fastdimse`
  (``scp.fast_dimse``, default on; stock pynetdicom when off or when the installed version's
  internals differ).
"""

from __future__ import annotations

import errno
import logging
import ssl
import threading
import time
from io import BytesIO
from typing import TYPE_CHECKING, Any

from pynetdicom import AE, _config, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node._pynetdicom import fastdimse
from dicom_node._pynetdicom.gate import set_gate
from dicom_node._pynetdicom.net import on_conn_open_nodelay, set_nodelay, set_reactor_poll
from dicom_node._pynetdicom.serve import answer_every_request
from dicom_node.ops import metrics
from dicom_node.receive.admission import AssociationGate, host_matches
from dicom_node.receive.headerscan import scan_header
from dicom_node.receive.limits import ConnectionGate, PduGuard, normal_address, refused, server_class
from dicom_node.receive.spool import InvalidUID, Spool, check_uid, encode_file_meta
from dicom_node.receive.structure import walk_dataset
from dicom_node.store.records import KEPT_TAGS, InstanceRecord, extract_header, pack_routing_header
from dicom_node.store.writer import IndexWriter

__all__ = ["StorageSCP", "STATUS_OUT_OF_RESOURCES", "STATUS_DATASET_MISMATCH",
           "STATUS_CANNOT_UNDERSTAND"]

if TYPE_CHECKING:
    from dicom_node.config import NodeConfig

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000

def _after_instance_number(tag: int, vr: Any, length: int) -> bool:
    return tag > 0x00200013


class StorageSCP:
    """The node's DICOM listener.

    Parameters
    ----------
    cfg : NodeConfig
    spool : Spool
    writer : IndexWriter
        Receives one :class:`InstanceRecord` per stored instance.
    """

    def __init__(self, cfg: NodeConfig, spool: Spool, writer: IndexWriter) -> None:
        self.cfg = cfg
        self.spool = spool
        self.writer = writer
        self.server: Any = None
        self._seen_series: set[str] = set()
        self._seen_lock = threading.Lock()
        self._assoc_counts: dict[int, dict[str, Any]] = {}
        #: ``f(series_uids)`` called when an association that delivered them is released
        self.on_release: Any = None
        self.stats = {"stored": 0, "duplicates": 0, "replaced": 0, "failed": 0, "dropped": 0,
                      "rejected_assoc": 0}
        _config.UNRESTRICTED_STORAGE_SERVICE = True
        set_reactor_poll(cfg.scp.poll_interval_ms / 1000.0)
        self.fast_dimse = bool(cfg.scp.fast_dimse) and fastdimse.available()
        if not fastdimse.available():
            log.warning("this pynetdicom's internals differ from what dicom_node._pynetdicom.fastdimse "
                        "expects: PDUs are read by pynetdicom, without the node's length "
                        "bounds and deadlines (see README 'Security and limits')")
        ae = AE(ae_title=cfg.ae_title)
        ae.add_supported_context(Verification)
        ae.maximum_pdu_size = cfg.scp.max_pdu
        ae.maximum_associations = cfg.scp.max_associations
        ae.network_timeout = cfg.scp.network_timeout
        ae.acse_timeout = cfg.scp.acse_timeout
        ae.dimse_timeout = cfg.scp.dimse_timeout
        ae.require_called_aet = False
        self.ae = ae
        self.gate = AssociationGate(
            cfg, spool, lambda: sum(1 for a in ae.active_associations if a.is_acceptor), self.stats)
        set_gate(ae, self.gate)
        self.conn_gate = ConnectionGate(cfg, host_matches)

    # -- handlers ------------------------------------------------------------------------
    def handle_echo(self, event: Any) -> int:
        return STATUS_SUCCESS

    def handle_store(self, event: Any) -> int:
        """EVT_C_STORE handler: spool the received bytes, queue the index row, answer."""
        received_at = time.time()
        assoc = event.assoc
        calling_ae = str(assoc.requestor.ae_title).strip()
        calling_host = str(assoc.requestor.address)
        first = False
        try:
            ds, raw, full = self._parse(event)
            ds_sop = ds.get("SOPInstanceUID")
            sop_uid = check_uid(
                ds_sop if ds_sop else event.request.AffectedSOPInstanceUID, "SOPInstanceUID")
            study_uid = check_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID")
            series_uid = check_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID")
            modality = str(ds.get("Modality", "") or "")
            with self._seen_lock:
                first = series_uid not in self._seen_series
            if first and not full:
                # first instance of a series (in this process): decode it all, for the
                # routing header (extract_header)
                ds = event.dataset
            # the whole dataset, element by element, and Pixel Data against the syntax (every
            # transfer syntax: little and big endian, implicit, deflated); the same walk keeps
            # the elements classification and routing read (stored in the index)
            ts = event.context.transfer_syntax
            truncated, kept = walk_dataset(raw, ts, KEPT_TAGS)
            if truncated:
                raise ValueError(truncated)
            routing = (pack_routing_header(kept, ts.is_implicit_VR, ts.is_little_endian)
                       if kept is not None else None)
        except InvalidUID as exc:
            self._failed(event)
            log.warning("C-STORE refused (0x%04X): %s; calling_ae=%s address=%s sop_class=%s",
                        STATUS_DATASET_MISMATCH, exc, calling_ae, calling_host,
                        event.request.AffectedSOPClassUID)
            return STATUS_DATASET_MISMATCH
        except Exception as exc:  # noqa: BLE001 - undecodable dataset
            self._failed(event)
            log.warning("C-STORE refused (0x%04X): dataset cannot be decoded (%s: %s); "
                        "calling_ae=%s address=%s", STATUS_CANNOT_UNDERSTAND,
                        type(exc).__name__, str(exc)[:200], calling_ae, calling_host)
            return STATUS_CANNOT_UNDERSTAND

        ing = self.cfg.ingest
        if (ing.drop_non_mr and modality != "MR") or (modality in ing.drop_modalities):
            self.stats["dropped"] += 1
            log.info("C-STORE accepted and dropped by the ingest filter: modality=%s sop=%s "
                     "calling_ae=%s", modality or "-", sop_uid, calling_ae)
            return STATUS_SUCCESS

        path = self.spool.root / study_uid / series_uid / f"{sop_uid}.dcm"
        try:
            data = encode_file_meta(
                str(event.request.AffectedSOPClassUID), sop_uid,
                str(event.context.transfer_syntax), calling_ae) + raw
            res = self.spool.write(path, data)
        except OSError as exc:
            self._failed(event)
            log.error("C-STORE failed (0x%04X): spool write error %s (%s) sop=%s series=%s "
                      "calling_ae=%s", STATUS_OUT_OF_RESOURCES,
                      errno.errorcode.get(exc.errno or 0, "?"), exc.strerror, sop_uid,
                      series_uid, calling_ae)
            return STATUS_OUT_OF_RESOURCES

        if first:
            with self._seen_lock:
                self._seen_series.add(series_uid)
        c = self._assoc_counts.get(id(assoc))
        if c is not None:
            c["series"].add(series_uid)
        if res.status == "same":
            self.stats["duplicates"] += 1
            self._count(event, "duplicates")
            log.debug("duplicate instance, identical bytes: sop=%s", sop_uid)
            return STATUS_SUCCESS
        if res.status == "replaced":
            self.stats["replaced"] += 1
            log.warning("duplicate SOP Instance UID with different bytes, newest kept: sop=%s "
                        "series=%s calling_ae=%s", sop_uid, series_uid, calling_ae)
        self.stats["stored"] += 1
        self._count(event, "stored")
        metrics.INSTANCES_RECEIVED.inc()

        header = None
        if first:
            header = extract_header(ds)
            log.info("series receiving: series=%s study=%s modality=%s calling_ae=%s address=%s",
                     series_uid, study_uid, modality or "-", calling_ae, calling_host)
        try:
            inst_no = ds.get("InstanceNumber")
            inst_no = int(inst_no) if inst_no not in (None, "") else None
        except (TypeError, ValueError):
            inst_no = None
        self.writer.put(InstanceRecord(
            sop_uid=sop_uid, series_uid=series_uid, study_uid=study_uid,
            patient_id=str(ds.get("PatientID", "") or ""),
            sop_class_uid=str(event.request.AffectedSOPClassUID or ""),
            transfer_syntax=str(event.context.transfer_syntax),
            instance_number=inst_no, path=str(path), size=res.size, received_at=received_at,
            calling_ae=calling_ae, calling_host=calling_host, status=res.status, header=header,
            study_date=str(ds.get("StudyDate", "") or "") or None, routing_header=routing,
        ))
        log.debug("stored sop=%s series=%s bytes=%d", sop_uid, series_uid, res.size)
        return STATUS_SUCCESS

    @staticmethod
    def _parse(event: Any) -> tuple[Any, bytes, bool]:
        """``(header, raw bytes, fully decoded?)`` of a C-STORE request.

        Hot path: the values the handler needs (UIDs, Modality, PatientID, StudyDate,
        InstanceNumber; all before (0020,0013)) are read from the raw bytes by
        :func:`dicom_node.receive.headerscan.scan_header` into a dict; when it declines, pydicom parses
        the elements up to InstanceNumber. Deflated datasets are decoded in full.
        """
        raw = event.request.DataSet.getvalue()
        ts = event.context.transfer_syntax
        if ts.is_deflated:
            return event.dataset, raw, True
        header = scan_header(raw, ts.is_implicit_VR, ts.is_little_endian)
        if header is not None:
            return header, raw, False
        from pydicom.filereader import read_dataset

        ds = read_dataset(BytesIO(raw), ts.is_implicit_VR, ts.is_little_endian,
                          stop_when=_after_instance_number)
        return ds, raw, False

    def _failed(self, event: Any) -> None:
        """Count a refused or failed C-STORE (node totals, its association, metrics)."""
        self.stats["failed"] += 1
        self._count(event, "failed")
        metrics.INSTANCES_FAILED.inc()

    def _count(self, event: Any, what: str) -> None:
        c = self._assoc_counts.get(id(event.assoc))
        if c is not None:
            c[what] += 1

    def _on_open(self, event: Any) -> None:
        on_conn_open_nodelay(event)
        assoc = event.assoc
        address = normal_address(str(assoc.requestor.address))
        scp = self.cfg.scp
        guard = PduGuard(f"{address}:{assoc.requestor.port}", scp.max_pdu,
                         scp.association_request_timeout, scp.network_timeout,
                         min_message_rate=scp.min_message_rate)
        assoc.dul._node_guard = guard
        # the wait for the A-ASSOCIATE-RQ's first byte (ARTIM timer) and the association
        # thread's wait for it (ACSE timeout) end at the request deadline too
        assoc.acse_timeout = min(scp.acse_timeout, scp.association_request_timeout)
        if not (self.fast_dimse and fastdimse.install(assoc)):
            fastdimse.install_reader(assoc)
        assoc._node_guard = guard
        answer_every_request(assoc)
        self._assoc_counts[id(event.assoc)] = {"stored": 0, "duplicates": 0, "failed": 0,
                                              "t0": time.time(), "series": set()}

    def _on_released(self, event: Any) -> None:
        """A requestor released its association: tell ``on_release`` which series it
        delivered that no other open association is delivering too."""
        c = self._assoc_counts.get(id(event.assoc))
        if c is not None:
            self._notify_released(event.assoc, c)

    def _notify_released(self, assoc: Any, c: dict[str, Any]) -> None:
        if c.get("notified") or not c["series"] or self.on_release is None:
            return
        c["notified"] = True
        others: set[str] = set()
        for key, other in list(self._assoc_counts.items()):
            if key != id(assoc):
                others |= other.get("series", set())
        done = sorted(c["series"] - others)
        if done:
            try:
                self.on_release(done)
            except Exception:  # completion falls back to the quiet period
                log.exception("association-release completion hook failed")

    def _released_late(self, assoc: Any, c: dict[str, Any]) -> None:
        """The connection closed before pynetdicom reported the release (its two threads
        race): notify if the association turns out released."""
        deadline = time.monotonic() + 2.0
        while not assoc.is_released and time.monotonic() < deadline:
            time.sleep(0.05)
        if assoc.is_released:
            self._notify_released(assoc, c)

    def _on_close(self, event: Any) -> None:
        """One INFO line per association (never one per instance)."""
        guard = getattr(event.assoc, "_node_guard", None)
        if guard is not None and not guard.first_pdu_done and not guard.refused:
            waited = time.monotonic() - guard.opened
            if waited >= guard.request_timeout - 0.5:
                refused(guard.peer, f"no A-ASSOCIATE-RQ within {guard.request_timeout:g} s",
                        "timeout")
        c = self._assoc_counts.pop(id(event.assoc), None)
        if c is not None and c["series"] and not c.get("notified") and not event.assoc.is_aborted:
            threading.Thread(target=self._released_late, args=(event.assoc, c),
                             name="release-completion", daemon=True).start()
        if c is None or not (c["stored"] or c["failed"] or c["duplicates"]):
            return
        dt = time.time() - c["t0"]
        log.info("association closed: calling_ae=%s address=%s stored=%d duplicates=%d "
                 "failed=%d in %.2fs", str(event.assoc.requestor.ae_title).strip(),
                 event.assoc.requestor.address, c["stored"], c["duplicates"], c["failed"], dt)

    def _on_abort(self, event: Any) -> None:
        log.info("association aborted: calling_ae=%s address=%s",
                 str(event.assoc.requestor.ae_title).strip(), event.assoc.requestor.address)

    # -- server --------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext | None:
        t = self.cfg.tls
        if not t.enabled:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(t.cert_file), str(t.key_file))
        if t.ca_file:
            ctx.load_verify_locations(str(t.ca_file))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def start(self) -> None:
        """Start listening (non-blocking)."""
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_ABORTED, self._on_abort),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        # pynetdicom's AE.start_server(block=False), with the connection gate at accept
        self.server = self.ae.make_server(
            (self.cfg.host, self.cfg.port), evt_handlers=handlers,
            ssl_context=self.ssl_context(), server_class=server_class(self.conn_gate),
        )
        threading.Thread(target=self.server.serve_forever, name="AcceptorServer",
                         daemon=True).start()
        self.ae._servers.append(self.server)
        set_nodelay(self.server.socket)
        log.info("storage SCP listening: ae_title=%s %s:%d tls=%s fast_dimse=%s",
                 self.cfg.ae_title, self.cfg.host, self.port, bool(self.cfg.tls.enabled),
                 self.fast_dimse)

    @property
    def port(self) -> int:
        if self.server is None:
            return self.cfg.port
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
