"""Prometheus metrics: prefix har_monitor_, counters end in _total, durations in _seconds.

Labels are bounded sets (camera, rule, severity, action), never ids or URLs. Each camera's
children are created at start-up so that `rate(...) == 0` alerts can fire for a silent camera.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

import monitor
from monitor.ops.logs import kv

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256)
INFER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        cam = ["camera"]
        self.info = Info("har_monitor_build", "Version, model, engine and rule set in use", registry=r)
        self.frames_decoded = Counter("har_monitor_frames_decoded_total", "Frames decoded", cam, registry=r)
        self.frames_sampled = Counter("har_monitor_frames_sampled_total", "Frames sampled for inference", cam, registry=r)
        self.frames_dropped = Counter("har_monitor_frames_dropped_total", "Sampled frames dropped because the inference queue was full", cam, registry=r)
        self.over_capacity = Gauge("har_monitor_over_capacity", "1 while the box is over capacity: a camera dropped a sampled frame within inference.over_capacity_seconds", registry=r)
        self.decode_errors = Counter("har_monitor_decode_errors_total", "Packets that failed to decode", cam, registry=r)
        self.camera_up = Gauge("har_monitor_camera_up", "1 while the camera delivers frames", cam, registry=r)
        self.reconnects = Counter("har_monitor_camera_reconnects_total", "Reconnection attempts", cam, registry=r)
        self.stalls = Counter("har_monitor_camera_stalls_total", "Streams torn down because no frame came in time", cam, registry=r)
        self.last_frame = Gauge("har_monitor_camera_last_frame_timestamp_seconds", "UTC time of the last decoded frame", cam, registry=r)
        self.batch_size = Histogram("har_monitor_inference_batch_size", "Frames per backbone call", buckets=BATCH_BUCKETS, registry=r)
        self.inference_seconds = Histogram("har_monitor_inference_seconds", "Backbone call duration", buckets=INFER_BUCKETS, registry=r)
        self.classifier_seconds = Histogram("har_monitor_classifier_seconds", "Temporal head call duration", buckets=INFER_BUCKETS, registry=r)
        self.embeddings = Counter("har_monitor_embeddings_total", "Frame embeddings computed", cam, registry=r)
        self.frames_reused = Counter("har_monitor_frames_reused_total", "Sampled frames that reused their stream's last embedding (motion gating: the scene had not changed)", cam, registry=r)
        self.predictions = Counter("har_monitor_predictions_total", "Window predictions by top action", ["camera", "action"], registry=r)
        self.violations = Counter("har_monitor_violations_total", "Violation episodes opened", ["camera", "rule", "severity"], registry=r)
        self.open_episodes = Gauge("har_monitor_open_episodes", "Violation episodes currently open", registry=r)
        self.latency = Histogram("har_monitor_frame_to_violation_seconds", "From frame capture to its violation being stored", buckets=LATENCY_BUCKETS, registry=r)
        self.store_writes = Counter("har_monitor_store_writes_total", "Violation events written to the store", registry=r)
        self.store_errors = Counter("har_monitor_store_write_errors_total", "Failed store writes (retried)", registry=r)
        self.store_pending = Gauge("har_monitor_store_pending", "Violation events waiting to be written", registry=r)
        self.spool_depth = Gauge("har_monitor_store_spool_depth", "Records in the durable local spool, not yet in the database", registry=r)
        self.anchored_rows = Gauge("har_monitor_record_anchored_rows", "Rows of each hash chain covered by the latest anchor", ["chain"], registry=r)
        self.last_anchor = Gauge("har_monitor_record_last_anchor_timestamp_seconds", "UTC time of the latest anchor of the record", registry=r)
        self.anchor_errors = Counter("har_monitor_record_anchor_errors_total", "Anchors that could not be written or shipped", registry=r)
        self.rules_reloads = Counter("har_monitor_rules_reloads_total", "Rule set reloads (SIGHUP or a changed file) by result", ["result"], registry=r)
        for result in ("ok", "error"):
            self.rules_reloads.labels(result)
        zone = ["camera", "zone"]
        self.zone_predictions = Counter("har_monitor_zone_predictions_total", "Window predictions of a camera's zones by top action", ["camera", "zone", "action"], registry=r)
        self.gated_windows = Counter("har_monitor_gated_windows_total", "Windows of a gated zone with nobody in it (predicted as `nobody`, not classified)", zone, registry=r)
        self.person_present = Gauge("har_monitor_zone_person_present", "1 while the last person check of a gated zone saw someone", zone, registry=r)
        self.person_checks = Counter("har_monitor_person_checks_total", "Person detector runs (gated zones)", zone, registry=r)
        self.person_check_seconds = Histogram("har_monitor_person_check_seconds", "Person detector run time", buckets=INFER_BUCKETS, registry=r)
        target = ["target"]
        self.notify_sent = Counter("har_monitor_notifications_sent_total", "Notifications delivered (MQTT PUBACK, webhook 2xx)", target, registry=r)
        self.notify_failed = Counter("har_monitor_notifications_failed_total", "Failed delivery attempts (retried with backoff)", target, registry=r)
        self.notify_pending = Gauge("har_monitor_notifications_pending", "Notifications waiting in the durable outbox", target, registry=r)
        shadow = ["model"]  # the shadow bundle's short hash (one or two per run: bounded)
        self.shadow_predictions = Counter("har_monitor_shadow_predictions_total", "The shadow model's window predictions by top action", [*shadow, "camera", "action"], registry=r)
        self.shadow_violations = Counter("har_monitor_shadow_violations_total", "Episodes the shadow model would have opened (never alerted)", [*shadow, "camera", "rule"], registry=r)
        self.shadow_errors = Counter("har_monitor_shadow_errors_total", "Batches the shadow model failed to classify (the live model went on)", shadow, registry=r)
        self.rule_info = RuleInfo()
        r.register(self.rule_info)
        self._server: ThreadingHTTPServer | None = None

    def init_cameras(self, cameras: list[str]) -> None:
        for c in cameras:
            for family in (self.frames_decoded, self.frames_sampled, self.frames_dropped, self.decode_errors,
                           self.camera_up, self.reconnects, self.stalls, self.last_frame, self.embeddings,
                           self.frames_reused):
                family.labels(c)

    def init_shadow(self, model: str, cameras: list[str], rules: list[str]) -> None:
        """The shadow model's series at 0 from the start (a rate needs its first sample)."""
        self.shadow_errors.labels(model)
        for c in cameras:
            for rule in rules:
                self.shadow_violations.labels(model, c, rule)

    def init_labels(self, cameras: list[str], actions: list[str], rules: list[tuple[str, str]]) -> None:
        self.init_cameras(cameras)
        for c in cameras:
            for a in actions:
                self.predictions.labels(c, a)
        self.init_rules(cameras, rules)

    def init_zones(self, zones: list[tuple[str, str, bool]], actions: list[str]) -> None:
        """(camera, zone, gated) of every zone."""
        for camera, zone, gated in zones:
            for a in actions:
                self.zone_predictions.labels(camera, zone, a)
            if gated:
                for family in (self.gated_windows, self.person_present, self.person_checks):
                    family.labels(camera, zone)

    def init_targets(self, targets: list[str]) -> None:
        for t in targets:
            for family in (self.notify_sent, self.notify_failed, self.notify_pending):
                family.labels(t)

    def init_rules(self, cameras: list[str], rules: list[tuple[str, str]]) -> None:
        for c in cameras:
            for rule, severity in rules:
                self.violations.labels(c, rule, severity)

    def anchored(self, anchor) -> None:
        """A monitor.record.anchor.Anchor was written."""
        for chain, head in anchor.chains.items():
            self.anchored_rows.labels(chain).set(head.rows)
        self.last_anchor.set(anchor.at.timestamp())

    def serve(self, host: str, port: int, health: Callable[[], dict] | None = None, shard: str | None = None) -> int:
        """Serve /metrics, /healthz (liveness) and /readyz (readiness); return the port it listens on.

        `health()` returns {"live": bool, "ready": bool, ...details}. With `shard`, every
        sample carries a shard label, so the shards of one site can be told apart.
        """
        exposed = self.registry if shard is None else _with_label(self.registry, "shard", shard)
        handler = type("Handler", (_Handler,), {"exposed": exposed, "health": staticmethod(health or (dict))})
        server = self._server = _Server((host, port), handler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class RuleInfo:
    """`har_monitor_rule_info{rule, severity, kind, label_<key>...} 1` for each rule running: a rule's free-form
    labels vary from rule to rule, so they live here and queries join on `rule` (as kube-state-metrics does)."""

    def __init__(self) -> None:
        self._samples: list[dict[str, str]] = []

    def set(self, samples: list[dict[str, str]]) -> None:
        self._samples = samples  # replaced whole: a scrape sees the old list or the new one

    def collect(self):
        family = GaugeMetricFamily("har_monitor_rule_info", "The rules running, with their labels (prefixed label_)")
        for labels in self._samples:
            family.add_sample("har_monitor_rule_info", labels, 1.0)
        yield family


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A scraper that hangs up mid-response is no event worth a traceback in the log stream (the
        default prints one to stderr): one debug line. Anything else: one error line, not 20."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):  # BrokenPipeError, ConnectionResetError, ...
            log.debug(kv(event="metrics_client_gone", client=client_address[0], error=type(error).__name__))
        else:
            log.error(kv(event="metrics_request_failed", client=client_address[0]), exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    exposed: CollectorRegistry
    health: Callable[[], dict]

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.exposed), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            state = self.health()
            ok = state.get("live" if path == "/healthz" else "ready", False)
            self._send(200 if ok else 503, json.dumps(state).encode(), "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # scrapes every few seconds are not events worth a log line
        pass


def _with_label(registry: CollectorRegistry, name: str, value: str) -> CollectorRegistry:
    """A view of `registry` whose every sample also carries name=value."""

    class Labelled:
        def collect(self):
            for family in registry.collect():
                out = Metric(family.name, family.documentation, family.type, family.unit)
                for s in family.samples:
                    out.add_sample(s.name, {**s.labels, name: value}, s.value, s.timestamp, s.exemplar)
                yield out

    view = CollectorRegistry(auto_describe=False)
    view.register(Labelled())
    return view


def describe_build(metrics: Metrics, **fields: str) -> None:
    metrics.info.info({"version": monitor.__version__, **fields})
