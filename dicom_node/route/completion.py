"""Series and study completion, restart-safe (state in the index, timers in APScheduler).

Series
    Every series in state ``receiving`` has one APScheduler date job, re-armed (replaced) after
    each index batch that touched it, at ``last_received_at + quiet_seconds``. When it fires and
    no instance arrived since, the series becomes ``complete``. With ``completion.early`` a series
    whose expected size is reliably known (:func:`dicom_node.store.index.expected_count`: a 3D
    Enhanced MR object; ``ImagesInAcquisition``) completes as soon as that many instances are
    indexed. The delay from the last instance to "complete" is stored (``complete_delay_s``).
    At start-up every ``receiving`` series is re-armed from the index (a timer already past
    fires at once). When the association that delivered a series is released (and no other
    open association delivers it), the series completes ``release_grace_seconds`` later unless
    an instance arrives in the meantime (:meth:`CompletionManager.on_association_released`);
    the quiet period stays the fallback, e.g. for senders that open one association per
    instance and pause longer than the grace between them. A complete series is classified
    from its instances' routing headers, kept in the index at receipt
    (:func:`series_headers`); no spooled file is read, except for index rows that have none
    (an index of an earlier version, files re-indexed at start-up).

Re-opening
    An instance that arrives after completion re-opens the series (``receiving``); it completes
    again by the same rules and the study is routed again. Because the job key includes the
    input instance set, a changed series yields a *new* job (``version`` + 1); an unchanged one
    (e.g. a duplicate re-send) does not queue anything.

Studies
    Each time a series completes, the study is routed (``RuleSet.route_study``) over its complete
    image series. A route is queued as a job when all of its input series are complete. When
    it lacks an optional role (e.g. T1) while other series of the study are still arriving, the
    job waits up to the route's ``optional_grace_seconds`` (deadline stored in the index and
    re-armed at start-up); afterwards it is queued without the optional input.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from apscheduler.schedulers.background import BackgroundScheduler

from dicom_node.store.index import Index, SeriesState
from dicom_node.store.jobs import JobQueue, make_job_key
from dicom_node.store.records import SeriesTouch, keeps_element, routing_header

__all__ = ["CompletionManager", "series_headers", "series_tuple", "reads_kept_only"]

log = logging.getLogger(__name__)


def _read_header(path: Path) -> Any:
    """The header (no pixel data) of a spooled file; None, with a log line, when unreadable."""
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:  # noqa: BLE001
        log.warning("unreadable spooled file %s: %s", path, exc)
        return None


def _header(path: Path, stored: bytes | None) -> Any:
    """An instance's routing header as stored at receipt; its file's header when the index
    has none (or it does not decode)."""
    if stored is not None:
        try:
            return routing_header(stored)
        except Exception as exc:  # noqa: BLE001
            log.warning("stored routing header of %s does not decode (%s): file read", path, exc)
    return _read_header(path)


def series_headers(index: Index, series_uid: str) -> list[Any]:
    """The headers of a series' instances, for classification: each instance's routing header
    stored at receipt (:func:`dicom_node.store.records.routing_header`), or, for a row without
    one (an index of an earlier version, a file re-indexed at start-up), its spooled file's
    header. Unreadable files are skipped."""
    return [ds for ds in (_header(p, b) for p, b in index.instance_headers(series_uid))
            if ds is not None]


def reads_kept_only(rules: Any) -> bool:
    """Whether every tag ``rules`` read from a first header is in the routing header
    (:func:`dicom_node.store.records.keeps_element`); otherwise the first file is read."""
    tags = getattr(rules, "header_tags", None)
    return tags is not None and all(keeps_element(t) for t in tags())


def _info_to_dict(info: Any) -> dict[str, Any]:
    if info is None:
        return {}
    if hasattr(info, "to_dict"):
        return dict(info.to_dict())
    if hasattr(info, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(info)
    return dict(getattr(info, "__dict__", {}))


def _info_from_json(text: str) -> Any:
    try:
        from dicom_node.route.classify import SeriesInfo

        d = json.loads(text)
        return SeriesInfo(**d)
    except Exception:  # noqa: BLE001
        return None


def series_tuple(index: Index, classify: Callable[[list[Any]], Any] | None, s: dict[str, Any], *,
                 whole: bool = False, rules: Any = None) -> tuple[str, Any, Any] | None:
    """``(series_uid, first header, SeriesInfo)`` of an indexed series, for routing.

    A complete series uses the classification stored at completion (or classifies all its
    headers); one still receiving is classified on its first header, unless ``whole`` (a
    series known to be whole, e.g. a finished retrieval). The first header is the routing
    header stored at receipt when ``rules`` read nothing else (:func:`reads_kept_only`), else
    the first file's. None when it cannot be read."""
    stored = index.instance_headers(s["series_uid"])
    if not stored:
        return None
    path, blob = stored[0]
    first = _header(path, blob if reads_kept_only(rules) else None)
    if first is None:
        return None
    complete = whole or s["state"] == SeriesState.COMPLETE
    info = None
    if s["state"] == SeriesState.COMPLETE and s.get("info_json"):
        info = _info_from_json(s["info_json"])
    if info is None and classify is not None:
        try:
            info = classify(series_headers(index, s["series_uid"]) if complete else [first])
        except Exception:  # noqa: BLE001
            info = None
    if info is None:
        return None
    return (s["series_uid"], first, info)


