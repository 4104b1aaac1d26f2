"""The outbox's C-STORE SCU: queued files to one destination on one association, and C-ECHO.

:class:`dicom_node.send.outbox.Outbox` decides what is due and records every outcome; this
module only speaks DICOM. :func:`send_batch` opens one association (``TCP_NODELAY``, a
presentation context per (SOP class, transfer syntax) of the files, see :func:`contexts_for`;
:func:`batches` keeps each association within :data:`MAX_CONTEXTS`), C-STOREs the files in
order and reports each item through the ``on_sent`` / ``on_failed`` callbacks; a compressed file
whose syntax the destination did not accept is decompressed (lossless, same instance) when it
accepted an uncompressed one. :func:`echo` is the C-ECHO probe of a destination that was away.

Its log lines are the outbox's (logger ``dicom_node.send.outbox``, messages ``outbox: ...``).
"""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context

from dicom_node._pynetdicom.reactor import pause_reactor
from dicom_node.send.destinations import Destination

if TYPE_CHECKING:
    from dicom_node.send.outboxdb import OutboxItem

__all__ = ["MAX_CONTEXTS", "OK_STATUS", "batches", "contexts_for", "echo", "send_batch"]

log = logging.getLogger("dicom_node.send.outbox")  # the outbox's lines, as before the split

_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, "1.2.840.10008.1.2.2"}
#: C-STORE statuses that mean "stored" (success and the three warning codes).
OK_STATUS = {0x0000, 0xB000, 0xB006, 0xB007}
#: Presentation contexts one association may propose (PS3.8: odd IDs 1-255).
MAX_CONTEXTS = 128


def echo(dest: Destination, ae_title: str, timeout_s: float) -> bool:
    """True when ``dest`` answers C-ECHO with Success (timeouts at most 10 s)."""
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from dicom_node._pynetdicom.net import nodelay_handlers

    ae = AE(ae_title=ae_title)
    for attr in ("connection_timeout", "acse_timeout", "dimse_timeout", "network_timeout"):
        setattr(ae, attr, min(timeout_s, 10.0))
    ae.add_requested_context(Verification)
    try:
        assoc = ae.associate(dest.host, int(dest.port), ae_title=dest.ae_title,
                             evt_handlers=nodelay_handlers())
    except Exception:  # noqa: BLE001 - bad host names etc.
        return False
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and getattr(status, "Status", None) == 0x0000
    except Exception:  # noqa: BLE001
        return False
    finally:
        if assoc.is_established:
            assoc.release()


