"""One notification target's outbox and its delivery thread: durable, in order, retried with backoff.

`put` (the analysis thread) only appends to an in-memory inbox and returns: a slow disk or a dead
broker never holds up the pipeline. The target's own thread writes the inbox to its durable queue
(committed to disk) FIRST, then delivers the oldest record; only once the target has it (an MQTT
PUBACK, a webhook's 2xx) is the record acknowledged and the next one sent. A failed delivery is
counted, logged, and the same record is tried again after a backoff (doubling, jittered), forever:
nothing is skipped, so a target receives each camera's notifications in order, at least once
(a crash between delivery and acknowledgement sends that one again; receivers drop repeats by
`id` + `event`). At shutdown the thread tries for `drain_seconds` more, then leaves what is left
in the outbox for the next start.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable

from monitor.backoff import Backoff
from monitor.durablequeue import DurableQueue
from monitor.ops.lifecycle import Worker
from monitor.ops.logs import kv

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """The target does not have the record (yet); the message is safe to log (no secret in it)."""


class Outbox(Worker):
    """Subclasses implement `deliver(record)` (raise DeliveryError) and may use `tick()` (called often)."""

    TICK_SECONDS = 0.2  # how often `tick` runs while there is nothing to send

    def __init__(self, target: str, queue: DurableQueue, backoff: Backoff,
                 counted: Callable[[str, int], None] = lambda what, n: None, drain_seconds: float = 2.0):
        """`counted(what, n)`: "sent" / "failed" (n = 1 each), "pending" (n = the depth)."""
        super().__init__(f"notify-{target}")
        self.target = target
        self.queue = queue
        self.backoff = backoff
        self.counted = counted
        self.drain_seconds = drain_seconds
        self._inbox: deque[dict] = deque()
        self._wake = threading.Event()
        self._retry_at = 0.0  # monotonic: no delivery before this (backoff after a failure)
        self._failing = False

    def put(self, record: dict) -> None:
        """Any thread: queue a record for this target; returns at once."""
        self._inbox.append(record)
        self._wake.set()

    def retry_now(self) -> None:
        """Any thread: the target is back (e.g. reconnected): try the next record without waiting for the backoff."""
        self._retry_at = 0.0
        self._wake.set()

    def pending(self) -> int:
        return len(self.queue) + len(self._inbox)

    def stop(self) -> None:
        super().stop()
        self._wake.set()

    # -- subclass hooks ---------------------------------------------------------------------------
    def deliver(self, record: dict) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Housekeeping between deliveries (MQTT: keep the connection serviced)."""

    def finish(self) -> None:
        """The thread is ending."""

    # -- the thread -------------------------------------------------------------------------------
    def run(self) -> None:
        deadline: float | None = None
        try:
            while True:
                self._persist()
                if self.stopping.is_set():
                    deadline = deadline or time.monotonic() + self.drain_seconds
                    if not len(self.queue) or time.monotonic() >= deadline:
                        break
                self.tick()
                if not self._send_next():
                    self._wake.wait(self._idle_seconds(deadline))
                    self._wake.clear()
        finally:
            self._persist()
            self.finish()
            self.queue.close()
            log.info(kv(event="outbox_stopped", target=self.target, left=self.pending()))

    def _idle_seconds(self, deadline: float | None) -> float:
        now = time.monotonic()
        wait = self.TICK_SECONDS if not len(self.queue) else max(0.0, min(self._retry_at - now, self.TICK_SECONDS))
        return min(wait, max(0.0, deadline - now)) if deadline is not None else wait

    def _persist(self) -> None:
        """The inbox into the durable queue, oldest first; on a disk error the rest waits for the next try."""
        while self._inbox:
            try:
                self.queue.append(self._inbox[0])
            except sqlite3.Error as exc:
                log.error(kv(event="outbox_write_failed", target=self.target, error=str(exc)))
                self.counted("failed", 1)
                break
            self._inbox.popleft()
        self.counted("pending", self.pending())

    def _send_next(self) -> bool:
        """Deliver the oldest record if it is time; True when one was delivered."""
        if time.monotonic() < self._retry_at:
            return False
        head = self.queue.read(1)
        if not head:
            return False
        try:
            self.deliver(head[0].record)
        except DeliveryError as exc:
            delay = self.backoff.next()
            self._retry_at = time.monotonic() + delay
            self.counted("failed", 1)
            log.warning(kv(event="notification_failed", target=self.target, key=head[0].record.get("key"),
                           error=str(exc), retry_in_s=round(delay, 1), pending=self.pending()))
            self._failing = True
            return False
        self.queue.ack(head[0])
        self.backoff.reset()
        self.counted("sent", 1)
        self.counted("pending", self.pending())
        if self._failing:
            self._failing = False
            log.info(kv(event="notifications_flowing", target=self.target, pending=self.pending()))
        return True
