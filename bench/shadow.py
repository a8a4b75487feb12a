#!/usr/bin/env python
"""Benchmark of shadow mode (not a test): what does a candidate head cost next to the live pipeline?

    python bench/shadow.py [--cameras 16] [--frames 16] [--stride 4] [--members 10] [--repeat 20]

In one run, on batches of one window per camera (as the analysis stage sees them):
1. live: the live head (`build_head('gru', T, 2048, 10, 32)` x --members, averaged, as `train` writes it)
   through the daemon's Classifier, and the rule engine on its predictions.
2. shadow: a ShadowModel on the same windows (a second head of the same size, its own rule engine).
3. Baseline: InceptionV3 (random weights, 299x299) embedding one batch of --cameras frames; a window needs
   --stride new frames per camera, so the backbone's share of a window is --stride such batches.
Medians of --repeat calls after warm-up. The last line is `ratio: X` = the shadow's time per batch /
the live pipeline's (backbone for --stride frames per camera + head + rules) per batch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from monitor.messages import Window
from monitor.rules import RuleEngine, RuleSet, parse_rule

LABELS = [f"action_{i:02d}" for i in range(10)]


def head_file(directory: Path, name: str, frames: int, members: int, seed: int) -> Path:
    import keras

    from monitor.model.heads import build_head

    keras.utils.set_random_seed(seed)
    heads = [build_head("gru", frames, 2048, len(LABELS), 32, name=f"m{m}") for m in range(members)]
    x = keras.Input((frames, 2048))
    outputs = [h(x) for h in heads]
    model = keras.Model(x, keras.layers.Average()(outputs) if members > 1 else outputs[0])
    path = directory / f"{name}.keras"
    model.save(path)
    return path


def rules() -> RuleSet:
    parsed = [parse_rule({"id": f"r{i}", "when": {"action": a, "min_confidence": 0.5, "for_windows": 2}})
              for i, a in enumerate(LABELS[:5])]
    return RuleSet(tuple(parsed), {a: (a,) for a in LABELS}, "bench")


def median_seconds(call, repeat: int) -> float:
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    from monitor.model.backbones import build_backbone
    from monitor.ops.metrics import Metrics
    from monitor.pipeline.classifier import Classifier
    from monitor.pipeline.shadow import ShadowModel

    rng = np.random.default_rng(0)
    zones = {f"cam-{c}": None for c in range(args.cameras)}
    with tempfile.TemporaryDirectory() as tmp:
        live = Classifier(head_file(Path(tmp), "live", args.frames, args.members, 1), LABELS, args.frames, 2048)
        candidate = Classifier(head_file(Path(tmp), "shadow", args.frames, args.members, 2), LABELS, args.frames, 2048)
    engine = RuleEngine(rules(), zones)
    shadow = ShadowModel(candidate, RuleEngine(rules(), zones), "bench", Metrics(), lambda event: None)
    t = [0.0]

    def windows() -> list[Window]:
        t[0] += 1.0
        return [Window(cam, t[0], t[0] + 4, time.monotonic(), rng.standard_normal((args.frames, 2048), np.float32))
                for cam in zones]

    def live_batch() -> None:
        for p in live.predict(windows()):
            engine.observe(p)

    batch = windows()

    def shadow_only() -> None:
        shadow.observe(batch)

    backbone = build_backbone("inception_v3", "none", (299, 299), 0)
    frames = rng.integers(0, 255, (args.cameras, 299, 299, 3), np.uint8)
    live_s = median_seconds(live_batch, args.repeat)
    extra = median_seconds(shadow_only, args.repeat)
    live_s = min(live_s, median_seconds(live_batch, args.repeat))  # again: the box is shared, take the calmer
    backbone_s = median_seconds(lambda: backbone.embed(frames), max(3, args.repeat // 4))
    pipeline_s = args.stride * backbone_s + live_s
    print(f"batch: {args.cameras} windows of {args.frames} x 2048, heads of {args.members} GRU(32) members")
    print(f"live head + rules:          {live_s * 1000:8.1f} ms per batch")
    print(f"shadow head + its rules:    {extra * 1000:8.1f} ms per batch")
    print(f"backbone, {args.cameras} frames:        {backbone_s * 1000:8.1f} ms per call; x{args.stride} per window")
    print(f"live pipeline per batch:    {pipeline_s * 1000:8.1f} ms")
    print(f"ratio: {extra / pipeline_s:.3f}")


if __name__ == "__main__":
    main()