def contexts_for(item: OutboxItem) -> list[tuple[str, list[str]]]:
    """``(SOP class, transfer syntaxes)`` contexts to propose for ``item``'s file."""
    ts = item.transfer_syntax_uid
    if ts in _UNCOMPRESSED:
        return [(item.sop_class_uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
    # the file's own (compressed) syntax, and uncompressed as a fall-back (decompressed here)
    return [(item.sop_class_uid, [ts]), (item.sop_class_uid, [ExplicitVRLittleEndian])]


def batches(items: list[OutboxItem]) -> list[list[OutboxItem]]:
    """``items`` in order, cut into batches of at most :data:`MAX_CONTEXTS` contexts each."""
    out: list[list[OutboxItem]] = []
    cur: list[OutboxItem] = []
    ctx: set = set()
    for it in items:
        new = {(a, tuple(t)) for a, t in contexts_for(it)} - ctx
        if cur and len(ctx) + len(new) > MAX_CONTEXTS:
            out.append(cur)
            cur, ctx = [], set()
            new = {(a, tuple(t)) for a, t in contexts_for(it)}
        cur.append(it)
        ctx |= new
    if cur:
        out.append(cur)
    return out


def send_batch(dest: Destination, items: Sequence[OutboxItem], *, ae_title: str,
               timeout_s: float, on_sent: Callable[[OutboxItem], None],
               on_failed: Callable[[OutboxItem, str], None]) -> tuple[int, list[OutboxItem]]:
    """C-STORE ``items`` to ``dest`` on one association.

    Parameters
    ----------
    dest
        Where to.
    items
        Outbox items (their files, SOP classes and transfer syntaxes).
    ae_title, timeout_s
        Our calling AE title; connection, ACSE, DIMSE and network timeout.
    on_sent, on_failed
        Called once per item tried: stored (a status of :data:`OK_STATUS`), or not, with the
        reason (its prefix tells the outbox whether the destination was unreachable).

    Returns
    -------
    tuple
        ``(stored count, items not tried)``: the association was lost before those.
    """
    from dicom_node._pynetdicom.net import nodelay_handlers

    ae = AE(ae_title=ae_title)
    ae.connection_timeout = timeout_s
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    seen: set = set()
    contexts = []
    for it in items:
        for abstract, syntaxes in contexts_for(it):
            k = (abstract, tuple(syntaxes))
            if k not in seen:
                seen.add(k)
                contexts.append(build_context(abstract, syntaxes))
    ae.requested_contexts = contexts
    t0 = time.perf_counter()
    try:
        assoc = ae.associate(dest.host, int(dest.port), ae_title=dest.ae_title,
                             evt_handlers=nodelay_handlers())
    except Exception as exc:  # noqa: BLE001 - bad host names etc.
        for it in items:
            on_failed(it, f"cannot associate with {dest}: {exc}")
        return 0, []
    if not assoc.is_established:
        if assoc.is_rejected:
            why = "association rejected"
        else:  # pynetdicom reports a refused TCP connection as an abort: tell them apart
            try:
                with socket.create_connection((dest.host, int(dest.port)), timeout=2.0):
                    why = "association aborted"
            except OSError as exc:
                why = f"connection failed: {exc.strerror or exc}"
        for it in items:
            on_failed(it, f"{why} ({dest})")
        return 0, []
    sent = 0
    untried: list[OutboxItem] = []
    try:
        for n, it in enumerate(items):
            if not assoc.is_established:
                untried = list(items[n:])
                log.warning("outbox: association to %s lost; %d item(s) not tried yet", dest,
                            len(untried))
                break
            try:
                ds = pydicom.dcmread(it.path)
            except FileNotFoundError:
                on_failed(it, f"queued file missing: {it.path}")
                continue
            except Exception as exc:  # noqa: BLE001
                on_failed(it, f"queued file unreadable: {exc}")
                continue
            accepted = {(c.abstract_syntax, c.transfer_syntax[0])
                        for c in assoc.accepted_contexts}
            ts = str(ds.file_meta.TransferSyntaxUID)
            if (it.sop_class_uid, ts) not in accepted:
                unc = [t for (a, t) in accepted if a == it.sop_class_uid and t in _UNCOMPRESSED]
                if ts in _UNCOMPRESSED and unc:
                    pass  # pynetdicom re-encodes between uncompressed syntaxes
                elif unc:
                    ds.decompress(generate_instance_uid=False)  # lossless: same instance
                else:
                    on_failed(it, f"{dest} accepted no presentation context for "
                                  f"{UID(it.sop_class_uid).name} in {UID(ts).name}")
                    continue
            try:
                pause_reactor(assoc)
                status = assoc.send_c_store(ds, msg_id=(n % 65535) + 1)
            except Exception as exc:  # noqa: BLE001
                on_failed(it, f"C-STORE error: {exc}")
                continue
            code = getattr(status, "Status", None) if status else None
            if code in OK_STATUS:
                on_sent(it)
                sent += 1
            elif code is None:
                on_failed(it, f"no C-STORE response from {dest} (timeout or abort)")
            else:
                on_failed(it, f"C-STORE status 0x{int(code):04X} from {dest}")
    finally:
        if assoc.is_established:
            assoc.release()
    log.info("outbox: %d/%d object(s) stored to %s in %.2f s", sent, len(items), dest,
             time.perf_counter() - t0)
    return sent, untried
