"""The one inference thread: batches sampled frames across cameras through the backbone."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from monitor.messages import NO_FEATURES, Embedding, SampledFrame
from monitor.model.backbones import Backbone
from monitor.ops.lifecycle import Worker
from monitor.ops.logs import kv
from monitor.pipeline.framequeue import FrameQueues

log = logging.getLogger(__name__)

Stream = tuple[str, str]  # (camera, zone)


class Embedder(Worker):
    """Takes batches of up to `max_batch` frames (or what came within `max_wait_ms`) from the queues.

    A frame marked by motion gating (`reuse_of`) gets its stream's last vector again, without the backbone,
    when that vector is the one of the frame it names; otherwise (that frame was dropped, or its batch failed)
    it is embedded and its vector stands for the frame it names from then on.

    `stop()` means the cameras have stopped: it embeds what is still queued, then ends, so no sampled
    frame is lost at shutdown.
    """

    def __init__(self, backbone: Backbone, queues: FrameQueues, max_batch: int, max_wait_ms: float,
                 emit: Callable[[list[Embedding]], None],
                 observe: Callable[[int, float], None] = lambda n, seconds: None):
        super().__init__("embedder")
        self.backbone = backbone
        self.queues = queues
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.emit = emit
        self.observe = observe
        self._last: dict[Stream, tuple[float, np.ndarray]] = {}  # stream -> (mono it stands for, vector)

    def warm_up(self) -> None:
        """Trace and run the compiled backbone once before cameras start."""
        h, w = self.backbone.input_size
        self.backbone.embed(np.zeros((1, h, w, 3), np.uint8))

    def run(self) -> None:
        while True:
            batch = self.queues.get_batch(self.max_batch, self.max_wait)
            if not batch:
                if self.stopping.is_set() and not len(self.queues):
                    return
                continue
            self._embed(batch)

    def _embed(self, batch: list[SampledFrame]) -> None:
        reuse = self._reusable(batch)
        # gated frames (nobody in the zone) have no pixels; reusable ones need none
        seen = [f for f, r in zip(batch, reuse, strict=True) if not f.gated and not r]
        start = time.perf_counter()
        try:
            embedded = self.backbone.embed(np.stack([f.rgb for f in seen])) if seen else np.empty((0, 0))
            if len(embedded) != len(seen):  # an engine's fault: never give a frame another frame's vector
                raise RuntimeError(f"the backbone gave {len(embedded)} vectors for {len(seen)} frames")
        except Exception:  # a bad batch must not stop inference for every camera
            log.exception(kv(event="inference_failed", batch=len(batch)))
            return
        vectors = iter(embedded)
        if seen:
            self.observe(len(seen), time.perf_counter() - start)
        out = []
        for f, r in zip(batch, reuse, strict=True):
            stream = (f.camera, f.zone)
            if f.gated:
                vector = NO_FEATURES
            elif r:
                vector = self._last[stream][1]
            else:
                vector = next(vectors)
                self._last[stream] = (f.mono if f.reuse_of is None else f.reuse_of, vector)
            out.append(Embedding(f.camera, f.ts, f.mono, vector, f.zone, f.gated, reused=r))
        self.emit(out)

    def _reusable(self, batch: list[SampledFrame]) -> list[bool]:
        """Which frames can take their stream's last vector: the one of the frame they name, embedded
        earlier or earlier in this batch."""
        stands_for = {stream: mono for stream, (mono, _) in self._last.items()}
        reuse = []
        for f in batch:
            stream = (f.camera, f.zone)
            ok = not f.gated and f.reuse_of is not None and stands_for.get(stream) == f.reuse_of
            if not f.gated and not ok:
                stands_for[stream] = f.mono if f.reuse_of is None else f.reuse_of
            reuse.append(ok)
        return reuse
