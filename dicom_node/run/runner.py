"""Job runner: queued study jobs -> pipeline in a worker process -> outbox.

Design
------
* Jobs are claimed from the SQLite queue (:class:`dicom_node.store.jobs.JobQueue`) by one supervisor
  thread, with at most ``runner.concurrency`` running at a time (one model job by default).
* Each job runs in a worker *process* (``spawn``; the model stays loaded between jobs). An
  exception fails only that job, with its reason recorded; a worker that dies (out of memory,
  a CUDA fault, SIGKILL) is replaced by a fresh one, and its job runs again there
  (``runner.worker_death_retries`` times, once by default) before it fails with "worker process
  died". The log names how the worker ended (its exit code or signal; a crash in native code
  also prints the Python stack of every thread, via :mod:`faulthandler`).
  The node process itself never imports torch, so it keeps receiving whatever the model does.
* Results are written as files, then queued in the persistent outbox
  (:class:`dicom_node.send.outbox.Outbox`), keyed by (SOP Instance UID, destination). Output UIDs are
  derived from the job's input and the model version, so a job that runs again after a crash
  (``requeue_running`` at start-up) produces the same UIDs and nothing is sent twice.
* A second thread drains the outbox (``Outbox.send_due``) with backoff and dead-lettering.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from dicom_node.run.options import PipelineOptions
from dicom_node.send.destinations import Target
from dicom_node.store.jobs import Job, JobQueue

if TYPE_CHECKING:
    from dicom_node.config import NodeConfig
    from dicom_node.retrieve.prior import PriorFetcher
    from dicom_node.send.outbox import Outbox
    from dicom_node.store.index import Index

log = logging.getLogger(__name__)

__all__ = ["Runner", "results_dir"]


def results_dir(data_dir: Path, job_id: str) -> Path:
    """Where a job's result files and ``result.json`` are written."""
    return Path(data_dir) / "results" / job_id


#: the worker's ``runner.allocator`` (set by :func:`_worker_init`)
_ALLOCATOR = "system"
#: with the tuned allocator, a worker idle this long returns its kept heap to the kernel
#: (:func:`ai.memory.release`); back-to-back jobs (a study and its follow-up comparison) reuse it
RELEASE_AFTER_IDLE_S = 60.0
_release_timer: threading.Timer | None = None


def _worker_init(threads: int | None, log_cfg: tuple[str, str, str | None], allocator: str = "tuned") -> None:
    """Worker start-up: die with the parent, bounded threads, the node's log settings, the
    allocation of ``runner.allocator`` (:func:`ai.memory.tune`)."""
    global _ALLOCATOR
    try:  # Linux: SIGKILL this worker when the node process dies (kill -9 included).
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the worker exits when its pipe closes
        pass
    import faulthandler

    faulthandler.enable()  # a crash in native code prints every thread's Python stack (stderr)
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    from dicom_node.ops.logsetup import setup_logging

    fmt, level, file = log_cfg
    setup_logging(fmt, level, Path(file) if file else None)
    from ai.memory import tune

    _ALLOCATOR = allocator
    applied = tune(allocator)
    logging.getLogger(__name__).info("worker %d: allocator %s (%s)", os.getpid(), allocator,
                                     ", ".join(f"{k} {v}" for k, v in applied.items()))


def _worker_run(pipeline: str, payload: dict[str, Any]) -> dict[str, Any]:
    from dicom_node.run.pipeline import PIPELINES, PipelineError

    fn = PIPELINES.get(pipeline)
    if fn is None:
        raise PipelineError(f"unknown pipeline {pipeline!r} (known: {', '.join(PIPELINES)})")
    global _release_timer
    if _release_timer is not None:
        _release_timer.cancel()
        _release_timer = None
    try:
        return fn(payload)
    finally:
        if _ALLOCATOR == "tuned":
            from ai.memory import release

            _release_timer = threading.Timer(RELEASE_AFTER_IDLE_S, release)
            _release_timer.daemon = True
            _release_timer.start()


def _worker_warmup(device: str, options: PipelineOptions) -> str:
    """Load the model and the encoders in the worker before the first job needs them."""
    from dicom_node.run.pipeline import warm_up

    try:
        return warm_up(device, options)
    except Exception as exc:  # noqa: BLE001 - a job will report the real problem
        logging.getLogger(__name__).warning("worker warm-up failed: %s", exc)
        return ""


