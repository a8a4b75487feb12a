"""The daemon: starts the pipeline's stages, runs until stopped, and stops them in flow order.

The stages are built by `pipeline.factory.build_pipeline`; each follows `ops.lifecycle` (start, stop,
join; one thread and one stop signal each). Start-up: the metrics server (not ready yet), the store
writer (it replays a spool left by a stopped daemon), the evidence writer and retention, the models
warmed up, then analysis, embedder, the rules watcher, and the cameras last. Shutdown drains in flow
order: cameras stop, queued frames are embedded, windows classified and every open episode closed
(by the analysis thread, the rule engine's only caller), notifications handed to their outboxes,
evidence written, the store flushed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from monitor.ops.logs import kv
from monitor.pipeline.factory import Pipeline, build_pipeline
from monitor.pipeline.sources import CameraSource
from monitor.record.db import shown_url
from monitor.site.check import CheckedSite

log = logging.getLogger(__name__)
SHUTDOWN_SECONDS = 8.0  # SIGTERM to exit must stay under 10 s


@dataclass
class RunSummary:
    metrics_url: str
    database: str
    violations: Counter[str] = field(default_factory=Counter)  # rule -> episodes opened this run
    unflushed: int = 0


class Daemon:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.summary = RunSummary("", shown_url(pipeline.site.database_url), pipeline.sinks.opened)

    @classmethod
    def for_site(cls, checked: CheckedSite, shard: tuple[int, int] | None = None) -> Daemon:
        """The daemon `har-monitor run` runs: every stage built from the checked site."""
        return cls(build_pipeline(checked, shard))

    @property
    def sources(self) -> list[CameraSource]:
        return self.pipeline.sources

    def request_reload(self) -> None:
        """Ask for a rules reload (safe from a signal handler)."""
        self.pipeline.rules_watcher.request()

    def health(self) -> dict:
        """Liveness: no stage's thread has died. Readiness: also at least one camera delivers frames (the models
        are loaded before the server is asked, the store is reachable or spooling) and the box is not over
        capacity (no camera dropped a frame lately). `not_ready` says why not."""
        p = self.pipeline
        stages = {"embedder": p.embedder, "analysis": p.analysis, "rules-watch": p.rules_watcher,
                  **({"evidence": p.evidence} if p.evidence else {}),
                  **{w.name: w for w in (p.notifier.workers if p.notifier else [])},
                  **({"evidence-retention": p.retention} if p.retention else {}),
                  **{s.name: s for s in p.sources}}
        healthy = {name: stage.healthy for name, stage in stages.items()}
        store = p.writer.thread.ident is None or p.writer.thread.is_alive()
        live = all(healthy.values()) and store
        cameras_up = sum(s.is_up for s in p.sources)
        over = p.queues.dropped_within(p.site.config.inference.over_capacity_seconds)
        reasons = [why for why, bad in (("stage_down", not live), ("no_camera_up", cameras_up == 0),
                                        ("over_capacity", over)) if bad]
        return {"live": live, "ready": not reasons, "not_ready": reasons, "over_capacity": over,
                "cameras_up": cameras_up, "cameras": len(p.sources), "spooled": len(p.writer.spool),
                "threads": {**healthy, "store": store}}

    def run(self, stop: threading.Event, duration: float | None = None) -> RunSummary:
        p, cfg = self.pipeline, self.pipeline.site.config
        shard = f"{p.shard[0]}/{p.shard[1]}" if p.shard else None
        port = p.metrics.serve(cfg.metrics.host, cfg.metrics.port, self.health, shard)
        shown_host = "127.0.0.1" if cfg.metrics.host in ("0.0.0.0", "") else cfg.metrics.host  # nosec B104  # compares, binds nothing
        self.summary.metrics_url = f"http://{shown_host}:{port}/metrics"
        p.writer.close_orphans([c.id for c in p.cameras] if p.shard else None)  # after the spool's replay, before new events
        shadow = p.shadow
        p.writer.put_run(str(p.bundle.path.resolve()), shadow.hash if shadow else None,
                         str(shadow.path.resolve()) if shadow else None)  # a change of model is audited
        p.writer.put_ruleset(p.analysis.engine.ruleset.hash, p.analysis.engine.ruleset.text)  # the text in force, for QA
        p.writer.thread.start()
        for stage in (p.evidence, p.retention, *(p.notifier.workers if p.notifier else [])):
            if stage:
                stage.start()
        p.embedder.warm_up()
        p.analysis.warm_up(p.backbone.dim)
        for worker in (p.analysis, p.embedder, p.rules_watcher, *p.sources):
            worker.start()
        log.info(kv(event="daemon_started", site=cfg.site, cameras=len(p.sources), model=p.bundle.hash,
                    **({"shadow_model": shadow.hash} if shadow else {}),
                    rules=p.build_info["rules"], metrics=self.summary.metrics_url, database=self.summary.database))
        wait_for_stop(stop, duration)
        self._shutdown()
        return self.summary

    def _shutdown(self) -> None:
        p = self.pipeline
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        left = lambda: max(0.1, deadline - time.monotonic())
        log.info(kv(event="daemon_stopping", queued_frames=len(p.queues)))
        for source in p.sources:
            source.stop()
        for source in p.sources:
            source.join(min(1.0, left()))
        p.rules_watcher.stop()
        p.embedder.stop()
        p.embedder.join(left() * 0.4)
        p.analysis.stop()  # classifies what is queued, then closes every open episode, on its own thread
        if not p.analysis.join(left() * 0.4):
            log.warning(kv(event="analysis_not_finished"))
        if p.retention:
            p.retention.stop()
        for outbox in p.notifier.workers if p.notifier else []:
            outbox.stop()  # each tries a little longer; what is left waits in the outbox for the next start
        if p.evidence and not p.evidence.close(min(3.0, left() * 0.5)):
            log.warning(kv(event="evidence_not_finished"))
        for outbox in p.notifier.workers if p.notifier else []:
            outbox.join(min(3.0, left() * 0.3))
        if not p.writer.close(left()):
            self.summary.unflushed = p.writer.pending()
            log.warning(kv(event="store_not_flushed", spooled=self.summary.unflushed, spool=str(p.writer.spool.path)))
        p.metrics.close()
        log.info(kv(event="daemon_stopped", violations=sum(self.summary.violations.values())))


def wait_for_stop(stop: threading.Event, duration: float | None = None) -> None:
    """Wait until `stop` is set or `duration` has passed, waking every second.

    A signal that the kernel hands to another thread runs its Python handler only when the main thread
    next runs Python code: a wait without a timeout would never see that SIGTERM (seen under heavy load).
    """
    end = time.monotonic() + duration if duration is not None else float("inf")
    while not stop.wait(min(1.0, max(0.0, end - time.monotonic()))):
        if time.monotonic() >= end:
            return
