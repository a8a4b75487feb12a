"""Per-camera ring buffers of embeddings that emit a window every S new ones.

The rule is `monitor.model.windowing`'s, which training uses too, so a model scores the same
offline and live: a window is the last T embeddings, the first ends at embedding T, then one
every S new embeddings.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from monitor.messages import Embedding, Window


class WindowBuffers:
    """`max_gap`: seconds between two embeddings of a camera after which its history restarts
    (after an outage, old frames are not 'the last T')."""

    def __init__(self, frames: int, stride: int, max_gap: float = float("inf")):
        self.frames = frames
        self.stride = stride
        self.max_gap = max_gap
        self._buffers: dict[str, deque[Embedding]] = {}
        self._seen: dict[str, int] = {}

    def push(self, e: Embedding) -> Window | None:
        buf = self._buffers.get(e.camera)
        if buf and e.ts - buf[-1].ts > self.max_gap:
            self.reset(e.camera)
        buf = self._buffers.setdefault(e.camera, deque(maxlen=self.frames))
        buf.append(e)
        seen = self._seen[e.camera] = self._seen.get(e.camera, 0) + 1
        if seen < self.frames or (seen - self.frames) % self.stride:
            return None
        return Window(e.camera, buf[0].ts, e.ts, e.mono, np.stack([x.vector for x in buf]))

    def reset(self, camera: str) -> None:
        self._buffers.pop(camera, None)
        self._seen.pop(camera, None)
