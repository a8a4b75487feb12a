"""The analysis stage: embeddings -> windows -> classifier -> rule engine -> sinks, on ONE thread.

It is the only caller of the rule engine (whose state machines allow one caller), shutdown included:
`stop()` means the embedder has finished, so the stage classifies what is still queued, closes every
open episode and only then ends. A reloaded rule set is handed over with `offer_rules` and swapped in
between two predictions.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from monitor.messages import Embedding
from monitor.ops.lifecycle import Worker
from monitor.ops.metrics import Metrics
from monitor.pipeline.classifier import Classifier
from monitor.pipeline.shadow import ShadowModel
from monitor.pipeline.sinks import ViolationSinks
from monitor.pipeline.windows import WindowBuffers
from monitor.rules import RuleEngine, RuleSet

INBOX_BATCHES = 256  # embedding batches waiting here; beyond that the embedder waits (back-pressure)


class Analysis(Worker):
    def __init__(self, windows: WindowBuffers, classifier: Classifier, engine: RuleEngine, sinks: ViolationSinks,
                 metrics: Metrics, on_rules: Callable[[RuleSet], None] = lambda ruleset: None,
                 shadow: ShadowModel | None = None):
        super().__init__("analysis")
        self.windows = windows
        self.classifier = classifier
        self.engine = engine
        self.sinks = sinks
        self.metrics = metrics
        self.on_rules = on_rules
        self.shadow = shadow
        self._inbox: queue.Queue[list[Embedding]] = queue.Queue(maxsize=INBOX_BATCHES)
        self._rules_lock = threading.Lock()
        self._new_rules: RuleSet | None = None
        self._new_shadow_rules: RuleSet | None = None

    def put(self, batch: list[Embedding]) -> None:
        """The embedder's output."""
        self._inbox.put(batch)

    def offer_rules(self, ruleset: RuleSet, shadow_ruleset: RuleSet | None = None) -> None:
        """A validated rule set, to be swapped in between two predictions (any thread); `shadow_ruleset`: the same
        files validated for the shadow model's labels (None: the shadow keeps its rules)."""
        with self._rules_lock:
            self._new_rules = ruleset
            self._new_shadow_rules = shadow_ruleset

    def warm_up(self, dim: int) -> None:
        """Trace the compiled head once before cameras start."""
        self.classifier.probabilities(np.zeros((1, self.windows.frames, dim), np.float32))
        if self.shadow:
            self.shadow.classifier.probabilities(np.zeros((1, self.windows.frames, dim), np.float32))

    def run(self) -> None:
        while True:
            self._swap_rules()
            try:
                batch = self._inbox.get(timeout=0.2)
            except queue.Empty:
                if self.stopping.is_set():
                    break
                continue
            self._analyze(batch)
        self._emit(self.engine.close_all(time.time(), time.monotonic()))
        if self.shadow:
            self.shadow.close_all(time.time(), time.monotonic())

    def _analyze(self, batch: list[Embedding]) -> None:
        for e in batch:
            if e.reused:
                self.metrics.frames_reused.labels(e.camera).inc()
            elif not e.gated:
                self.metrics.embeddings.labels(e.camera).inc()
        windows = [w for w in map(self.windows.push, batch) if w is not None]
        if not windows:
            return
        start = time.perf_counter()
        predictions = self.classifier.predict(windows)
        if not all(w.gated for w in windows):
            self.metrics.classifier_seconds.observe(time.perf_counter() - start)
        for w, p in zip(windows, predictions, strict=True):
            action = p.top[0]
            self.metrics.predictions.labels(p.camera, action).inc()
            if p.zone:
                self.metrics.zone_predictions.labels(p.camera, p.zone, action).inc()
            if w.gated:
                self.metrics.gated_windows.labels(p.camera, p.zone).inc()
            self._emit(self.engine.observe(p))
        if self.shadow:  # after the live model: the shadow never delays a live violation
            self.shadow.observe(windows)

    def _emit(self, events: list) -> None:
        self.sinks.emit(events)
        self.metrics.open_episodes.set(self.engine.open_count())

    def _swap_rules(self) -> None:
        with self._rules_lock:
            ruleset, self._new_rules = self._new_rules, None
            shadow_ruleset, self._new_shadow_rules = self._new_shadow_rules, None
        if self.shadow and shadow_ruleset is not None:
            self.shadow.replace(shadow_ruleset, time.time(), time.monotonic())
        if ruleset is not None:
            self._emit(self.engine.replace(ruleset, time.time(), time.monotonic()))
            self.on_rules(ruleset)
