"""Who may associate: the node's answer to an A-ASSOCIATE-RQ, and host matching.

:class:`AssociationGate` is called by pynetdicom's acceptor (through
:func:`dicom_node._pynetdicom.gate.set_gate`) with the calling and called AE titles and the
peer's address, before the association is accepted. It rejects, with an A-ASSOCIATE-RJ reason,
a log line and a metric: a called AE title that is not the node's (``scp.check_called_ae_title``),
a peer no ``allowed_peers`` entry matches (unless ``allow_any_peer``), more open associations
than ``scp.max_associations``, and a spool with less free space than ``min_free_disk_mb``.
:func:`host_matches` is also the connection gate's address check
(:class:`dicom_node.receive.limits.ConnectionGate`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dicom_node.ops import metrics

if TYPE_CHECKING:
    from dicom_node.config import NodeConfig
    from dicom_node.receive.spool import Spool

__all__ = ["AssociationGate", "host_matches", "RJ_CALLING_AET", "RJ_NO_REASON", "RJ_LOCAL_LIMIT",
           "RJ_CALLED_AET"]

log = logging.getLogger(__name__)

# Reject reasons: (result, source, diagnostic) of an A-ASSOCIATE-RJ.
RJ_CALLING_AET = (0x01, 0x01, 0x03)  # permanent, service-user, calling AE not recognised
RJ_NO_REASON = (0x01, 0x01, 0x01)  # permanent, service-user, no reason given
RJ_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # transient, service-provider, local limit exceeded
RJ_CALLED_AET = (0x01, 0x01, 0x07)  # permanent, service-user, called AE not recognised


def host_matches(pattern: str, address: str) -> bool:
    """``pattern`` is an address, a network in CIDR notation, or a host name (resolved)."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return pattern == address
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    try:
        if "/" in pattern:
            return addr in ipaddress.ip_network(pattern, strict=False)
        return addr == ipaddress.ip_address(pattern)
    except ValueError:
        import socket

        try:
            return any(ipaddress.ip_address(i[4][0]) == addr
                       for i in socket.getaddrinfo(pattern, None))
        except OSError:
            return False


class AssociationGate:
    """``gate(calling_ae, address, called_ae) -> A-ASSOCIATE-RJ reason or None``.

    Parameters
    ----------
    cfg : NodeConfig
    spool : Spool
        Its free space is checked against ``min_free_disk_mb``.
    open_associations : callable
        ``f() -> int``: associations this node accepted that are open (the new one included).
    stats : dict
        The SCP's counters; ``rejected_assoc`` is incremented per rejection.
    """

    def __init__(self, cfg: NodeConfig, spool: Spool, open_associations: Callable[[], int],
                 stats: dict[str, Any]) -> None:
        self.cfg = cfg
        self.spool = spool
        self.open_associations = open_associations
        self.stats = stats

    def __call__(self, calling_ae: str, address: str,
                 called_ae: str | None = None) -> tuple[int, int, int] | None:
        cfg = self.cfg
        if cfg.scp.check_called_ae_title and called_ae is not None and called_ae != cfg.ae_title:
            self.stats["rejected_assoc"] += 1
            log.warning("association rejected: called AE title %s is not ours (%s); "
                        "calling_ae=%s address=%s", called_ae, cfg.ae_title, calling_ae, address)
            metrics.ASSOCIATIONS_REJECTED.labels("called_ae").inc()
            return RJ_CALLED_AET
        if not cfg.allow_any_peer:
            ok = False
            for p in cfg.allowed_peers:
                if p.ae_title and p.ae_title != calling_ae:
                    continue
                if p.host and not host_matches(p.host, address):
                    continue
                ok = True
                break
            if not ok:
                self.stats["rejected_assoc"] += 1
                known_aet = any(p.ae_title == calling_ae for p in cfg.allowed_peers)
                log.warning("association rejected: unknown peer calling_ae=%s address=%s",
                            calling_ae, address)
                metrics.ASSOCIATIONS_REJECTED.labels("unknown_peer").inc()
                return RJ_NO_REASON if known_aet else RJ_CALLING_AET
        active = self.open_associations()
        if active > cfg.scp.max_associations:  # as pynetdicom counts, with a log line
            self.stats["rejected_assoc"] += 1
            log.warning("association rejected: %d associations open (scp.max_associations=%d); "
                        "calling_ae=%s address=%s", active - 1, cfg.scp.max_associations,
                        calling_ae, address)
            metrics.ASSOCIATIONS_REJECTED.labels("max_associations").inc()
            return RJ_LOCAL_LIMIT
        if cfg.min_free_disk_mb > 0:
            try:
                free = self.spool.free_mb()
            except OSError:
                free = 0.0
            if free < cfg.min_free_disk_mb:
                self.stats["rejected_assoc"] += 1
                log.error("association rejected: spool free space %.0f MiB below min_free_disk_mb"
                          "=%.0f calling_ae=%s address=%s", free, cfg.min_free_disk_mb,
                          calling_ae, address)
                metrics.ASSOCIATIONS_REJECTED.labels("low_disk").inc()
                return RJ_LOCAL_LIMIT
        return None