class CompletionManager:
    """Arms per-series quiet timers, completes series, routes studies into jobs.

    Parameters
    ----------
    index : Index
    jobs : JobQueue
    quiet_seconds : float
    early : bool
        Complete early when the expected number of instances is reliably known.
    rules : RuleSet or None
        Routing rules (``dicom_node.route.rules.load_rules``); None: series complete, no jobs.
    classify : callable or None
        ``classify_series(list[Dataset]) -> SeriesInfo``; None: contrast stays unknown.
    resolve_destinations : callable or None
        ``f(destinations, study_row) -> list[Target]``
        (:func:`dicom_node.send.destinations.make_destination_resolver`) applied before
        enqueueing; the job stores each target's ``to_dict()``.
    on_series_complete : callable or None
        Hook ``f(series_row)`` (metrics, tests).
    is_prior : callable or None
        ``f(study_uid) -> bool``: the study was retrieved as a prior of another study
        (:class:`dicom_node.store.priors.PriorRegistry`); such a study is never routed.
    """

    def __init__(
        self,
        index: Index,
        jobs: JobQueue,
        quiet_seconds: float,
        early: bool = True,
        rules: Any = None,
        classify: Callable[[list[Any]], Any] | None = None,
        resolve_destinations: Callable[[list[dict], dict], list[Any]] | None = None,
        on_series_complete: Callable[[dict[str, Any]], None] | None = None,
        release_grace_seconds: float = 0.0,
        is_prior: Callable[[str], bool] | None = None,
    ) -> None:
        self.is_prior = is_prior
        self.index = index
        self.jobs = jobs
        self.quiet = float(quiet_seconds)
        self.early = early
        self.release_grace = float(release_grace_seconds)
        self._released: dict[str, float] = {}  # series -> when its association was released
        self.rules = rules
        self.classify = classify
        self.resolve_destinations = resolve_destinations
        self.on_series_complete = on_series_complete
        self.scheduler = BackgroundScheduler(
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
            executors={"default": {"type": "threadpool", "max_workers": 2}},
        )
        self._study_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler and re-arm timers from the index (restart safety)."""
        self.scheduler.start()
        now = time.time()
        n = 0
        for s in self.index.list_series(state=SeriesState.RECEIVING):
            self._arm(s["series_uid"], s["last_received_at"] or now, s["n_instances"],
                      s["expected_instances"])
            n += 1
        for st in self.index.pending_studies():
            self._arm_study(st["study_uid"], st["route_deadline"])
        if n:
            log.info("completion: re-armed %d receiving series from the index", n)

    def stop(self) -> None:
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:  # noqa: BLE001
            pass

    # -- timers --------------------------------------------------------------------------
    def on_batch(self, touches: list[SeriesTouch]) -> None:
        """Index-writer callback: (re-)arm the timers of the series a batch touched."""
        for t in touches:
            self._arm(t.series_uid, t.last_received_at, t.n_instances, t.expected)

    def on_association_released(self, series_uids: list[str]) -> None:
        """SCP callback: the association that delivered these series was released."""
        if self.release_grace <= 0:
            return
        now = time.time()
        for uid in series_uids:
            self._released[uid] = now
            cur = self.index.series(uid)
            if cur and cur["state"] == "receiving":
                self._arm(uid, cur["last_received_at"], cur["n_instances"],
                          cur["expected_instances"])

    def _arm(self, series_uid: str, last: float, n: int, expected: int | None) -> None:
        if self.early and expected and n >= expected:
            run_at, reason = time.time(), "expected-count"
        else:
            run_at, reason = last + self.quiet, "quiet-period"
            released = self._released.get(series_uid)
            if released is not None and last <= released:  # nothing arrived since the release
                if released + self.release_grace < run_at:
                    run_at, reason = released + self.release_grace, "association-released"
        from datetime import datetime, timezone

        self.scheduler.add_job(
            self._complete_series, "date", id=f"series:{series_uid}", replace_existing=True,
            run_date=datetime.fromtimestamp(run_at, tz=timezone.utc),
            args=[series_uid, last, reason],
        )

    def _arm_study(self, study_uid: str, deadline: float) -> None:
        from datetime import datetime, timezone

        self.scheduler.add_job(
            self.evaluate_study, "date", id=f"study:{study_uid}", replace_existing=True,
            run_date=datetime.fromtimestamp(deadline, tz=timezone.utc), args=[study_uid],
        )

    # -- series --------------------------------------------------------------------------
    def _complete_series(self, series_uid: str, expect_last: float, reason: str) -> None:
        try:
            row = self.index.mark_series_complete(
                series_uid, now=time.time(), reason=reason, expect_last=expect_last
            )
            if row is None:
                cur = self.index.series(series_uid)
                if cur and cur["state"] == SeriesState.RECEIVING:  # new instance since: re-arm
                    self._arm(series_uid, cur["last_received_at"], cur["n_instances"],
                              cur["expected_instances"])
                return
            self._released.pop(series_uid, None)
            log.info(
                "series complete: series=%s study=%s n=%d reason=%s delay_after_last=%.3fs",
                series_uid, row["study_uid"], row["n_instances"], reason,
                row["complete_delay_s"],
            )
            self._classify(row)
            if self.on_series_complete:
                try:
                    self.on_series_complete(row)
                except Exception:
                    log.exception("on_series_complete hook failed")
            self.evaluate_study(row["study_uid"])
        except Exception:
            log.exception("completion of series %s failed", series_uid)

    def _classify(self, row: dict[str, Any]) -> None:
        if self.classify is None:
            return
        headers = series_headers(self.index, row["series_uid"])
        if not headers:
            return
        try:
            info = self.classify(headers)
        except Exception as exc:  # noqa: BLE001
            log.warning("classification failed for series %s: %s", row["series_uid"], exc)
            return
        d = _info_to_dict(info)
        self.index.set_series_info(row["series_uid"], d.get("contrast"), d)
        log.info("series classified: series=%s contrast=%s", row["series_uid"],
                 d.get("contrast"))

    # -- studies -------------------------------------------------------------------------
    def evaluate_study(self, study_uid: str) -> list[str]:
        """Route a study over its series; queue the jobs whose inputs are complete.

        Returns the ids of jobs queued (or found already queued) by this call.
        """
        if self.rules is None:
            return []
        with self._study_lock:
            try:
                return self._evaluate_study(study_uid)
            except Exception:
                log.exception("routing of study %s failed", study_uid)
                return []

    def _series_tuple(self, s: dict[str, Any]) -> tuple[str, Any, Any] | None:
        return series_tuple(self.index, self.classify, s, rules=self.rules)

    def _evaluate_study(self, study_uid: str) -> list[str]:
        if self.is_prior is not None and self.is_prior(study_uid):
            log.info("study %s: retrieved as a prior for comparison: not routed", study_uid)
            return []
        series = self.index.series_of_study(study_uid)
        study = self.index.study(study_uid) or {"study_uid": study_uid}
        complete = [s for s in series if s["state"] == SeriesState.COMPLETE]
        receiving = [s for s in series if s["state"] != SeriesState.COMPLETE]
        if not complete:
            return []
        tuples = [t for t in (self._series_tuple(s) for s in complete) if t is not None]
        if not tuples:
            return []
        routes = self.rules.route_study(
            tuples, context={"calling_ae": study.get("calling_ae")})
        queued: list[str] = []
        now = time.time()
        wait_until: float | None = None
        by_uid = {s["series_uid"]: s for s in series}
        for route in routes:
            missing_opt = list(getattr(route, "missing_optional", []) or [])
            grace = float(getattr(route, "optional_grace_seconds", 0) or 0)
            if missing_opt and receiving and grace > 0:
                # an optional input may still be arriving: wait up to the grace period,
                # counted from when the required inputs were complete.
                ready_at = max(by_uid[u]["completed_at"] or now for u in route.inputs.values()
                               if u in by_uid)
                deadline = ready_at + grace
                if now < deadline:
                    wait_until = deadline if wait_until is None else min(wait_until, deadline)
                    log.info("study %s: rule %s waits up to %.0fs for optional %s",
                             study_uid, route.rule, deadline - now, ",".join(missing_opt))
                    continue
            inst_sets = {u: self.index.instance_uids(u) for u in route.inputs.values()}
            key = make_job_key(study_uid, route.rule, dict(route.inputs), inst_sets)
            dests = list(getattr(route, "destinations", []) or [])
            if self.resolve_destinations:
                dests = [t.to_dict() for t in self.resolve_destinations(dests, study)]
            calling_ae = None
            for u in route.inputs.values():
                if u in by_uid and by_uid[u].get("calling_ae"):
                    calling_ae = by_uid[u]["calling_ae"]
                    break
            before = {j.id for j in self.jobs.list(study_uid=study_uid)}
            job_id = self.jobs.enqueue(
                study_uid, route.rule, route.pipeline, dict(route.inputs), dests,
                int(getattr(route, "priority", 0) or 0), calling_ae=calling_ae, job_key=key,
                alternates={role: rest
                            for role, uids in (getattr(route, "candidates", None) or {}).items()
                            if (rest := [u for u in uids if u != route.inputs.get(role)])},
            )
            if job_id not in before:
                log.info("job queued: job=%s study=%s rule=%s pipeline=%s inputs=%s",
                         job_id, study_uid, route.rule, route.pipeline,
                         json.dumps(dict(route.inputs), sort_keys=True))
            queued.append(job_id)
        if wait_until is not None:
            self.index.set_route_pending(study_uid, now, wait_until)
            self._arm_study(study_uid, wait_until)
        else:
            self.index.set_route_pending(study_uid, None, None)
        return queued
