"""Routing's destinations resolved against node.yaml: one Target type from the rule to the sender."""
from __future__ import annotations

from dicom_node.config import NodeConfig
from dicom_node.send.destinations import Destination, Target, make_destination_resolver


def _resolve(dests, calling_ae="MRI1"):
    cfg = NodeConfig(peers=[{"name": "pacs", "ae_title": "PACS", "host": "10.0.0.2", "port": 104},
                            {"name": "mri", "ae_title": "MRI1", "host": "10.0.0.7", "port": 11112}])
    return make_destination_resolver(cfg)(dests, {"calling_ae": calling_ae,
                                                  "calling_host": "10.0.0.7"})


def test_peer_sender_and_explicit_destinations_resolve_and_survive_the_job_store():
    targets = _resolve([{"peer": "pacs"}, {"sender": True, "overlay": False},
                        {"ae_title": "VIEWER", "host": "10.0.0.5", "port": 104}])
    assert [t.destination for t in targets] == [Destination("PACS", "10.0.0.2", 104),
                                                Destination("MRI1", "10.0.0.7", 11112),
                                                Destination("VIEWER", "10.0.0.5", 104)]
    assert [t.overlay for t in targets] == [True, False, True]
    assert targets[1].sender and targets[1].peer == "mri"
    # the job stores the dict form; the runner reads the same targets back
    assert [Target.from_dict(t.to_dict()) for t in targets] == targets


def test_unresolvable_destinations_say_why_and_have_no_peer_to_send_to():
    unknown, stranger = _resolve([{"peer": "archive"}, {"sender": True}], calling_ae="STRANGER")
    assert unknown.destination is None and "unknown peer 'archive'" in unknown.error
    assert stranger.destination is None and "sender AE 'STRANGER' is not in node.yaml peers" in stranger.error
    assert Target.from_dict(unknown.to_dict()) == unknown
    half = Target.from_dict({"ae_title": "X", "host": None, "port": None})
    assert half.destination is None and "incomplete destination" in half.error
