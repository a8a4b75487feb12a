"""Per-stream ring buffers of embeddings that emit a window every S new ones.

The rule is `monitor.model.windowing`'s, which training uses too, so a model scores the same
offline and live: a window is the last T embeddings, the first ends at embedding T, then one
every S new embeddings. A stream is a camera, or one zone of a camera.

Gated embeddings (nobody in a gated zone) break the stream's history: every S of them make a gated
window, so a stream keeps its cadence of windows while nobody is there; once someone is, windows
start again after T real embeddings, as at a stream's start.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from monitor.messages import Embedding, Window

Stream = tuple[str, str]  # (camera, zone)


class WindowBuffers:
    """`max_gap`: seconds between two embeddings of a stream after which its history restarts
    (after an outage, old frames are not 'the last T')."""

    def __init__(self, frames: int, stride: int, max_gap: float = float("inf")):
        self.frames = frames
        self.stride = stride
        self.max_gap = max_gap
        self._buffers: dict[Stream, deque[Embedding]] = {}
        self._seen: dict[Stream, int] = {}
        self._gated: dict[Stream, list[Embedding]] = {}  # the gated embeddings since the last gated window

    def push(self, e: Embedding) -> Window | None:
        stream = (e.camera, e.zone)
        if e.gated:
            return self._push_gated(stream, e)
        self._gated.pop(stream, None)
        buf = self._buffers.get(stream)
        if buf and e.ts - buf[-1].ts > self.max_gap:
            self.reset(stream)
        buf = self._buffers.setdefault(stream, deque(maxlen=self.frames))
        buf.append(e)
        seen = self._seen[stream] = self._seen.get(stream, 0) + 1
        if seen < self.frames or (seen - self.frames) % self.stride:
            return None
        return Window(e.camera, buf[0].ts, e.ts, e.mono, np.stack([x.vector for x in buf]), e.zone)

    def _push_gated(self, stream: Stream, e: Embedding) -> Window | None:
        self.reset(stream)
        gated = self._gated.setdefault(stream, [])
        gated.append(e)
        if len(gated) < self.stride:
            return None
        del self._gated[stream]
        return Window(e.camera, gated[0].ts, e.ts, e.mono, np.zeros((0, 0), np.float32), e.zone, gated=True)

    def reset(self, stream: Stream) -> None:
        self._buffers.pop(stream, None)
        self._seen.pop(stream, None)
