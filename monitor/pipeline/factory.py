"""Build the stages of the live pipeline from a checked site; the daemon only starts and stops them.

Every callback between stages is connected here, so each stage stays testable alone with plain
inputs, and a benchmark or test can swap one piece (e.g. `backbone=`) without reaching into the daemon.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from monitor.errors import UserError
from monitor.evidence.recorder import EvidenceRecorder
from monitor.evidence.retention import RetentionSweeper
from monitor.messages import NOBODY, SampledFrame, ViolationEvent
from monitor.model.backbones import Backbone
from monitor.model.bundle import Bundle
from monitor.model.engines import build_engine
from monitor.model.persons import PersonCheck, PersonDetector
from monitor.notify.notifier import Notifier, build_notifier
from monitor.ops.logs import kv
from monitor.ops.metrics import Metrics, describe_build
from monitor.pipeline.analysis import Analysis
from monitor.pipeline.classifier import Classifier
from monitor.pipeline.embedder import Embedder
from monitor.pipeline.framequeue import FrameQueues
from monitor.pipeline.motion import MotionSettings
from monitor.pipeline.reload import RulesWatcher
from monitor.pipeline.shadow import ShadowModel
from monitor.pipeline.sinks import ViolationSinks
from monitor.pipeline.sources import CameraSource, SourceHooks, SourceSettings
from monitor.pipeline.windows import WindowBuffers
from monitor.pipeline.zones import PersonGate, ZoneSplitter
from monitor.record.db import SchemaOutdated, check_schema, shown_url
from monitor.record.writer import Provenance, StoreWriter
from monitor.rules import RuleEngine, RuleSet, load_rules
from monitor.site.check import CheckedSite
from monitor.site.config import CameraConfig, Site, shard_of

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """The built stages, in flow order, and what the daemon reports about them."""

    site: Site
    bundle: Bundle
    cameras: list[CameraConfig]
    shard: tuple[int, int] | None
    metrics: Metrics
    backbone: Backbone
    sources: list[CameraSource]
    queues: FrameQueues
    embedder: Embedder
    analysis: Analysis
    sinks: ViolationSinks
    writer: StoreWriter
    evidence: EvidenceRecorder | None
    retention: RetentionSweeper | None
    rules_watcher: RulesWatcher
    build_info: dict[str, str] = field(default_factory=dict)
    notifier: Notifier | None = None
    shadow: Bundle | None = None  # shadow_model's bundle, when one runs


def source_settings(site: Site, cam: CameraConfig, bundle: Bundle, size: tuple[int, int]) -> SourceSettings:
    rc = site.config.reconnect
    return SourceSettings(
        camera=cam.id, location=site.camera_location(cam), is_network=cam.is_network, size=size,
        sample_fps=cam.sample_fps or bundle.manifest.window.sample_fps, loop=cam.loop, realtime=cam.realtime,
        stall_seconds=cam.stall_seconds, open_timeout=cam.open_timeout_seconds,
        decode_threads=cam.decoder_threads, skip_frames=cam.skip_frames, skip_loop_filter=cam.skip_loop_filter,
        backoff_initial=rc.initial_seconds, backoff_max=rc.max_seconds,
        evidence_fps=site.config.evidence.fps if site.config.evidence.enabled else 0.0,
        evidence_width=site.config.evidence.width)


def build_pipeline(checked: CheckedSite, shard: tuple[int, int] | None = None, *, backbone: Backbone | None = None,
                   on_stored: Callable[[ViolationEvent, float], None] | None = None) -> Pipeline:
    """All the stages of `checked`'s site (this shard's cameras), connected, none started.

    `backbone`: use this one instead of the bundle's (benchmarks time it). `on_stored(event, seconds)`:
    also told of every event written to the record, with its frame-to-stored latency.
    """
    site, bundle = checked.site, checked.bundle
    cfg = site.config
    cameras = [c for c in site.cameras if shard is None or shard_of(c.id, shard[1]) == shard[0]]
    if not cameras:
        log.warning(kv(event="no_cameras_in_shard", shard=f"{shard[0]}/{shard[1]}" if shard else "-"))
    names = [c.id for c in cameras]
    metrics = Metrics()
    backbone = backbone or build_engine(bundle, checked.engine)
    window = bundle.manifest.window
    writer = _writer(checked, shard, metrics, on_stored)
    evidence = _evidence(site, writer, cameras)
    camera_zones = {c.id: c.zone for c in cameras}
    notifier = build_notifier(site, metrics, checked.rules, camera_zones, shard)
    sinks = ViolationSinks(metrics, writer, evidence, notifier)
    # a camera's zones share its queue: room for as many frames per zone as a camera without zones has
    queues = FrameQueues(names, {c.id: c.queue_size * max(1, len(c.zones)) for c in cameras},
                         on_drop=lambda cam: metrics.frames_dropped.labels(cam).inc())
    metrics.over_capacity.set_function(lambda: float(queues.dropped_within(cfg.inference.over_capacity_seconds)))
    settings = [source_settings(site, c, bundle, backbone.input_size) for c in cameras]
    max_gap = 3.0 * max((1.0 / s.sample_fps for s in settings), default=1.0) + 1.0
    engine = checked.engine
    build = {"site": cfg.site, "model": bundle.hash, "rules": checked.rules.hash, "config": site.hash[:16],
             "host": socket.gethostname(), "engine": engine.engine, "precision": engine.precision,
             "engine_forced": str(engine.forced).lower(), "engine_model": engine.model_hash or "-"}

    def rules_swapped(ruleset: RuleSet) -> None:
        metrics.init_rules(names, ruleset.severities())
        if notifier:
            notifier.rules_changed(ruleset)
        build["rules"] = ruleset.hash
        describe(metrics, build, ruleset)
        writer.put_ruleset(ruleset.hash, ruleset.text)  # the text in force, for QA
        log.info(kv(event="rules_reloaded", rules=ruleset.hash, count=len(ruleset.rules)))

    analysis = Analysis(WindowBuffers(window.frames, window.stride, max_gap),
                        Classifier(bundle.head_file, bundle.labels, window.frames, backbone.dim),
                        RuleEngine(checked.rules, camera_zones), sinks, metrics, rules_swapped,
                        _shadow(checked, backbone.dim, camera_zones, metrics, writer))
    embedder = Embedder(backbone, queues, cfg.inference.max_batch, cfg.inference.max_wait_ms, analysis.put,
                        lambda size, seconds: (metrics.batch_size.observe(size), metrics.inference_seconds.observe(seconds)))
    hooks = _hooks(metrics, queues, evidence, notifier)
    sources = [CameraSource(s, hooks, _splitter(site, c, backbone.input_size, metrics), motion_settings(site, c))
               for s, c in zip(settings, cameras, strict=True)]
    watcher = RulesWatcher(site.rule_files, bundle.labels, bundle.manifest.groups, checked.rules,
                           _rules_delivery(checked, analysis), metrics, targets=site.notify_targets)
    retention = None
    if evidence and cfg.evidence.retention_days:
        retention = RetentionSweeper(evidence.directory, cfg.evidence.retention_days, writer.put_pruned)
    metrics.init_labels(names, [*bundle.labels, NOBODY], checked.rules.severities())
    metrics.init_zones([(c.id, z.name, z.person_gate) for c in cameras for z in c.zones], [*bundle.labels, NOBODY])
    describe(metrics, build, checked.rules)
    return Pipeline(site, bundle, cameras, shard, metrics, backbone, sources, queues, embedder, analysis, sinks,
                    writer, evidence, retention, watcher, build, notifier, checked.shadow)


def _shadow(checked: CheckedSite, dim: int, camera_zones: dict[str, str | None], metrics: Metrics,
            writer: StoreWriter) -> ShadowModel | None:
    """shadow_model's head on the live embeddings, its own rule engine, its episodes to shadow_events only."""
    shadow, rules = checked.shadow, checked.shadow_rules
    if shadow is None or rules is None:
        return None
    window = shadow.manifest.window
    try:
        classifier = Classifier(shadow.head_file, shadow.labels, window.frames, dim)
    except UserError as err:
        raise UserError([f"{checked.site.path}: shadow_model: {p}" for p in err.problems]) from None
    model = shadow.hash[:12]
    metrics.init_shadow(model, list(camera_zones), [r.id for r in rules.rules])
    return ShadowModel(classifier, RuleEngine(rules, camera_zones), model, metrics,
                       lambda event: writer.put_shadow(event, shadow.hash))