def _how_workers_ended(executor: cf.Executor | None, exc: BaseException) -> str:
    """How the workers of a broken process pool ended: "exit code 1", "signal SIGKILL" (the
    kernel's OOM killer sends it), or why the pool counted as broken while they lived."""
    import signal

    cause = exc.__cause__  # set when a worker lived but its result could not be read here
    if cause is not None:
        lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip().strip("'")]
        return "pool broken: " + (lines[-1] if lines else type(cause).__name__)
    procs = getattr(executor, "_processes", None) or {}  # CPython's pool keeps them; best effort
    ended = []
    for proc in list(procs.values()):
        for _ in range(40):  # the pool's own thread may be reaping it this very moment
            code = proc.exitcode
            if code is not None:
                break
            time.sleep(0.05)
        if code is None:
            continue
        if code < 0:
            try:
                ended.append(f"signal {signal.Signals(-code).name}")
            except ValueError:
                ended.append(f"signal {-code}")
        else:
            ended.append(f"exit code {code}")
    return ("worker ended by " + ", ".join(ended)) if ended else ""


@dataclass
class _Running:
    job: Job
    future: cf.Future
    started: float
    step: str = "main"  #: "main", or the follow-up step's pipeline name
    first: dict[str, Any] | None = None  #: the main step's result, during a follow-up
    pool: cf.Executor | None = None  #: the worker pool the step runs in (None: the prior thread)


