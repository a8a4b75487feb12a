"""Rules hot-reload: on SIGHUP (`request`) or when a rule file's content changes (polled).

A new set is validated here, off the analysis thread; an invalid one is refused, logged and counted
while the running one stays; a valid one is handed to `deliver` (the analysis stage swaps it in
between two predictions: open episodes of unchanged rules go on, those of changed or removed rules
are closed).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from monitor.errors import UserError
from monitor.ops.lifecycle import Worker
from monitor.ops.logs import kv
from monitor.ops.metrics import Metrics
from monitor.rules import RuleSet, load_rules

log = logging.getLogger(__name__)
POLL_SECONDS = 2.0


class RulesWatcher(Worker):
    def __init__(self, files: list[Path], labels: list[str], groups: dict[str, list[str]], running: RuleSet,
                 deliver: Callable[[RuleSet], None], metrics: Metrics, poll_seconds: float = POLL_SECONDS,
                 targets: list[str] | None = None):
        super().__init__("rules-watch")
        self.files, self.labels, self.groups, self.targets = files, labels, groups, targets
        self.running_hash = running.hash
        self.deliver = deliver
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self._requested = threading.Event()
        self._seen = self._digest()

    def request(self) -> None:
        """Ask for a reload; safe from a signal handler (it only sets an event)."""
        self._requested.set()

    def stop(self) -> None:
        super().stop()
        self._requested.set()  # wake the wait at once

    def run(self) -> None:
        while True:
            requested = self._requested.wait(self.poll_seconds)
            self._requested.clear()
            if self.stopping.is_set():
                return
            seen = self._digest()
            if requested or seen != self._seen:
                self._seen = seen
                self.reload()

    def reload(self) -> bool:
        """Validate the rule files; deliver a valid set, refuse an invalid one."""
        try:
            ruleset = load_rules(self.files, self.labels, self.groups, self.targets)
        except UserError as err:
            self.metrics.rules_reloads.labels("error").inc()
            log.error(kv(event="rules_reload_refused", running=self.running_hash, problems="; ".join(err.problems)))
            return False
        self.running_hash = ruleset.hash
        self.deliver(ruleset)
        self.metrics.rules_reloads.labels("ok").inc()
        log.info(kv(event="rules_reload_accepted", rules=ruleset.hash, count=len(ruleset.rules)))
        return True

    def _digest(self) -> str:
        digest = hashlib.sha256()
        for path in self.files:
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"\0missing")
        return digest.hexdigest()