def _rules_delivery(checked: CheckedSite, analysis: Analysis) -> Callable[[RuleSet], None]:
    """A reloaded rule set to the analysis stage; with a shadow model, the same files checked for its labels too
    (if they do not fit them, the shadow keeps its rules and says so)."""
    shadow, site = checked.shadow, checked.site

    def deliver(ruleset: RuleSet) -> None:
        shadow_rules = None
        if shadow is not None:
            try:
                shadow_rules = load_rules(site.rule_files, shadow.labels, shadow.manifest.groups, site.notify_targets)
            except UserError as err:
                log.error(kv(event="shadow_rules_reload_refused", model=shadow.hash[:12], problems="; ".join(err.problems)))
        analysis.offer_rules(ruleset, shadow_rules)

    return deliver


def describe(metrics: Metrics, build: dict[str, str], ruleset: RuleSet) -> None:
    """The build info and one har_monitor_rule_info sample per rule running."""
    describe_build(metrics, **build)
    metrics.rule_info.set([{"rule": r.id, "severity": r.severity, "kind": r.kind,
                            **{f"label_{k}": v for k, v in r.labels.items()}} for r in ruleset.rules])


def motion_settings(site: Site, cam: CameraConfig) -> MotionSettings | None:
    """The camera's motion gating (its own `motion`, else the site's), or None when it is off."""
    cfg = cam.motion or site.config.motion
    if not cfg.enabled:
        return None
    return MotionSettings(cfg.pixel_threshold, cfg.min_changed, cfg.refresh_seconds)


