"""Where violation events go: the log, the metrics, the record (the store writer), the evidence recorder
and the notifications (MQTT, webhooks).

The analysis stage hands every event the rule engine emits to `ViolationSinks.emit`, on its own thread;
each sink returns at once (the store spools, the evidence recorder and the notification outboxes queue),
so a slow database, disk, broker or receiver never holds up the classifier.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from monitor.evidence.recorder import EvidenceRecorder
from monitor.messages import ViolationEvent
from monitor.notify.notifier import Notifier
from monitor.ops.logs import kv
from monitor.ops.metrics import Metrics
from monitor.record.writer import StoreWriter

log = logging.getLogger(__name__)


class ViolationSinks:
    def __init__(self, metrics: Metrics, writer: StoreWriter, evidence: EvidenceRecorder | None,
                 notifier: Notifier | None = None):
        self.metrics = metrics
        self.writer = writer
        self.evidence = evidence
        self.notifier = notifier
        self.opened: Counter[str] = Counter()  # rule -> episodes opened this run

    def emit(self, events: list[ViolationEvent]) -> None:
        for event in events:
            if event.kind == "opened":
                self.metrics.violations.labels(event.camera, event.rule, event.severity).inc()
                self.opened[event.rule] += 1
                if self.evidence:  # the wall time of the frame that opened it
                    self.evidence.episode_opened(event.episode_id, event.camera,
                                                 time.time() - (time.monotonic() - event.mono), event.zone)
            if event.kind != "updated":
                log.info(kv(event=f"violation_{event.kind}", rule=event.rule, camera=event.camera,
                            severity=event.severity, action=event.action, confidence=round(event.confidence, 3),
                            episode=event.episode_id, **({"zone": event.zone} if event.zone else {})))
            self.writer.put(event)
            if self.notifier:
                self.notifier.put(event)
        self.metrics.store_pending.set(self.writer.pending())
