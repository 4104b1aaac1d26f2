"""The ``serve`` process: spool + index + Storage SCP + completion + routing, wired together.

Start-up order (restart safety): remove temp files left by a crash, re-index spooled files the
index lacks, put jobs a crash left ``running`` back to ``queued``, start the index writer, start
the completion scheduler (re-arming every ``receiving`` series and pending study), then listen.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

from pydicom.dataset import Dataset

from dicom_node.config import ConfigError, NodeConfig
from dicom_node.receive.scp import StorageSCP
from dicom_node.receive.spool import Spool
from dicom_node.route.classify import SeriesInfo, classify_series
from dicom_node.route.completion import CompletionManager
from dicom_node.route.rules import RuleSet, load_rules
from dicom_node.send.destinations import make_destination_resolver
from dicom_node.store.index import Index
from dicom_node.store.jobs import JobQueue
from dicom_node.store.priors import PriorRegistry
from dicom_node.store.writer import IndexWriter

__all__ = ["Node", "load_routing"]

log = logging.getLogger(__name__)


def load_routing(cfg: NodeConfig) -> tuple[RuleSet, Callable[[Sequence[Dataset]], SeriesInfo]]:
    """Return ``(rules, classify_series)``.

    Raises
    ------
    ConfigError
        The rules file is missing or invalid, or names a pipeline or a peer that does not exist
        (each problem as ``file:line: field: message``).
    """
    if not Path(cfg.routing_file).is_file():
        raise ConfigError(f"{cfg.source}: routing_file: {cfg.routing_file} does not exist")
    try:
        rules = load_rules(cfg.routing_file)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(str(exc)) from exc
    unknown = rules.unknown_peers({p.name for p in cfg.peers})  # the two files must agree
    if unknown:
        raise ConfigError("\n".join(unknown))
    return rules, classify_series


class Node:
    """One running node (used by ``dicom-node serve`` and by in-process tests).

    Parameters
    ----------
    cfg : NodeConfig
    rules, classify : optional
        Override the routing loaded from ``cfg.routing_file`` (tests).
    """

    def __init__(self, cfg: NodeConfig, rules: Any = "load", classify: Any = "load") -> None:
        self.cfg = cfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        if rules == "load" or classify == "load":
            r, c = load_routing(cfg)
            rules = r if rules == "load" else rules
            classify = c if classify == "load" else classify
        self.rules = rules
        self.spool = Spool(cfg.spool_dir, fsync_dir=cfg.ingest.fsync_dir,
                           fsync=cfg.ingest.fsync)
        self.index = Index(cfg.index_path)
        self.jobs = JobQueue(self.index)
        self.priors = PriorRegistry(self.index)
        self.completion = CompletionManager(
            self.index, self.jobs, cfg.completion.quiet_seconds, early=cfg.completion.early,
            rules=rules, classify=classify,
            resolve_destinations=make_destination_resolver(cfg),
            on_series_complete=self._series_done,
            release_grace_seconds=cfg.completion.release_grace_seconds,
            is_prior=self.priors.is_prior,
        )
        self.writer = IndexWriter(self.index, on_batch=self.completion.on_batch)
        self.scp = StorageSCP(cfg, self.spool, self.writer)
        self.scp.on_release = self.completion.on_association_released
        self.runner: Any = None
        if cfg.runner.enabled:
            from dicom_node.retrieve.prior import PriorFetcher
            from dicom_node.run.runner import Runner

            fetcher = (PriorFetcher(cfg, self.index, self.jobs, rules, classify, self.priors,
                                    store=self.scp.handle_store)
                       if rules is not None and any(getattr(r, "prior", None)
                                                    for r in getattr(rules, "rules", [])) else None)
            self.runner = Runner(cfg, self.index, self.jobs, prior_fetcher=fetcher)
        self._stop = threading.Event()
        self._http: Any = None

    def _series_done(self, row: dict) -> None:
        try:
            from dicom_node.ops import metrics

            metrics.SERIES_COMPLETED.inc()
            metrics.observe_stage("completion_wait", float(row.get("complete_delay_s") or 0))
        except Exception:  # noqa: BLE001
            pass

    def start(self) -> None:
        """Recover, then start writer, completion and the SCP (non-blocking)."""
        renamed, removed = self.spool.recover_temp_files()
        if renamed or removed:
            log.info("spool: crash recovery: %d complete temporary file(s) renamed, %d "
                     "incomplete removed", renamed, removed)
        self.index.reconcile(self.spool)
        n = self.jobs.requeue_running()
        if n:
            log.info("jobs: %d job(s) left running by a crash re-queued", n)
        if not self.cfg.allow_any_peer and not self.cfg.allowed_peers:
            log.warning("allowed_peers is empty and allow_any_peer is false: every association "
                        "will be rejected")
        self.writer.start()
        self.completion.start()
        if self.runner is not None:
            self.runner.start()
        self.scp.start()
        if self.cfg.http.port:
            try:
                from dicom_node.ops import endpoint, metrics

                self._http = endpoint.start_http(
                    self.cfg.http.port, self.cfg.http.host, spool_dir=self.cfg.data_dir,
                    min_free_bytes=int(self.cfg.min_free_disk_mb * 2**20),
                    jobs_source=self._job_counts,
                )
                if self.runner is not None:
                    ob = self.runner.outbox
                    metrics.set_outbox_source(lambda: {
                        "dead": ob.counts().get("dead", 0),
                        "oldest_undelivered_s": ob.oldest_undelivered_age()})
            except Exception as exc:  # noqa: BLE001
                log.warning("metrics endpoint not started: %s", exc)

    def _job_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for j in self.jobs.list():
            counts[j.state] = counts.get(j.state, 0) + 1
        return counts

    def stop(self) -> None:
        """Stop listening, flush the index writer, stop timers."""
        self.scp.stop()
        if self.runner is not None:
            self.runner.stop()
        self.writer.stop()
        self.completion.stop()
        if self._http is not None:
            try:
                self._http.stop()
            except Exception:  # noqa: BLE001
                pass
        log.info("node stopped")

    def run_forever(self) -> None:
        """Start and block until SIGTERM/SIGINT."""
        def _sig(signum: int, _frame: Any) -> None:
            log.info("signal %d received: stopping", signum)
            self._stop.set()

        signal.signal(signal.SIGTERM, _sig)
        signal.signal(signal.SIGINT, _sig)
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()