def _splitter(site: Site, cam: CameraConfig, size: tuple[int, int], metrics: Metrics) -> ZoneSplitter | None:
    """A camera with zones: one frame per zone; a gated zone gets a PersonGate (one detector per camera: each
    camera's reader thread runs its own)."""
    if not cam.zones:
        return None
    gates: dict[str, PersonGate] = {}
    detector_cfg = site.config.person_detector
    if detector_cfg is not None and any(z.person_gate for z in cam.zones):
        detector = PersonDetector(site.resolve(detector_cfg.model), detector_cfg.min_score,
                                  where=f"{site.path}: person_detector")
        for z in cam.zones:
            if z.person_gate:
                gates[z.name] = PersonGate(detector, detector_cfg.check_hz, detector_cfg.hold_seconds,
                                           _person_observer(metrics, cam.id, z.name))
    return ZoneSplitter(cam.id, [z.geometry() for z in cam.zones], size, gates)


def _person_observer(metrics: Metrics, camera: str, zone: str) -> Callable[[PersonCheck], None]:
    def observe(check: PersonCheck) -> None:
        metrics.person_checks.labels(camera, zone).inc()
        metrics.person_check_seconds.observe(check.seconds)
        metrics.person_present.labels(camera, zone).set(1 if check.present else 0)
    return observe


def _hooks(metrics: Metrics, queues: FrameQueues, evidence: EvidenceRecorder | None,
           notifier: Notifier | None) -> SourceHooks:
    def decoded(cam: str, ts: float) -> None:
        metrics.frames_decoded.labels(cam).inc()
        metrics.last_frame.labels(cam).set(ts)

    def frame(f: SampledFrame) -> None:
        metrics.frames_sampled.labels(f.camera).inc()
        queues.put(f)

    def up(cam: str, is_up: bool) -> None:
        metrics.camera_up.labels(cam).set(1 if is_up else 0)
        if notifier:
            notifier.camera_available(cam, is_up)

    return SourceHooks(
        frame=frame, decoded=decoded,
        decode_error=lambda cam: metrics.decode_errors.labels(cam).inc(),
        up=up,
        reconnect=lambda cam: metrics.reconnects.labels(cam).inc(),
        stall=lambda cam: metrics.stalls.labels(cam).inc(),
        evidence=evidence.add_frame if evidence else (lambda cam, ts, rgb: None))


def _writer(checked: CheckedSite, shard: tuple[int, int] | None, metrics: Metrics,
            on_stored: Callable[[ViolationEvent, float], None] | None) -> StoreWriter:
    site = checked.site
    engine = checked.engine
    prov = Provenance(site.config.site, checked.bundle.hash, checked.rules.hash, site.hash, engine=engine.engine,
                      precision=engine.precision, engine_forced=engine.forced, engine_hash=engine.model_hash)
    spool = site.resolve(site.config.storage.spool)
    if shard is not None:  # shards may share a volume: each keeps its own spool
        spool = spool.with_name(f"{spool.stem}.shard{shard[0]}of{shard[1]}{spool.suffix}")
    writer: StoreWriter

    def stored(event: ViolationEvent) -> None:
        metrics.store_writes.inc()
        metrics.store_pending.set(writer.pending())
        if event.kind == "opened":
            latency = time.monotonic() - event.mono
            metrics.latency.observe(latency)
            if on_stored:
                on_stored(event, latency)

    writer = StoreWriter(site.database_url, prov, spool, stored=stored, failed=metrics.store_errors.inc,
                         spooled=metrics.spool_depth.set, anchors=site.anchor_log(need_key=True),
                         anchored=metrics.anchored, anchor_failed=metrics.anchor_errors.inc,
                         evidence_expected=site.config.evidence.enabled)
    _check_schema(site, writer)
    return writer


def _check_schema(site: Site, writer: StoreWriter) -> None:
    """An outdated schema is the user's to fix (exit 2); an unreachable database is an outage (spool)."""
    try:
        check_schema(writer.engine, f"har-monitor db upgrade --cameras {site.path}")
    except SchemaOutdated as exc:
        raise UserError(f"{site.path}: storage.url: {exc}") from None
    except SQLAlchemyError as exc:
        log.warning(kv(event="store_unreachable_at_start", database=shown_url(site.database_url),
                       error=type(getattr(exc, "orig", None) or exc).__name__, spool=len(writer.spool)))


def _evidence(site: Site, writer: StoreWriter, cameras: list[CameraConfig]) -> EvidenceRecorder | None:
    cfg = site.config.evidence
    if not cfg.enabled:
        return None
    root: Path = site.resolve(site.config.storage.evidence_dir)
    try:
        return EvidenceRecorder(root, cfg.pre_roll_seconds, cfg.post_roll_seconds, cfg.fps, cfg.width, cfg.blur_faces,
                                on_written=lambda ev: writer.put_evidence(ev.episode_id, ev.as_record(root)),
                                on_error=lambda episode, exc: writer.put_evidence_failed(episode, str(exc)),
                                zones={c.id: [z.geometry() for z in c.zones] for c in cameras if c.zones})
    except (OSError, ValueError) as exc:
        raise UserError(f"{site.path}: evidence: {exc}") from None
