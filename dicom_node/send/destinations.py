"""Where results go: a C-STORE peer (:class:`Destination`), and routing's destinations resolved to peers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicom_node.config import NodeConfig

__all__ = ["Destination", "make_destination_resolver"]


@dataclass(frozen=True)
class Destination:
    """A C-STORE peer: called AE title, host, port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def make_destination_resolver(
    cfg: NodeConfig,
) -> Callable[[list[dict[str, Any]], dict[str, Any]], list[dict[str, Any]]]:
    """Resolve route destinations to ``{ae_title, host, port}`` using ``cfg.peers``.

    ``{"peer": name}`` -> that peer; ``{"sender": True}`` -> the peer whose AE title is the
    study's calling AE; explicit ``{ae_title, host, port}`` stays. Unresolvable entries keep an
    ``"error"`` field so the runner can report them.
    """

    def resolve(dests: list[dict[str, Any]], study: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for d in dests:
            d = dict(d)
            if "peer" in d:
                p = cfg.peer(d["peer"])
                if p:
                    d.update(ae_title=p.ae_title, host=p.host, port=p.port)
                else:
                    d["error"] = f"unknown peer {d['peer']!r} (not in node.yaml peers)"
            elif d.get("sender"):
                aet = (study.get("calling_ae") or "").strip()
                p = cfg.peer_by_ae(aet) if aet else None
                if p:
                    d.update(peer=p.name, ae_title=p.ae_title, host=p.host, port=p.port)
                else:
                    d.update(ae_title=aet or None, host=study.get("calling_host"), port=None,
                             error=f"sender AE {aet!r} is not in node.yaml peers (port unknown)")
            out.append(d)
        return out

    return resolve
