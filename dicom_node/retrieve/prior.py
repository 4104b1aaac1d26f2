"""Find, retrieve and select the prior study a follow-up study is compared with.

For a job whose routing rule has an enabled ``prior:`` block (see
:class:`dicom_node.route.rules.schema.PriorModel`):

1. The follow-up's PatientID and StudyDate come from the index. Without either, no prior is
   searched (the job runs as a single study and its report says why).
2. C-FIND (Study Root, STUDY level) at the rule's ``prior.peer`` for the patient's studies of
   ``prior.modality`` from ``lookback_days`` before the follow-up up to its date; the most recent
   study strictly earlier than the follow-up (date, then time) is the prior.
3. When the node already holds that study's series (it analysed it, or retrieved it whole,
   before), nothing is retrieved; a retrieval a crash interrupted is done again. Otherwise the
   prior study is registered (:class:`PriorRegistry`, so that it is
   never routed as a study of its own), its series of ``prior.modality`` are listed (C-FIND,
   SERIES level) and moved to the node's own AE title (C-MOVE; or fetched with C-GET on the
   node's own association, ``prior.retrieve: get``), and the node waits until its
   index holds the instances the PACS reported as moved.
4. The prior's inputs are chosen by the same rule as the follow-up's
   (:meth:`RuleSet.route_with_rule`), so "the FLAIR" means the same thing at both time points.
5. When the node analysed the prior study before (a finished job of the same rule), that job's
   result folder is named so that the pipeline can reuse its lesions and tracking UIDs.
6. When it holds no such result (results purged by retention, the node reinstalled, another
   node instance analysed the prior), the SRs the node wrote into the prior study are looked
   for at the PACS and retrieved (:meth:`PriorFetcher.own_reports`): the pipeline then segments
   the prior again but takes its lesions' tracking identifiers and UIDs from the newest such SR
   that fits (same model version, same FLAIR, the same lesions:
   :func:`dicom_node.run.followup.prior_report_tracking`). No SR, or one that does not fit,
   only costs the tracking UIDs (a log line says why), never the comparison.

The answer is a plain dict for the pipeline (``job["prior"]``): ``study_uid``, ``study_date``,
``study_time``, ``accession``, ``inputs`` (role -> spool paths), ``series`` (role -> series
UID), ``reuse_result_dir`` (or None), ``own_reports`` (spool paths of the node's SRs of the
prior, newest first; empty when a result folder is reused or none was found), ``retrieved``
(image instances moved; 0 when held already) and ``retrieve_s``; or ``{"reason": ...}`` (plus
what is known of the prior) when there is no prior to compare with. Network and PACS errors
become such reasons, never exceptions: a follow-up is still analysed, as a single study, when
its prior cannot be had.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from dicom_node.encode.identity import MANUFACTURER as OWN_SR_MANUFACTURER
from dicom_node.encode.identity import MODEL_NAME as OWN_SR_MODEL_NAME
from dicom_node.encode.identity import SR_DESCRIPTION as OWN_SR_DESCRIPTION
from dicom_node.retrieve.qr import (
    Peer,
    RetrieveError,
    find_series,
    find_studies,
    get_series,
    move_series,
)
from dicom_node.route.completion import series_tuple
from dicom_node.store.priors import PriorRegistry

if TYPE_CHECKING:
    from dicom_node.config import NodeConfig
    from dicom_node.route.rules import RuleSet
    from dicom_node.store.index import Index
    from dicom_node.store.jobs import JobQueue

log = logging.getLogger(__name__)

__all__ = ["PriorFetcher"]

#: How long to wait, after the C-MOVE's final response, for the index to hold every moved
#: instance (the Storage SCP indexes in batches, a fraction of a second behind).
INDEX_WAIT_S = 30.0




def _own_report_header(path: Any) -> tuple[str, str] | None:
    """(Content Date, Content Time) of a spooled SR the node wrote; None for any other file."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["Modality", "Manufacturer", "ManufacturerModelName",
                                            "ContentDate", "ContentTime"])
    except Exception:  # noqa: BLE001
        return None
    if (str(ds.get("Modality", "")) != "SR"
            or str(ds.get("Manufacturer", "") or "").strip() != OWN_SR_MANUFACTURER
            or str(ds.get("ManufacturerModelName", "") or "").strip() != OWN_SR_MODEL_NAME):
        return None
    return (str(ds.get("ContentDate", "") or ""), str(ds.get("ContentTime", "") or ""))


