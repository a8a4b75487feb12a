"""The one inference thread: batches sampled frames across cameras through the backbone."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from monitor.messages import NO_FEATURES, Embedding
from monitor.model.backbones import Backbone
from monitor.ops.lifecycle import Worker
from monitor.ops.logs import kv
from monitor.pipeline.framequeue import FrameQueues

log = logging.getLogger(__name__)


class Embedder(Worker):
    """Takes batches of up to `max_batch` frames (or what came within `max_wait_ms`) from the queues.

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
            seen = [f for f in batch if not f.gated]  # gated frames (nobody in the zone) have no pixels
            start = time.perf_counter()
            try:
                vectors = iter(self.backbone.embed(np.stack([f.rgb for f in seen])) if seen else ())
            except Exception:  # a bad batch must not stop inference for every camera
                log.exception(kv(event="inference_failed", batch=len(batch)))
                continue
            if seen:
                self.observe(len(seen), time.perf_counter() - start)
            self.emit([Embedding(f.camera, f.ts, f.mono, NO_FEATURES if f.gated else next(vectors), f.zone, f.gated)
                       for f in batch])
