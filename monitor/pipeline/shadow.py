"""Shadow mode on the analysis thread: a candidate model's head on the live model's windows, judged by its own
rule engine (the same rules), its episodes sent to `emit` (the store writer's shadow records) and counted.

Never the live path's sinks: no violation row, evidence clip, notification or alert comes from it. A
fault of the shadow (its head failing on a batch) is logged and counted, and the live model goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from monitor.messages import ViolationEvent, Window
from monitor.ops.logs import kv
from monitor.ops.metrics import Metrics
from monitor.pipeline.classifier import Classifier
from monitor.rules import RuleEngine, RuleSet

log = logging.getLogger(__name__)


class ShadowModel:
    def __init__(self, classifier: Classifier, engine: RuleEngine, model: str, metrics: Metrics,
                 emit: Callable[[ViolationEvent], None]):
        self.classifier = classifier
        self.engine = engine
        self.model = model  # the `model` label of its metrics: the shadow bundle's short hash
        self.metrics = metrics
        self.emit = emit
        self._failing = False

    def observe(self, windows: list[Window]) -> None:
        """Classify the windows the live model classified, and run the shadow's rules on the predictions."""
        try:
            predictions = self.classifier.predict(windows)
            events = [e for p in predictions for e in self._step(p)]
        except Exception as exc:  # the shadow is a guest: whatever it does, the live model goes on
            self.metrics.shadow_errors.labels(self.model).inc()
            if not self._failing:
                log.error(kv(event="shadow_failed", model=self.model, error=type(exc).__name__, detail=str(exc)[:200]))
            self._failing = True
            return
        self._failing = False
        self._send(events)

    def replace(self, ruleset: RuleSet, now: float, mono: float) -> None:
        self._send(self.engine.replace(ruleset, now, mono))

    def close_all(self, now: float, mono: float) -> None:
        self._send(self.engine.close_all(now, mono))

    def _step(self, p) -> list[ViolationEvent]:
        self.metrics.shadow_predictions.labels(self.model, p.camera, p.top[0]).inc()
        return self.engine.observe(p)

    def _send(self, events: list[ViolationEvent]) -> None:
        for event in events:
            if event.kind == "opened":
                self.metrics.shadow_violations.labels(self.model, event.camera, event.rule).inc()
                log.info(kv(event="shadow_violation_opened", model=self.model, rule=event.rule, camera=event.camera,
                            action=event.action, confidence=round(event.confidence, 3)))
            self.emit(event)
