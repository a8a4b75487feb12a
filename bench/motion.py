#!/usr/bin/env python
"""Benchmark of motion gating (not a test): how much inference does it save on a mostly static scene?

    python bench/motion.py [--size 299] [--sample-fps 4]

Input: Intel's room camera (real, 768x432 H.264, 10 fps, 139 s, ../shared/assets): people cross the room one
by one. Frames go to the real frame queues and the one inference thread (Embedder) with InceptionV3 (weights
none: the cost does not depend on them) at --size, with motion gating off (the baseline: every sampled frame
is embedded), then on with the defaults (`motion:` in site.yaml). Printed per run: frames sampled, frames
through the backbone, frames that reused an embedding, and the backbone's time.

1. The whole clip, read by a real file camera (CameraSource, as fast as possible): someone is in the room,
   walking or standing at the table, about half of the time.
2. A mostly static scene: the clip's empty first 5 s, twice, 5 s of a person crossing (from 5.5 s), the empty
   5 s twice again (someone present 20% of the time, like bench/zones.py's scene). The last line is
   `ratio: X` = frames through the backbone with gating / without, for this scene (target: <= 0.5).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import av
import numpy as np

from monitor.messages import Embedding, SampledFrame
from monitor.model.backbones import Backbone, build_backbone
from monitor.model.frames import FrameSampler, to_rgb
from monitor.pipeline.embedder import Embedder
from monitor.pipeline.framequeue import FrameQueues
from monitor.pipeline.motion import MotionGate, MotionSettings
from monitor.pipeline.sources import CameraSource, SourceHooks, SourceSettings

ASSETS = Path(os.environ.get("HAR_MONITOR_ASSETS", Path(__file__).resolve().parents[1] / ".." / "shared" / "assets"))
ROOM = ASSETS / "videos" / "intel_one-by-one-person-detection.mp4"


def embed_all(backbone: Backbone, feed: Callable[[Callable[[SampledFrame], None]], None]) -> dict[str, float]:
    """Frames from `feed(put)` through the queues and the embedder: counts and the backbone's seconds."""
    queues = FrameQueues(["room"], 100_000)  # never full: this measures work, not drops
    out: list[Embedding] = []
    timed = {"frames": 0, "seconds": 0.0}

    def observe(n: int, s: float) -> None:
        timed["frames"] += n
        timed["seconds"] += s

    embedder = Embedder(backbone, queues, max_batch=16, max_wait_ms=50, emit=out.extend, observe=observe)
    embedder.start()
    start = time.monotonic()
    feed(queues.put)
    embedder.stop()
    embedder.join(600)
    return {"sampled": len(out), "embedded": timed["frames"], "reused": sum(e.reused for e in out),
            "backbone_s": timed["seconds"], "wall_s": time.monotonic() - start}


def camera_feed(backbone: Backbone, motion: MotionSettings | None, fps: float) -> Callable[[Callable], None]:
    def feed(put: Callable[[SampledFrame], None]) -> None:
        source = CameraSource(SourceSettings("room", str(ROOM), False, backbone.input_size, fps, realtime=False),
                              SourceHooks(frame=put), motion=motion)
        source.start()
        source.join(600)
    return feed


def static_scene(size: int, fps: float) -> list[np.ndarray]:
    """The clip's empty room (0-5 s) twice, a person crossing (5.5-10.5 s), the empty room twice: RGB at `size`."""
    def part(start: float, seconds: float) -> list[np.ndarray]:
        sampler, out = FrameSampler(fps), []
        with av.open(str(ROOM)) as c:
            for f in c.decode(video=0):
                if f.time >= start + seconds:
                    break
                if f.time >= start and sampler.take(f.time):
                    out.append(to_rgb(f, size, size))
        return out
    empty, person = part(0.0, 5.0), part(5.5, 5.0)
    return [*empty, *empty, *person, *empty, *empty]


def scene_feed(frames: list[np.ndarray], gate: MotionGate | None, fps: float) -> Callable[[Callable], None]:
    def feed(put: Callable[[SampledFrame], None]) -> None:
        for i, rgb in enumerate(frames):
            f = SampledFrame("room", i / fps, i / fps, rgb)
            put(gate(f) if gate else f)
    return feed


def compare(title: str, backbone: Backbone, feeds: dict[str, Callable[[Callable], None]]) -> float:
    print(title)
    results = {}
    for name, feed in feeds.items():
        r = results[name] = embed_all(backbone, feed)
        print(f"  {name:10}: {r['sampled']:.0f} frames sampled, {r['embedded']:.0f} through the backbone, "
              f"{r['reused']:.0f} reused; backbone {r['backbone_s']:.1f} s, wall {r['wall_s']:.1f} s", flush=True)
    off, on = results["gating off"], results["gating on"]
    ratio = on["embedded"] / off["embedded"]
    print(f"  frames through the backbone, on / off: {ratio:.3f}; backbone time, on / off: "
          f"{on['backbone_s'] / off['backbone_s']:.3f}")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=299, help="InceptionV3 input side (default 299)")
    parser.add_argument("--sample-fps", type=float, default=4.0)
    args = parser.parse_args()
    if not ROOM.exists():
        print(f"skipped: {ROOM} is absent (shared assets)")
        return 0
    backbone = build_backbone("inception_v3", "none", (args.size, args.size))
    backbone.embed(np.zeros((1, args.size, args.size, 3), np.uint8))  # compile once
    compare(f"1. the whole clip ({ROOM.name}), a real file camera, {args.sample_fps:g} fps:", backbone,
            {"gating off": camera_feed(backbone, None, args.sample_fps),
             "gating on": camera_feed(backbone, MotionSettings(), args.sample_fps)})
    scene = static_scene(args.size, args.sample_fps)
    ratio = compare("2. a mostly static scene (someone present 20% of the time):", backbone,
                    {"gating off": scene_feed(scene, None, args.sample_fps),
                     "gating on": scene_feed(scene, MotionGate(MotionSettings()), args.sample_fps)})
    print(f"ratio: {ratio:.3f}  (frames through the backbone with gating / without, mostly static scene; target <= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
