"""Where results go: a C-STORE peer (:class:`Destination`), and routing's destinations resolved to peers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicom_node.config import NodeConfig

__all__ = ["Destination", "Target", "make_destination_resolver"]


@dataclass(frozen=True)
class Destination:
    """A C-STORE peer: called AE title, host, port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Target:
    """A routing destination resolved against node.yaml's peers: where a job's results go.

    The one type from routing to sending: the resolver makes it, the job stores it
    (:meth:`to_dict`, JSON), the runner reads it back (:meth:`from_dict`) and queues results for
    :attr:`destination`. ``destination`` None: not resolvable, ``error`` says why (the runner
    skips it, or fails the job when no target is usable).
    """

    destination: Destination | None
    overlay: bool = True  #: False: SEG + SR only (viewers that show SEG)
    peer: str | None = None  #: node.yaml peer name, when known
    sender: bool = False  #: "back to the sender" in the rule
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stored form (keys as jobs have always stored them)."""
        d: dict[str, Any] = {}
        if self.sender:
            d["sender"] = True
        if self.peer:
            d["peer"] = self.peer
        dest = self.destination
        d.update(ae_title=dest.ae_title if dest else None, host=dest.host if dest else None,
                 port=dest.port if dest else None)
        if not self.overlay:
            d["overlay"] = False
        if self.error:
            d["error"] = self.error
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        """Read a stored target; one without AE title, host and port has an ``error``."""
        dest = None
        error = d.get("error")
        if not error:
            if d.get("ae_title") and d.get("host") and d.get("port"):
                dest = Destination(str(d["ae_title"]), str(d["host"]), int(d["port"]))
            else:
                error = f"incomplete destination {d}"
        return cls(dest, overlay=d.get("overlay") is not False, peer=d.get("peer"),
                   sender=bool(d.get("sender")), error=error)


def make_destination_resolver(
    cfg: NodeConfig,
) -> Callable[[list[dict[str, Any]], dict[str, Any]], list[Target]]:
    """Resolve a rule's destinations (``DestinationModel.as_dict``) to :class:`Target` using
    ``cfg.peers``.

    ``{"peer": name}`` -> that peer; ``{"sender": True}`` -> the peer whose AE title is the
    study's calling AE; explicit ``{ae_title, host, port}`` stays. Unresolvable entries keep an
    ``error`` so the runner can report them.
    """

    def resolve(dests: list[dict[str, Any]], study: dict[str, Any]) -> list[Target]:
        out = []
        for d in dests:
            overlay = d.get("overlay") is not False
            if "peer" in d:
                p = cfg.peer(d["peer"])
                out.append(Target(Destination(p.ae_title, p.host, p.port), overlay, p.name)
                           if p else Target(None, overlay, d["peer"], error=(
                               f"unknown peer {d['peer']!r} (not in node.yaml peers)")))
            elif d.get("sender"):
                aet = (study.get("calling_ae") or "").strip()
                p = cfg.peer_by_ae(aet) if aet else None
                out.append(Target(Destination(p.ae_title, p.host, p.port), overlay, p.name, True)
                           if p else Target(None, overlay, sender=True, error=(
                               f"sender AE {aet!r} is not in node.yaml peers (port unknown)")))
            else:
                out.append(Target.from_dict(d))
        return out

    return resolve
