"""Bounded per-camera frame queues feeding the one inference thread.

Each camera has its own bounded deque: when the embedder falls behind, a camera's oldest
frame is dropped (the newest frames matter for a live monitor) and the drop is counted.
Batches are taken round-robin across cameras so one busy camera cannot starve the others: under
overload each camera gets an equal share of the embedder (a camera asking less keeps all its frames,
the others share the rest), and each drops only its own oldest frames. A drop within the last
`over_capacity_seconds` means the box is over capacity (`/readyz` says so).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from monitor.messages import SampledFrame


class FrameQueues:
    def __init__(self, cameras: list[str], maxlen: int | dict[str, int], on_drop: Callable[[str], None] = lambda c: None):
        sizes = maxlen if isinstance(maxlen, dict) else dict.fromkeys(cameras, maxlen)
        self._queues: dict[str, deque[SampledFrame]] = {c: deque(maxlen=sizes[c]) for c in cameras}
        self._cond = threading.Condition()
        self._on_drop = on_drop
        self._next = 0  # round-robin start
        self._last_drop = float("-inf")  # monotonic

    def put(self, frame: SampledFrame) -> None:
        with self._cond:
            q = self._queues[frame.camera]
            if len(q) == q.maxlen:
                self._last_drop = time.monotonic()
                self._on_drop(frame.camera)
            q.append(frame)
            self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def dropped_within(self, seconds: float) -> bool:
        """Whether any camera dropped a frame in the last `seconds`: inference does not keep up."""
        return time.monotonic() - self._last_drop <= seconds

    def get_batch(self, max_batch: int, max_wait: float, timeout: float = 0.2) -> list[SampledFrame]:
        """Wait up to `timeout` for a first frame, then up to `max_wait` more to fill the batch."""
        with self._cond:
            if not self._cond.wait_for(self._has_frames, timeout):
                return []
            deadline = time.monotonic() + max_wait
            while self._count() < max_batch:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    break
            return self._take(max_batch)

    def _has_frames(self) -> bool:
        return any(self._queues.values())

    def _count(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _take(self, n: int) -> list[SampledFrame]:
        names = list(self._queues)
        batch: list[SampledFrame] = []
        while len(batch) < n and self._has_frames():
            for i in range(len(names)):
                q = self._queues[names[(self._next + i) % len(names)]]
                if q and len(batch) < n:
                    batch.append(q.popleft())
            self._next = (self._next + 1) % len(names)
        return batch