def _date(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text.strip()[:8], "%Y%m%d").date()
    except (ValueError, AttributeError):
        return None


class PriorFetcher:
    """Find and retrieve a job's prior study (runs in the node process, never in the worker).

    Parameters
    ----------
    cfg : NodeConfig
        ``ae_title`` (the C-MOVE destination and calling AE title), ``peers``, ``data_dir``.
    index, jobs
        The node's index and job queue.
    rules : RuleSet
        The routing rules (the job's rule gives the ``prior:`` block and the input roles).
    classify : callable
        ``classify_series(headers) -> SeriesInfo``.
    registry : PriorRegistry, optional
    store : callable, optional
        ``EVT_C_STORE`` handler for ``retrieve: get`` (the node's
        :meth:`StorageSCP.handle_store <dicom_node.receive.scp.StorageSCP.handle_store>`: a
        C-GET's instances are spooled and indexed like received ones).
    """

    def __init__(self, cfg: NodeConfig, index: Index, jobs: JobQueue, rules: RuleSet,
                 classify: Callable[[list[Any]], Any] | None,
                 registry: PriorRegistry | None = None,
                 store: Callable[[Any], int] | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.index = index
        self.jobs = jobs
        self.rules = rules
        self.classify = classify
        self.registry = registry or PriorRegistry(index)

    def settings(self, job: Any) -> dict[str, Any] | None:
        """The job rule's enabled ``prior:`` block, or None."""
        rule = self.rules.rule(job.rule) if self.rules is not None and job.rule else None
        prior = getattr(rule, "prior", None)
        return prior if prior and prior.get("enabled", True) else None

    def fetch(self, job: Any) -> dict[str, Any] | None:
        """The prior for ``job`` (see the module docstring); None when its rule wants none."""
        settings = self.settings(job)
        if settings is None:
            return None
        try:
            return self._fetch(job, settings)
        except RetrieveError as exc:
            log.warning("job %s: prior not retrieved: %s", job.id, exc)
            return {"reason": f"prior study not retrieved: {exc}"}
        except Exception as exc:  # a prior never stops the follow-up's analysis
            log.exception("job %s: prior search failed", job.id)
            return {"reason": f"prior search failed: {type(exc).__name__}: {exc}"}

    def _peer(self, name: str) -> Peer:
        p = self.cfg.peer(name)
        if p is None:
            raise RetrieveError(f"prior.peer {name!r} is not in node.yaml peers")
        return Peer(p.ae_title, p.host, int(p.port))

    def _fetch(self, job: Any, settings: dict[str, Any]) -> dict[str, Any]:
        study = self.index.study(job.study_uid) or {}
        patient_id = (study.get("patient_id") or "").strip()
        when = _date(study.get("study_date") or "")
        if not patient_id:
            return {"reason": "the study has no Patient ID: no prior study searched"}
        if when is None:
            return {"reason": "the study has no Study Date: no prior study searched"}
        follow_time = self._study_time(job.study_uid)
        peer = self._peer(settings["peer"])
        # settings: PriorModel.as_dict(), every key present (the defaults live in the schema)
        timeout, lookback = float(settings["timeout_seconds"]), int(settings["lookback_days"])
        start = when - dt.timedelta(days=lookback)
        modality = str(settings["modality"])
        t0 = time.perf_counter()
        matches = find_studies(self.cfg.ae_title, peer, patient_id,
                               date_range=f"{start:%Y%m%d}-{when:%Y%m%d}", modality=modality,
                               timeout_s=min(timeout, 60.0))
        earlier = [m for m in matches if m.study_uid != job.study_uid and _date(m.study_date)
                   and (m.study_date[:8], m.study_time or "") < (f"{when:%Y%m%d}", follow_time or "")]
        # the same day counts only with study times that say which came first
        earlier = [m for m in earlier if m.study_date[:8] != f"{when:%Y%m%d}"
                   or (m.study_time and follow_time)]
        if not earlier:
            log.info("job %s: no prior %s study within %d days at %s", job.id, modality, lookback,
                     peer)
            return {"reason": f"no earlier {modality} study of the patient within {lookback} days "
                              f"at {peer.ae_title}"}
        prior = max(earlier, key=lambda m: (m.study_date[:8], m.study_time))
        base = {"study_uid": prior.study_uid, "study_date": prior.study_date[:8],
                "study_time": prior.study_time, "accession": prior.accession}
        log.info("job %s: prior study %s of %s (%d candidate(s)) at %s", job.id, prior.study_uid,
                 prior.study_date, len(earlier), peer)

        retrieved = 0
        # A retrieval that a crash interrupted left a partial prior: retrieve it again.
        reg = self.registry.get(prior.study_uid)
        held = reg is None or reg.get("finished_at") is not None
        route = self._route(job.rule, prior.study_uid, whole=True) if held else None
        if route is None:
            series = [s for s in find_series(self.cfg.ae_title, peer, prior.study_uid,
                                             timeout_s=min(timeout, 60.0))
                      if s.modality == modality]
            if not series:
                return {**base, "reason": f"the prior study of {prior.study_date} has no "
                                          f"{modality} series at {peer.ae_title}"}
            self.registry.register(prior.study_uid, job.id, str(peer))
            log.info("job %s: retrieving prior study %s: %d series from %s (%s)",
                     job.id, prior.study_uid, len(series), peer,
                     "C-GET" if settings["retrieve"] == "get" else f"C-MOVE to {self.cfg.ae_title}")
            retrieved = self._retrieve(peer, prior.study_uid, [s.series_uid for s in series],
                                       settings)
            self.registry.finished(prior.study_uid, retrieved)
            route = self._route(job.rule, prior.study_uid, whole=True)
        if route is None:
            return {**base, "reason": f"the prior study of {prior.study_date} has no series that "
                                      f"rule {job.rule} accepts as its required input"}
        inputs = {role: [str(p) for p in self.index.instance_paths(uid)]
                  for role, uid in route.inputs.items()}
        reuse = self._reuse(job.rule, prior.study_uid)
        reports = [] if reuse is not None else self.own_reports(job, peer, prior.study_uid,
                                                                settings)
        retrieve_s = time.perf_counter() - t0
        log.info("job %s: prior %s ready in %.1f s (%d instance(s) retrieved): %s", job.id,
                 prior.study_uid, retrieve_s, retrieved,
                 ", ".join(f"{r}={u}" for r, u in sorted(route.inputs.items())))
        return {**base, "inputs": inputs, "series": dict(route.inputs),
                "reuse_result_dir": reuse, "own_reports": reports,
                "retrieved": retrieved, "retrieve_s": round(retrieve_s, 3)}

    def _retrieve(self, peer: Peer, study_uid: str, uids: list[str],
                  settings: dict[str, Any]) -> int:
        """C-MOVE (or C-GET) the series ``uids`` of ``study_uid`` to the node and wait until the
        index holds them; the number of instances retrieved."""
        timeout = float(settings["timeout_seconds"])
        if settings["retrieve"] == "get":
            if self.store is None:
                raise RetrieveError("retrieve: get needs the node's Storage SCP (not running)")
            moved = get_series(self.cfg.ae_title, peer, study_uid, uids, self.store,
                               timeout_s=timeout)
        else:
            moved = move_series(self.cfg.ae_title, peer, study_uid, uids, self.cfg.ae_title,
                                timeout_s=timeout)
        self._wait_indexed(uids, moved.completed)
        return moved.completed

    def own_reports(self, job: Any, peer: Peer, study_uid: str,
                    settings: dict[str, Any]) -> list[str]:
        """Spool paths of the SRs the node itself wrote into the prior study, newest first.

        Asked only when the node holds no reusable result of its own for the prior: the SR's
        tracking UIDs then still continue the lesions' tracking (the worker checks that the SR
        fits: :func:`dicom_node.run.followup.prior_report_tracking`). C-FIND (SERIES level) for
        SR series whose description is the node's ("MS lesion report ..."; a PACS that returns
        no description lets every SR series through), retrieval of those the node does not
        hold yet (like the images: C-MOVE or C-GET, into the prior study: a study retrieved as a
        prior is never routed, and one the node analysed itself keeps its one job, since the
        same inputs make the same job), and a header check: Manufacturer and Manufacturer's Model Name as
        :func:`dicom_node.encode.sr.build_sr` writes them. Newest: Content Date and Time.
        Never raises: a failure is logged (why no SR is used) and gives an empty list."""
        ing = self.cfg.ingest
        if ing.drop_non_mr or "SR" in ing.drop_modalities:
            log.info("job %s: the node's SR of prior %s not looked for: the ingest filter drops "
                     "SR objects; prior lesions get new tracking UIDs", job.id, study_uid)
            return []
        try:
            series = [s for s in find_series(self.cfg.ae_title, peer, study_uid,
                                             timeout_s=min(float(settings["timeout_seconds"]), 60.0))
                      if s.modality == "SR" and (not s.description
                                                 or s.description.startswith(OWN_SR_DESCRIPTION))]
            missing = [s.series_uid for s in series
                       if len(self.index.instance_uids(s.series_uid)) < (s.n_instances or 1)]
            if missing:
                n = self._retrieve(peer, study_uid, missing, settings)
                log.info("job %s: retrieved %d SR instance(s) of prior %s (%s)", job.id, n, study_uid,
                         "C-GET" if settings["retrieve"] == "get" else f"C-MOVE to {self.cfg.ae_title}")
        except Exception as exc:  # noqa: BLE001 - the comparison runs without the SR
            log.warning("job %s: the node's SR of prior %s not retrieved (%s); prior lesions get "
                        "new tracking UIDs", job.id, study_uid, exc)
            return []
        found = []
        for s in series:
            for p in self.index.instance_paths(s.series_uid):
                hdr = _own_report_header(p)
                if hdr is not None:
                    found.append((hdr, str(p)))
        if not found:
            log.info("job %s: no SR of the node in prior %s at %s (%d SR series); prior lesions "
                     "get new tracking UIDs", job.id, study_uid, peer, len(series))
            return []
        found.sort(key=lambda f: f[0], reverse=True)
        log.info("job %s: %d SR(s) of the node in prior %s", job.id, len(found), study_uid)
        return [p for _, p in found]

    def _study_time(self, study_uid: str) -> str:
        """The follow-up's StudyTime from one of its spooled headers ("" when absent)."""
        import pydicom

        for s in self.index.series_of_study(study_uid):
            for p in self.index.instance_paths(s["series_uid"])[:1]:
                try:
                    ds = pydicom.dcmread(p, stop_before_pixels=True, force=True,
                                         specific_tags=["StudyTime"])
                    return str(ds.get("StudyTime", "") or "").strip()
                except Exception:  # noqa: BLE001
                    continue
        return ""

    def _route(self, rule: str, study_uid: str, whole: bool) -> Any:
        tuples = [t for t in (series_tuple(self.index, self.classify, s, whole=whole, rules=self.rules)
                              for s in self.index.series_of_study(study_uid)) if t is not None]
        if not tuples:
            return None
        return self.rules.route_with_rule(rule, tuples)

    def _wait_indexed(self, series_uids: list[str], expected: int) -> None:
        deadline = time.monotonic() + INDEX_WAIT_S
        while time.monotonic() < deadline:
            n = sum(len(self.index.instance_uids(u)) for u in series_uids)
            if n >= expected:
                return
            time.sleep(0.2)
        raise RetrieveError(f"the PACS reported {expected} instance(s) moved but the node "
                            f"indexed fewer within {INDEX_WAIT_S:.0f} s")

    def _reuse(self, rule: str, study_uid: str) -> str | None:
        """Result folder of the newest finished job of ``rule`` on ``study_uid``, if any."""
        from dicom_node.run.runner import results_dir

        done = [j for j in self.jobs.list(state="done", study_uid=study_uid) if j.rule == rule]
        for j in sorted(done, key=lambda j: j.updated_at, reverse=True):
            d = results_dir(self.cfg.data_dir, j.id)
            if (d / "result.json").is_file():
                return str(d)
        return None