class Runner:
    """Run queued jobs and deliver their results.

    Parameters
    ----------
    cfg : NodeConfig
        ``runner.concurrency``, ``runner.device``, ``data_dir``, outbox paths.
    index : Index
        Gives each input series' spooled instance paths.
    jobs : JobQueue
    outbox : Outbox, optional
        Created from ``cfg.outbox_db`` / ``cfg.outbox_dir`` when omitted.
    options : PipelineOptions or mapping, optional
        Pipeline options; default: those of ``cfg.runner``.
    executor_factory : callable, optional
        Builds the executor (tests may pass a thread pool).
    prior_fetcher : PriorFetcher, optional
        Finds and retrieves the prior study of jobs whose rule has a ``prior:`` block
        (:class:`dicom_node.retrieve.prior.PriorFetcher`); it runs in a thread of this process
        before the job's pipeline, which then gets ``payload["prior"]``.
    """

    def __init__(self, cfg: NodeConfig, index: Index, jobs: JobQueue, outbox: Outbox | None = None, *,
                 options: PipelineOptions | Mapping[str, Any] | None = None,
                 executor_factory: Callable[[int], cf.Executor] | None = None,
                 poll_s: float = 0.5, send_interval_s: float = 1.0,
                 prior_fetcher: PriorFetcher | None = None) -> None:
        self.cfg = cfg
        self.prior_fetcher = prior_fetcher
        self._prior_pool: cf.ThreadPoolExecutor | None = None
        self.index = index
        self.jobs = jobs
        if outbox is None:
            from dicom_node.send.outbox import Outbox

            outbox = Outbox(cfg.outbox_db, cfg.outbox_dir, ae_title=cfg.ae_title,
                            **cfg.outbox.outbox_options())
        self.outbox = outbox
        if options is None:
            options = cfg.runner.pipeline_options()
        self.options = options if isinstance(options, PipelineOptions) else PipelineOptions.from_dict(options)
        self.concurrency = max(1, int(cfg.runner.concurrency))
        self.worker_death_retries = max(0, int(cfg.runner.worker_death_retries))
        self._factory = executor_factory or self._process_pool
        self._warm_up = executor_factory is None  # real worker processes: load the model early
        self._executor: cf.Executor | None = None
        self._running: dict[str, _Running] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.poll_s = poll_s
        self.send_interval_s = send_interval_s

    # -- executor ----------------------------------------------------------------------
    def _process_pool(self, n: int) -> cf.Executor:
        ctx = multiprocessing.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // n)
        log = self.cfg.log
        log_cfg = (log.format, log.level, str(log.file) if log.file else None)
        return cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init,
                                      initargs=(threads, log_cfg, self.cfg.runner.allocator))

    def _ensure_executor(self) -> cf.Executor:
        if self._executor is None:
            self._executor = self._factory(self.concurrency)
            if self._warm_up:
                # Spawn the worker and load the model now, not on the first study.
                self._executor.submit(_worker_warmup, self.cfg.runner.device, self.options)
        return self._executor

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start the job loop and the outbox loop (daemon threads)."""
        self._stop.clear()
        for target, name in ((self._job_loop, "runner-jobs"), (self._send_loop, "runner-send")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("runner started: concurrency %d, device %s", self.concurrency,
                 self.cfg.runner.device)
        try:
            self._ensure_executor()
        except Exception as exc:  # noqa: BLE001 - retried when the first job comes
            log.warning("runner: worker not started yet: %s", exc)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming jobs; running jobs are left to the next start (re-queued then)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._prior_pool is not None:
            self._prior_pool.shutdown(wait=False, cancel_futures=True)
            self._prior_pool = None

    # -- jobs --------------------------------------------------------------------------
    def _job_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reap()
                while len(self._running) < self.concurrency and not self._stop.is_set():
                    job = self.jobs.claim_next()
                    if job is None:
                        break
                    self._submit(job)
            except Exception:
                log.exception("runner loop error")
            self._stop.wait(self.poll_s)

    def payload(self, job: Job) -> dict[str, Any]:
        """The worker's input for ``job``: spooled paths per role and options."""
        inputs: dict[str, list[str]] = {}
        for role, series_uid in (job.inputs or {}).items():
            if not series_uid:
                continue
            inputs[role] = [str(p) for p in self.index.instance_paths(series_uid)]
        alternates = {role: [[str(p) for p in self.index.instance_paths(uid)] for uid in uids]
                      for role, uids in (job.alternates or {}).items()}
        return {
            "job_id": job.id,
            "job_key": job.job_key or job.id,
            "study_uid": job.study_uid,
            "inputs": inputs,
            "alternates": alternates,
            "out_dir": str(results_dir(self.cfg.data_dir, job.id)),
            "device": self.cfg.runner.device,
            "options": self.options.as_dict(),
        }

    def _submit(self, job: Job) -> None:
        dests, errors = self._destinations(job)
        if not dests:  # fail before the model runs; a job's destinations never change
            self._fail(job, "no usable destination: "
                       + ("; ".join(errors) or "the rule names none"))
            return
        for msg in errors:
            log.warning("job %s: destination skipped: %s", job.id, msg)
        log.info("job %s: start (study %s, rule %s, pipeline %s, attempt %d)", job.id,
                 job.study_uid, job.rule, job.pipeline, job.attempts)
        if self.prior_fetcher is not None and self.prior_fetcher.settings(job) is not None:
            # The prior is found and retrieved here, in a thread: DICOM networking stays in
            # the node process; the worker then compares.
            if self._prior_pool is None:
                self._prior_pool = cf.ThreadPoolExecutor(max_workers=self.concurrency,
                                                         thread_name_prefix="prior")
            fut = self._prior_pool.submit(self.prior_fetcher.fetch, job)
            self._running[job.id] = _Running(job, fut, time.time(), step="prior")
            return
        self._submit_main(job, time.time(), None)

    def _submit_main(self, job: Job, started: float, prior: dict[str, Any] | None) -> None:
        payload = self.payload(job)
        if prior is not None:
            payload["prior"] = prior
        try:
            pool = self._ensure_executor()
            fut = pool.submit(_worker_run, job.pipeline or "ms-lesions", payload)
        except Exception as exc:  # noqa: BLE001 - e.g. a broken pool
            self._executor = None
            self._fail(job, f"could not start the job: {exc}")
            return
        self._running[job.id] = _Running(job, fut, started, pool=pool)

    def _reap(self) -> None:
        for job_id, run in list(self._running.items()):
            if not run.future.done():
                continue
            del self._running[job_id]
            exc = run.future.exception()
            if run.step == "prior":  # fetch() answers a reason rather than raising
                prior = (run.future.result() if exc is None
                         else {"reason": f"prior search failed: {exc}"})
                self._submit_main(run.job, run.started, prior)
                continue
            if exc is None:
                self._step_done(run, run.future.result())
                continue
            if isinstance(exc, BrokenProcessPool):
                # the pool this job ran in: another job of it may have been reaped first, and a
                # fresh pool may already run the next jobs (it stays)
                how = _how_workers_ended(run.pool, exc)
                reason = ("worker process died while running the job (killed, out of memory "
                          f"or a device fault{'; ' + how if how else ''}); a new worker is started")
                if self._executor is run.pool:
                    self._executor = None
                if run.step == "main" and run.job.attempts <= self.worker_death_retries:
                    log.error("job %s: %s; the job runs again (attempt %d of at most %d)", job_id,
                              reason, run.job.attempts + 1, self.worker_death_retries + 1)
                    self.jobs.requeue(job_id, f"{reason}; runs again")
                    continue
            else:
                reason = f"{type(exc).__name__}: {exc}"
            if run.step == "main":
                self._fail(run.job, reason)
            else:  # SEG and SR are delivered; only the follow-up (overlay) is missing
                log.error("job %s: %s failed: %s", job_id, run.step, reason)
                self._complete(run.job, run.first or {}, time.time() - run.started,
                               note=f"{run.step} failed: {reason}")

    def _step_done(self, run: _Running, result: dict[str, Any]) -> None:
        job = run.job
        queued = {f["path"] for f in (run.first or {}).get("files", [])}
        self._deliver(job, [f for f in result["files"] if f["path"] not in queued])
        followup = result.get("followup")
        if run.step == "main" and followup:
            try:
                pool = self._ensure_executor()
                fut = pool.submit(_worker_run, followup, self.payload(job))
            except Exception as exc:  # noqa: BLE001
                self._executor = None
                self._complete(job, result, time.time() - run.started,
                               note=f"{followup} not started: {exc}")
                return
            self._running[job.id] = _Running(job, fut, run.started, step=followup, pool=pool,
                                             first=result)
            return
        self._complete(job, result, time.time() - run.started)

    def _fail(self, job: Job, reason: str) -> None:
        log.error("job %s: failed: %s", job.id, reason)
        self.jobs.mark_failed(job.id, reason)
        self._metrics_jobs()

    def _destinations(self, job: Job) -> tuple[list[Target], list[str]]:
        """The job's usable targets, and why the others are not."""
        targets = [Target.from_dict(d) for d in job.destinations or []]
        return ([t for t in targets if t.destination is not None],
                [t.error or "no destination" for t in targets if t.destination is None])

    def _deliver(self, job: Job, files: list[dict[str, Any]]) -> None:
        """Queue result files for every usable destination (idempotent per instance)."""
        from pydicom import dcmread

        targets, _ = self._destinations(job)
        for f in files:
            # The pipeline names each file's UIDs: the file is queued as written. A result without
            # them (written by an older version, kept across the upgrade) is read once here.
            known = all(f.get(k) for k in ("sop_instance_uid", "sop_class_uid", "transfer_syntax_uid"))
            ds = None if known else dcmread(f["path"])
            for t in targets:
                if (f.get("overlay") and not t.overlay) or t.destination is None:
                    continue
                if ds is None:
                    self.outbox.enqueue_file(job.id, Path(f["path"]), t.destination,
                                             sop_instance_uid=f["sop_instance_uid"],
                                             sop_class_uid=f["sop_class_uid"],
                                             transfer_syntax_uid=f["transfer_syntax_uid"])
                else:
                    self.outbox.enqueue(job.id, ds, t.destination)

    def _complete(self, job: Job, result: dict[str, Any], seconds: float,
                  note: str | None = None) -> None:
        dests, _ = self._destinations(job)
        s = result.get("summary") or {}
        reason = (f"{s.get('lesion_count', 0)} lesion(s), "
                  f"{float(s.get('total_volume_mm3', 0.0)) / 1000:.2f} ml; "
                  f"{len(result.get('files', []))} object(s) -> "
                  + ", ".join(t.destination.ae_title for t in dests if t.destination))
        for n in result.get("notes") or []:
            reason += f"; {n}"
        if note:
            reason += f"; {note}"
        self.jobs.mark_done(job.id, reason)
        log.info("job %s: done in %.1f s: %s", job.id, seconds, reason)
        self._metrics(result.get("timings_s") or {})

    # -- outbox ------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.outbox.probe_destinations()
                self.outbox.send_due()
            except Exception:
                log.exception("outbox loop error")
            self._stop.wait(self.send_interval_s)

    # -- metrics -----------------------------------------------------------------------
    def _metrics(self, timings: dict[str, float]) -> None:
        try:
            from dicom_node.ops import metrics

            for stage, secs in timings.items():
                metrics.observe_stage(stage, float(secs))
        except Exception:  # noqa: BLE001 - metrics never break a job
            pass
        self._metrics_jobs()

    def _metrics_jobs(self) -> None:
        try:
            from dicom_node.ops import metrics

            counts: dict[str, int] = {}
            for j in self.jobs.list():
                counts[j.state] = counts.get(j.state, 0) + 1
            metrics.set_jobs_by_state(counts)
        except Exception:  # noqa: BLE001
            pass


def load_result(data_dir: Path, job_id: str) -> dict[str, Any] | None:
    """The ``result.json`` a finished job wrote (None when absent)."""
    p = results_dir(data_dir, job_id) / "result.json"
    return json.loads(p.read_text()) if p.exists() else None
