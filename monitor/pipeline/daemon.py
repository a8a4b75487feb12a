"""The daemon: wires the stages of the data flow and runs them until stopped.

CameraSource (thread per camera) -> FrameQueues -> Embedder (one thread) -> embeddings queue
-> analysis thread (WindowBuffers -> Classifier -> RuleEngine) -> StoreWriter (one thread)
and Prometheus. Shutdown drains in flow order: sources stop, queued frames are embedded,
windows classified, open episodes closed, and the store flushed.

Rules reload on SIGHUP (`request_reload`) or when a rule file's content changes (a watcher thread
polls them): the new set is validated off the analysis thread, and an invalid one is refused,
logged and counted while the old one keeps running. A valid one is handed to the analysis thread
(the only caller of the engine), which swaps it in between predictions: open episodes of
unchanged rules carry on, those of removed or changed rules are closed.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from monitor.errors import UserError
from monitor.evidence.recorder import EvidenceRecorder
from monitor.evidence.retention import prune
from monitor.messages import Embedding, ViolationEvent
from monitor.ops.logs import kv
from monitor.ops.metrics import Metrics, describe_build
from monitor.pipeline.classifier import Classifier
from monitor.pipeline.embedder import Embedder
from monitor.pipeline.framequeue import FrameQueues
from monitor.pipeline.sources import CameraSource, SourceHooks
from monitor.pipeline.windows import WindowBuffers
from monitor.record.db import SchemaOutdated, check_schema, shown_url
from monitor.record.writer import Provenance, StoreWriter
from monitor.rules import RuleEngine, RuleSet, load_rules
from monitor.site.check import CheckedSite, source_settings
from monitor.site.config import shard_of

log = logging.getLogger(__name__)
SHUTDOWN_SECONDS = 8.0  # SIGTERM to exit must stay under 10 s
RULES_POLL_SECONDS = 2.0


@dataclass
class RunSummary:
    metrics_url: str
    database: str
    violations: Counter = field(default_factory=Counter)  # rule -> episodes opened this run
    unflushed: int = 0


class Daemon:
    def __init__(self, checked: CheckedSite, shard: tuple[int, int] | None = None):
        self.site, self.bundle, self.ruleset = checked.site, checked.bundle, checked.rules
        cfg = self.site.config
        self.shard = shard
        self.cameras = [c for c in self.site.cameras if shard is None or shard_of(c.id, shard[1]) == shard[0]]
        if not self.cameras:
            log.warning(kv(event="no_cameras_in_shard", shard=f"{shard[0]}/{shard[1]}" if shard else "-"))
        self.metrics = Metrics()
        self.backbone = self.bundle.build_backbone()
        window = self.bundle.manifest.window
        self.classifier = Classifier(self.bundle.head_file, self.bundle.labels, window.frames, self.backbone.dim)
        self.engine = RuleEngine(self.ruleset, {c.id: c.zone for c in self.cameras})
        names = [c.id for c in self.cameras]
        self.queues = FrameQueues(names, {c.id: c.queue_size for c in self.cameras},
                                  on_drop=lambda cam: self.metrics.frames_dropped.labels(cam).inc())
        self._sources_stop = threading.Event()
        self._embedder_done = threading.Event()
        self._embeddings: queue.Queue[list[Embedding]] = queue.Queue(maxsize=256)
        self.embedder = Embedder(self.backbone, self.queues, cfg.inference.max_batch, cfg.inference.max_wait_ms,
                                 self._embeddings.put, self._sources_stop, self._observe_batch)
        self.evidence = self._make_evidence()
        self.sources = [CameraSource(source_settings(self.site, c, self.bundle, self.backbone.input_size),
                                     self._hooks(), self._sources_stop) for c in self.cameras]
        max_gap = 3.0 * max((1.0 / s.s.sample_fps for s in self.sources), default=1.0) + 1.0
        self.windows = WindowBuffers(window.frames, window.stride, max_gap)
        prov = Provenance(cfg.site, self.bundle.hash, self.ruleset.hash, self.site.hash)
        spool = self.site.resolve(cfg.storage.spool)
        if shard is not None:  # shards may share a volume: each keeps its own spool
            spool = spool.with_name(f"{spool.stem}.shard{shard[0]}of{shard[1]}{spool.suffix}")
        self.writer = StoreWriter(self.site.database_url, prov, spool,
                                  stored=self._stored, failed=self.metrics.store_errors.inc,
                                  spooled=self.metrics.spool_depth.set,
                                  anchors=self.site.anchor_log(need_key=True), anchored=self.metrics.anchored,
                                  anchor_failed=self.metrics.anchor_errors.inc, evidence_expected=cfg.evidence.enabled)
        self._check_schema()
        self.summary = RunSummary("", shown_url(self.site.database_url))
        self._analysis = threading.Thread(target=self._analyze, name="analysis", daemon=True)
        self._reload_requested = threading.Event()
        self._rules_lock = threading.Lock()
        self._new_rules: RuleSet | None = None  # validated, waiting for the analysis thread
        self._rule_files_seen = self._rule_files_digest()
        self._watcher = threading.Thread(target=self._watch_rules, name="rules-watch", daemon=True)
        self.metrics.init_labels(names, self.bundle.labels, self.ruleset.severities())
        self._build = dict(site=cfg.site, model=self.bundle.hash, rules=self.ruleset.hash,
                           config=self.site.hash[:16], host=socket.gethostname())
        self._describe_rules()

    def _check_schema(self) -> None:
        """An outdated schema is the user's to fix (exit 2); an unreachable database is an outage (spool)."""
        try:
            check_schema(self.writer.engine, f"har-monitor db upgrade --cameras {self.site.path}")
        except SchemaOutdated as exc:
            raise UserError(f"{self.site.path}: storage.url: {exc}") from None
        except SQLAlchemyError as exc:
            log.warning(kv(event="store_unreachable_at_start", database=shown_url(self.site.database_url),
                           error=type(getattr(exc, "orig", None) or exc).__name__, spool=len(self.writer.spool)))

    def _hooks(self) -> SourceHooks:
        m = self.metrics

        def decoded(cam: str, ts: float) -> None:
            m.frames_decoded.labels(cam).inc()
            m.last_frame.labels(cam).set(ts)

        def frame(f) -> None:
            m.frames_sampled.labels(f.camera).inc()
            self.queues.put(f)

        return SourceHooks(
            frame=frame, decoded=decoded,
            decode_error=lambda cam: m.decode_errors.labels(cam).inc(),
            up=lambda cam, up: m.camera_up.labels(cam).set(1 if up else 0),
            reconnect=lambda cam: m.reconnects.labels(cam).inc(),
            stall=lambda cam: m.stalls.labels(cam).inc(),
            evidence=self.evidence.add_frame if self.evidence else (lambda cam, ts, rgb: None))

    def _observe_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.inference_seconds.observe(seconds)

    def _stored(self, event: ViolationEvent) -> None:
        self.metrics.store_writes.inc()
        self.metrics.store_pending.set(self.writer.pending())
        if event.kind == "opened":
            self.metrics.latency.observe(time.monotonic() - event.mono)

    def _emit(self, events: list[ViolationEvent]) -> None:
        for event in events:
            if event.kind == "opened":
                self.metrics.violations.labels(event.camera, event.rule, event.severity).inc()
                self.summary.violations[event.rule] += 1
                if self.evidence:  # the wall time of the frame that opened it
                    self.evidence.episode_opened(event.episode_id, event.camera,
                                                 time.time() - (time.monotonic() - event.mono))
            if event.kind != "updated":
                log.info(kv(event=f"violation_{event.kind}", rule=event.rule, camera=event.camera,
                            severity=event.severity, action=event.action, confidence=round(event.confidence, 3),
                            episode=event.episode_id))
            self.writer.put(event)
        self.metrics.open_episodes.set(self.engine.open_count())
        self.metrics.store_pending.set(self.writer.pending())

    def _analyze(self) -> None:
        while True:
            self._swap_rules()
            try:
                batch = self._embeddings.get(timeout=0.2)
            except queue.Empty:
                if self._embedder_done.is_set():
                    return
                continue
            for e in batch:
                self.metrics.embeddings.labels(e.camera).inc()
            windows = [w for w in map(self.windows.push, batch) if w is not None]
            if not windows:
                continue
            start = time.perf_counter()
            predictions = self.classifier.predict(windows)
            self.metrics.classifier_seconds.observe(time.perf_counter() - start)
            for p in predictions:
                self.metrics.predictions.labels(p.camera, p.top[0]).inc()
                self._emit(self.engine.observe(p))

    def _make_evidence(self) -> EvidenceRecorder | None:
        cfg = self.site.config.evidence
        if not cfg.enabled:
            return None
        root = self.site.resolve(self.site.config.storage.evidence_dir)
        try:
            return EvidenceRecorder(root, cfg.pre_roll_seconds, cfg.post_roll_seconds, cfg.fps, cfg.width, cfg.blur_faces,
                                    on_written=lambda ev: self.writer.put_evidence(ev.episode_id, ev.as_record(root)),
                                    on_error=lambda episode, exc: self.writer.put_evidence_failed(episode, str(exc)))
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.site.path}: evidence: {exc}") from None

    def _prune_evidence(self) -> None:
        """Hourly: delete evidence files past their retention; each deletion is an audit event."""
        root = self.evidence.directory
        days = self.site.config.evidence.retention_days
        while not self._sources_stop.is_set():
            for path in prune(root, days):
                self.writer.put_pruned(str(path.relative_to(root)), days)
            self._sources_stop.wait(3600)

    def health(self) -> dict:
        """Liveness: the pipeline's threads run. Readiness: also the store is reachable or spooling,
        and at least one camera delivers frames (the model is loaded before the server starts)."""
        threads = {"embedder": self.embedder.thread, "analysis": self._analysis, "store": self.writer.thread}
        live = not any(t.ident is not None and not t.is_alive() for t in threads.values())  # none has died
        cameras_up = sum(s.is_up for s in self.sources)
        return {"live": live, "ready": live and cameras_up > 0, "cameras_up": cameras_up,
                "cameras": len(self.sources), "spooled": len(self.writer.spool),
                "threads": {name: t.is_alive() for name, t in threads.items()}}

    def request_reload(self) -> None:
        """Ask for a rules reload (safe from a signal handler): the watcher thread does it."""
        self._reload_requested.set()

    def reload_rules(self) -> bool:
        """Validate the rule files; hand a valid set to the analysis thread, refuse an invalid one."""
        try:
            ruleset = load_rules(self.site.rule_files, self.bundle.labels, self.bundle.manifest.groups)
        except UserError as err:
            self.metrics.rules_reloads.labels("error").inc()
            log.error(kv(event="rules_reload_refused", running=self.ruleset.hash, problems="; ".join(err.problems)))
            return False
        with self._rules_lock:
            self._new_rules = ruleset
        self.metrics.rules_reloads.labels("ok").inc()
        log.info(kv(event="rules_reload_accepted", rules=ruleset.hash, count=len(ruleset.rules)))
        return True

    def _rule_files_digest(self) -> str:
        digest = hashlib.sha256()
        for path in self.site.rule_files:
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"\0missing")
        return digest.hexdigest()

    def _watch_rules(self) -> None:
        while not self._sources_stop.is_set():
            requested = self._reload_requested.wait(RULES_POLL_SECONDS)
            self._reload_requested.clear()
            seen = self._rule_files_digest()
            if requested or seen != self._rule_files_seen:
                self._rule_files_seen = seen
                self.reload_rules()

    def _swap_rules(self) -> None:
        """In the analysis thread, between predictions: put a reloaded rule set to work."""
        with self._rules_lock:
            ruleset, self._new_rules = self._new_rules, None
        if ruleset is None:
            return
        previous = self.ruleset.hash
        self._emit(self.engine.replace(ruleset, time.time(), time.monotonic()))
        self.ruleset = ruleset
        self.metrics.init_rules([c.id for c in self.cameras], ruleset.severities())
        self._build["rules"] = ruleset.hash
        self._describe_rules()
        log.info(kv(event="rules_reloaded", rules=ruleset.hash, previous=previous, count=len(ruleset.rules),
                    open_episodes=self.engine.open_count()))

    def _describe_rules(self) -> None:
        describe_build(self.metrics, **self._build)
        self.metrics.rule_info.set([{"rule": r.id, "severity": r.severity, "kind": r.kind,
                                     **{f"label_{k}": v for k, v in r.labels.items()}} for r in self.ruleset.rules])

    def run(self, stop: threading.Event, duration: float | None = None) -> RunSummary:
        cfg = self.site.config
        shard = f"{self.shard[0]}/{self.shard[1]}" if self.shard else None
        port = self.metrics.serve(cfg.metrics.host, cfg.metrics.port, self.health, shard)
        shown_host = "127.0.0.1" if cfg.metrics.host in ("0.0.0.0", "") else cfg.metrics.host
        self.summary.metrics_url = f"http://{shown_host}:{port}/metrics"
        self.writer.close_orphans([c.id for c in self.cameras] if self.shard else None)
        self.writer.thread.start()
        if self.evidence and self.site.config.evidence.retention_days:
            threading.Thread(target=self._prune_evidence, name="evidence-retention", daemon=True).start()
        self.embedder.warm_up()
        self.classifier.probabilities(np.zeros((1, self.windows.frames, self.backbone.dim), np.float32))
        self.embedder.thread.start()
        self._analysis.start()
        self._watcher.start()
        for source in self.sources:
            source.start()
        log.info(kv(event="daemon_started", site=cfg.site, cameras=len(self.sources), model=self.bundle.hash,
                    rules=self.ruleset.hash, metrics=self.summary.metrics_url, database=self.summary.database))
        stop.wait(duration)
        self._shutdown()
        return self.summary

    def _shutdown(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        left = lambda: max(0.1, deadline - time.monotonic())
        log.info(kv(event="daemon_stopping", queued_frames=len(self.queues)))
        self._sources_stop.set()
        for source in self.sources:
            source.join(min(1.0, left()))
        self.embedder.thread.join(left() * 0.4)
        self._embedder_done.set()
        self._analysis.join(left() * 0.3)
        self._emit(self.engine.close_all(time.time(), time.monotonic()))
        if self.evidence and not self.evidence.close(min(3.0, left() * 0.5)):
            log.warning(kv(event="evidence_not_finished"))
        if not self.writer.close(left()):
            self.summary.unflushed = self.writer.pending()
            log.warning(kv(event="store_not_flushed", spooled=self.summary.unflushed, spool=str(self.writer.spool.path)))
        self.metrics.close()
        log.info(kv(event="daemon_stopped", violations=sum(self.summary.violations.values())))
