"""The notification sink: routes each episode opened and closed to its targets' outboxes.

Routing: a rule's own `notify: [targets]`, else site.yaml's `notify.by_severity` (default: every
target). An episode's `closed` goes where its `opened` went, even if the rules were reloaded since.
`updated` events are not sent (the peak confidence is in `closed`).
"""

from __future__ import annotations

import logging
import random
import sqlite3
from pathlib import Path

from monitor.backoff import Backoff
from monitor.durablequeue import DurableQueue
from monitor.errors import UserError
from monitor.messages import ViolationEvent
from monitor.notify.mqtt import MqttOutbox, default_client_id
from monitor.notify.outbox import Outbox
from monitor.notify.payload import notification
from monitor.notify.webhook import WebhookOutbox
from monitor.ops.metrics import Metrics
from monitor.rules import RuleSet
from monitor.site.config import Site
from monitor.site.notify import MQTT_TARGET, NotifyConfig

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, cfg: NotifyConfig, site: str, outboxes: dict[str, Outbox], rules: RuleSet,
                 camera_zones: dict[str, str | None]):
        self.cfg = cfg
        self.site = site
        self.outboxes = outboxes
        self.camera_zones = camera_zones
        self._rule_targets: dict[str, list[str] | None] = {}
        self._routes: dict[str, list[str]] = {}  # episode id -> targets of its `opened`
        self.rules_changed(rules)

    @property
    def workers(self) -> list[Outbox]:
        return list(self.outboxes.values())

    def rules_changed(self, rules: RuleSet) -> None:
        self._rule_targets = {r.id: r.notify for r in rules.rules}

    def put(self, event: ViolationEvent) -> None:
        """The analysis thread: never blocks (each outbox persists and delivers on its own thread)."""
        if event.kind == "opened":
            targets = self.cfg.route(event.severity, self._rule_targets.get(event.rule))
            self._routes[event.episode_id] = targets
        elif event.kind == "closed":
            targets = self._routes.pop(event.episode_id, None)
            if targets is None:  # opened before a restart: route it as it is now
                targets = self.cfg.route(event.severity, self._rule_targets.get(event.rule))
        else:
            return
        if targets:
            record = notification(event, self.site, self.camera_zones.get(event.camera), self.cfg.console_url)
            for target in targets:
                self.outboxes[target].put(record)

    def camera_available(self, camera: str, up: bool) -> None:
        mqtt = self.outboxes.get(MQTT_TARGET)
        if isinstance(mqtt, MqttOutbox):
            mqtt.camera_available(camera, up)


def build_notifier(site: Site, metrics: Metrics, rules: RuleSet, camera_zones: dict[str, str | None],
                   shard: tuple[int, int] | None = None) -> Notifier | None:
    """The site's notifier (None without `notify:`): one outbox per target, in one durable queue file."""
    cfg = site.config.notify
    if cfg is None:
        return None
    path = site.resolve(cfg.outbox)
    if shard is not None:  # shards may share a volume: each keeps its own outbox
        path = path.with_name(f"{path.stem}.shard{shard[0]}of{shard[1]}{path.suffix}")
    metrics.init_targets(cfg.targets)

    def extras(target: str) -> tuple:
        def counted(what: str, n: int) -> None:
            if what == "pending":
                metrics.notify_pending.labels(target).set(n)
            else:
                (metrics.notify_sent if what == "sent" else metrics.notify_failed).labels(target).inc(n)

        backoff = Backoff(cfg.retry_initial_seconds, cfg.retry_max_seconds, rng=random.Random(hash(target)))  # nosec B311  # retry jitter
        return _queue(path, target, site.path), backoff, counted

    outboxes: dict[str, Outbox] = {}
    if cfg.mqtt is not None:
        client_id = cfg.mqtt.client_id or default_client_id(site.config.site, shard)
        outboxes[MQTT_TARGET] = MqttOutbox(cfg.mqtt, site.config.site, client_id, site.resolve, *extras(MQTT_TARGET))
    for name, hook in cfg.webhooks.items():
        outboxes[name] = WebhookOutbox(name, hook.url, hook.secret, hook.timeout_seconds, *extras(name))
    return Notifier(cfg, site.config.site, outboxes, rules, camera_zones)


def _queue(path: Path, target: str, site_path: Path) -> DurableQueue:
    try:
        return DurableQueue(path, target)
    except (sqlite3.Error, OSError) as exc:
        raise UserError(f"{site_path}: notify.outbox: cannot use {path}: {exc}") from None
