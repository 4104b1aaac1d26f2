"""Deterministic DICOM UIDs.

Every object the node writes gets UIDs derived from stable inputs (job key: study UID, input
series UIDs, model version, ...), so re-running a job produces the same SOP Instance UIDs and a
PACS stores the results once, however often they are sent.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from pydicom.uid import UID

if TYPE_CHECKING:
    from ai.types import ChangeReport

__all__ = ["derive_uid", "job_key", "change_key"]


def derive_uid(*parts: str) -> str:
    """Return a ``2.25.<integer>`` UID derived from ``parts`` (same parts -> same UID).

    The parts are length-prefixed before hashing, so ``("ab", "c")`` and ``("a", "bc")`` give
    different UIDs. The UUID-derived form (ITU-T X.667 / PS3.5 B.2) needs no registered root.

    Parameters
    ----------
    *parts
        Any strings (UIDs, names, roles, indices as ``str``). At least one.
    """
    if not parts:
        raise ValueError("derive_uid needs at least one part")
    h = hashlib.sha256()
    for p in parts:
        b = str(p).encode("utf-8")
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    # 128 bits like a UUID; the decimal form is at most 39 digits -> UID <= 44 chars
    value = int.from_bytes(h.digest()[:16], "big")
    uid = UID(f"2.25.{value}")
    assert uid.is_valid, uid
    return str(uid)


def job_key(study_uid: str, input_series_uids: dict[str, str] | list[str], model_version: str) -> str:
    """A stable key for one job: study, input series (by role) and model version."""
    if isinstance(input_series_uids, dict):
        series = ",".join(f"{k}={v}" for k, v in sorted(input_series_uids.items()))
    else:
        series = ",".join(sorted(input_series_uids))
    return f"{study_uid}|{series}|{model_version}"


def change_key(job_key: str, change: ChangeReport | None) -> str:
    """The seed of the object UIDs of a result that carries ``change``.

    ``job_key`` itself without a change (the objects stay what they were); with one, the prior
    study and whether it was comparable are mixed in, so that a report made with a prior (or
    after a prior arrived) is a new object, never one with the UID of an earlier, different one.
    Lesion tracking UIDs keep deriving from ``job_key`` alone.
    """
    if change is None:
        return job_key
    return f"{job_key}|prior={change.prior_study_uid}|comparable={int(change.comparable)}"
