"""Study Root Query/Retrieve SCU: C-FIND studies and series, C-MOVE series to an AE title.

Each call opens one association, does its work and releases it. Failures raise
:class:`RetrieveError` with a message fit for a job's reason (peer, status, what failed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    Comprehensive3DSRStorage,
    EnhancedMRColorImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicom_node.send.destinations import Destination

#: A Query/Retrieve SCP is addressed like any DICOM peer: AE title, host, port.
Peer = Destination

log = logging.getLogger(__name__)

__all__ = ["RetrieveError", "Peer", "StudyMatch", "SeriesMatch", "find_studies", "find_series",
           "move_series", "get_series", "MoveResult"]

#: Storage SOP classes a C-GET accepts (the SCU takes the SCP role for them): MR series, and the
#: node's own TID 1500 reports (Comprehensive 3D SR) of a prior study.
GET_STORAGE_CLASSES = (MRImageStorage, EnhancedMRImageStorage, EnhancedMRColorImageStorage,
                       LegacyConvertedEnhancedMRImageStorage, Comprehensive3DSRStorage)
#: Transfer syntaxes offered for them: what the node's Storage SCP accepts and decodes.
GET_TRANSFER_SYNTAXES: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                         ExplicitVRBigEndian, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
                         JPEG2000Lossless, JPEG2000, RLELossless, JPEGBaseline8Bit, JPEGExtended12Bit]


class RetrieveError(RuntimeError):
    """A query or retrieval failed; the message says with whom and why."""


@dataclass(frozen=True)
class StudyMatch:
    """One study a C-FIND returned."""

    study_uid: str
    study_date: str  #: DA (YYYYMMDD), "" when the PACS gave none
    study_time: str
    accession: str
    description: str
    modalities: tuple[str, ...]


@dataclass(frozen=True)
class SeriesMatch:
    """One series a C-FIND returned."""

    series_uid: str
    modality: str
    series_number: int | None
    description: str
    n_instances: int | None


@dataclass(frozen=True)
class MoveResult:
    """Sub-operation counts of a finished C-MOVE."""

    completed: int
    failed: int
    warning: int


def _associate(own_ae: str, peer: Peer, contexts: list[tuple[Any, list[str] | None]],
               timeout_s: float, **kwargs: Any) -> Any:
    """An established association with ``peer`` proposing ``contexts`` ((abstract syntax,
    transfer syntaxes or None for pynetdicom's default) pairs); ``kwargs`` go to
    ``AE.associate`` (role selection, event handlers)."""
    ae = AE(ae_title=own_ae)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes or DEFAULT_TRANSFER_SYNTAXES)
    ae.acse_timeout = min(30.0, timeout_s)
    ae.network_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    try:
        assoc = ae.associate(peer.host, int(peer.port), ae_title=peer.ae_title, **kwargs)
    except Exception as exc:  # socket errors, bad addresses
        raise RetrieveError(f"cannot associate with {peer}: {exc}") from exc
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
        raise RetrieveError(f"association with {peer} {why} (is {own_ae} known to it?)")
    return assoc


def _find(own_ae: str, peer: Peer, query: Dataset, timeout_s: float) -> list[Dataset]:
    assoc = _associate(own_ae, peer, [(StudyRootQueryRetrieveInformationModelFind, None)], timeout_s)
    out: list[Dataset] = []
    try:
        for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if not status:  # no response within the DIMSE timeout, or an abort
                raise RetrieveError(f"C-FIND to {peer}: no response (timeout or abort; does it "
                                    f"allow {own_ae} to query?)")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                if ident is not None:
                    out.append(ident)
            elif code != 0x0000:
                raise RetrieveError(f"C-FIND to {peer} failed with status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return out


def _text(ds: Dataset, keyword: str) -> str:
    v = ds.get(keyword, "")
    return str(v).strip() if v is not None else ""


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        return int(_text(ds, keyword)) if _text(ds, keyword) else None
    except ValueError:
        return None


def find_studies(own_ae: str, peer: Peer, patient_id: str, *, date_range: str = "",
                 modality: str = "", timeout_s: float = 60.0) -> list[StudyMatch]:
    """The patient's studies at ``peer`` (Study Root, STUDY level).

    ``date_range``: a DA range such as ``20200101-20261128``; ``modality``: matched against
    Modalities in Study by the PACS and checked again here (some PACS ignore it)."""
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientID = patient_id
    q.StudyInstanceUID = ""
    q.StudyDate = date_range
    q.StudyTime = ""
    q.AccessionNumber = ""
    q.StudyDescription = ""
    q.ModalitiesInStudy = modality
    out = []
    for ds in _find(own_ae, peer, q, timeout_s):
        mods = ds.get("ModalitiesInStudy")
        mods_t = (() if mods is None else (str(mods),) if isinstance(mods, str)
                  else tuple(str(m) for m in mods))
        mods_t = tuple(m for m in mods_t if m)
        if _text(ds, "PatientID") not in ("", patient_id):
            continue  # a PACS that matched loosely
        if modality and mods_t and modality not in mods_t:
            continue
        out.append(StudyMatch(_text(ds, "StudyInstanceUID"), _text(ds, "StudyDate"),
                              _text(ds, "StudyTime"), _text(ds, "AccessionNumber"),
                              _text(ds, "StudyDescription"), mods_t))
    return [s for s in out if s.study_uid]


def find_series(own_ae: str, peer: Peer, study_uid: str, *, timeout_s: float = 60.0) -> list[SeriesMatch]:
    """The series of one study at ``peer`` (Study Root, SERIES level)."""
    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID = study_uid
    q.SeriesInstanceUID = ""
    q.Modality = ""
    q.SeriesNumber = ""
    q.SeriesDescription = ""
    q.NumberOfSeriesRelatedInstances = ""
    out = []
    for ds in _find(own_ae, peer, q, timeout_s):
        uid = _text(ds, "SeriesInstanceUID")
        if uid:
            out.append(SeriesMatch(uid, _text(ds, "Modality"), _int(ds, "SeriesNumber"),
                                   _text(ds, "SeriesDescription"),
                                   _int(ds, "NumberOfSeriesRelatedInstances")))
    return out


def move_series(own_ae: str, peer: Peer, study_uid: str, series_uids: list[str], destination_ae: str,
                *, timeout_s: float = 300.0) -> MoveResult:
    """C-MOVE the given series of one study to ``destination_ae`` (one association, one
    C-MOVE per series); raise :class:`RetrieveError` when a sub-operation or the move fails."""
    assoc = _associate(own_ae, peer, [(StudyRootQueryRetrieveInformationModelMove, None)], timeout_s)
    return _retrieve(assoc, peer, study_uid, series_uids, "C-MOVE",
                     lambda q: assoc.send_c_move(q, destination_ae,
                                                 StudyRootQueryRetrieveInformationModelMove),
                     destination_ae)


def get_series(own_ae: str, peer: Peer, study_uid: str, series_uids: list[str],
               store: Callable[[Any], int], *, timeout_s: float = 300.0) -> MoveResult:
    """C-GET the given series of one study over one association; each instance is handed to
    ``store`` (an ``EVT_C_STORE`` handler returning a status, e.g. the node's Storage SCP's
    :meth:`~dicom_node.receive.scp.StorageSCP.handle_store`, so it is spooled and indexed like
    any received instance). Raise :class:`RetrieveError` when a sub-operation or the C-GET
    fails."""
    contexts: list[tuple[Any, list[str] | None]] = [(StudyRootQueryRetrieveInformationModelGet, None)]
    contexts += [(cls, GET_TRANSFER_SYNTAXES) for cls in GET_STORAGE_CLASSES]
    roles: list[Any] = [build_role(cls, scp_role=True) for cls in GET_STORAGE_CLASSES]
    assoc = _associate(own_ae, peer, contexts, timeout_s, ext_neg=roles,
                       evt_handlers=[(evt.EVT_C_STORE, store)])
    return _retrieve(assoc, peer, study_uid, series_uids, "C-GET",
                     lambda q: assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet))


def _retrieve(assoc: Any, peer: Peer, study_uid: str, series_uids: list[str], what: str,
              send: Callable[[Dataset], Any], destination: str = "") -> MoveResult:
    """One C-MOVE (to ``destination``) or C-GET per series on ``assoc`` (released at the end);
    the summed sub-operation counts, or :class:`RetrieveError` at the first failure."""
    total = MoveResult(0, 0, 0)
    try:
        for uid in series_uids:
            q = Dataset()
            q.QueryRetrieveLevel = "SERIES"
            q.StudyInstanceUID = study_uid
            q.SeriesInstanceUID = uid
            final = None
            for status, _ident in send(q):
                if not status:
                    raise RetrieveError(f"{what} from {peer}: no response (timeout or abort)")
                final = status
            if final is None:
                raise RetrieveError(f"{what} from {peer}: no final response")
            code = int(final.Status)
            done = int(final.get("NumberOfCompletedSuboperations", 0) or 0)
            failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
            warn = int(final.get("NumberOfWarningSuboperations", 0) or 0)
            total = MoveResult(total.completed + done, total.failed + failed, total.warning + warn)
            if code not in (0x0000, 0xB000) or failed:
                to = f" to {destination}" if destination else ""
                hint = (f" (does the PACS know {destination} as a DICOM modality?)"
                        if destination and (code == 0xA801 or not done) else "")
                raise RetrieveError(f"{what} of series {uid} from {peer}{to} failed: status "
                                    f"0x{code:04X}, {failed} failed{hint}")
    finally:
        if assoc.is_established:
            assoc.release()
    return total

