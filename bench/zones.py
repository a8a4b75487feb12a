#!/usr/bin/env python
"""Benchmark of zones and person gating (not a test): what does a zone cost, and what does gating save?

    python bench/zones.py [--size 299] [--seconds 20] [--sample-fps 4]

Input: Intel's room camera (real, 768x432 H.264, 10 fps, ../shared/assets): a woman stands at a table in
the right half at times; the left half is a window nobody comes near.

1. Cost per zone. The clip is read by a file camera (CameraSource, as fast as possible) with no
   zones, then with 1 to 4 zones: frames decoded are counted (a zone must not decode again). Then,
   per sampled frame of the clip's first --seconds: the source's work (decoded frame -> the backbone's input:
   FFmpeg's resize for a whole frame, RGB + crops for zones: best of 5 passes), and the backbone's cost
   per frame (InceptionV3, weights none: the cost does not depend on them, at --size, compiled, batch 8,
   median of 5 batches) = the baseline. Per zone after the first: extra work / one embedding (target:
   one embedding plus its crop, a fraction of a millisecond, and no decode).
2. Person gating. A scene with someone present 20% of the time (the clip's empty first 5 s, four
   times, and 5 s of her standing at the table) watched through one zone on the right half, with and
   without `person_gate` (MoveNet Lightning at 2 checks/s, hold 1 s), the clip's time as the clock:
   the source's work plus the real backbone on every frame that is not gated, CPU seconds measured.
   The last line printed is `ratio: X` = CPU with gating / without.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import av
import numpy as np

from monitor.model.backbones import build_backbone
from monitor.model.frames import FrameSampler, to_rgb
from monitor.model.persons import PersonDetector
from monitor.model.zones import Zone
from monitor.pipeline.sources import CameraSource, SourceHooks, SourceSettings
from monitor.pipeline.zones import PersonGate, ZoneSplitter

ASSETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets"
ROOM = ASSETS / "videos" / "intel_one-by-one-person-detection.mp4"
MOVENET = ASSETS / "weights" / "movenet_single_pose_lightning_ptq.tflite"
ZONES = [Zone.from_rect("window", (0.0, 0.0, 0.5, 1.0)), Zone.from_rect("table", (0.5, 0.0, 1.0, 1.0)),
         Zone("floor", ((0.0, 0.6), (1.0, 0.6), (1.0, 1.0), (0.0, 1.0))),
         Zone("pillar", ((0.62, 0.0), (0.78, 0.0), (0.8, 0.7), (0.6, 0.7)))]


def sampled_frames(path: Path, seconds: float, fps: float, start: float = 0.0) -> list[av.VideoFrame]:
    sampler, out = FrameSampler(fps), []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            if frame.time >= start + seconds:
                break
            if frame.time >= start and sampler.take(frame.time):
                out.append(frame)
    return out


def decoded_by_camera(path: Path, size: tuple[int, int], fps: float, zones: list[Zone]) -> tuple[int, int]:
    """(frames decoded, frames handed to inference) by a real file camera reading the whole clip."""
    decoded, sampled = [], []
    split = ZoneSplitter("cam", zones, size, {}) if zones else None
    source = CameraSource(SourceSettings("cam", str(path), False, size, fps, realtime=False),
                          SourceHooks(frame=sampled.append, decoded=lambda cam, ts: decoded.append(ts)), split)
    source.start()
    source.join(300)
    return len(decoded), len(sampled)


def best_ms_per_frame(work, frames: list, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for f in frames:
            work(f)
        best = min(best, time.process_time() - start)
    return best / len(frames) * 1000


def embed_ms(backbone, size: tuple[int, int]) -> float:
    """The backbone's CPU per frame at batch 8 (median of 5 batches after a warm-up)."""
    x = np.random.default_rng(0).integers(0, 255, (8, *size, 3), dtype=np.uint8)
    backbone.embed(x)
    times = []
    for _ in range(5):
        start = time.process_time()
        backbone.embed(x)
        times.append((time.process_time() - start) / 8 * 1000)
    return statistics.median(times)


def zone_costs(args, backbone) -> None:
    size = (args.size, args.size)
    frames = sampled_frames(ROOM, args.seconds, args.sample_fps)
    one = embed_ms(backbone, size)
    whole_decoded, whole_sampled = decoded_by_camera(ROOM, size, args.sample_fps, [])
    whole = best_ms_per_frame(lambda f: to_rgb(f, args.size, args.size), frames)
    print(f"baseline: one embedding (InceptionV3 {args.size}x{args.size}, batch 8) = {one:.1f} ms CPU per frame")
    print(f"whole frame : decoded {whole_decoded} frames, {whole_sampled} to inference; source work {whole:.2f} ms "
          f"per sampled frame; total {whole + one:.1f} ms")
    worst = 0.0
    for k in range(1, len(ZONES) + 1):
        decoded, sampled = decoded_by_camera(ROOM, size, args.sample_fps, ZONES[:k])
        split = ZoneSplitter("cam", ZONES[:k], size, {})
        work = best_ms_per_frame(lambda f, split=split: split(f, 0.0, 0.0), frames)
        total = work + k * one
        line = (f"{k} zone{'s' if k > 1 else ' '}     : decoded {decoded} frames "
                f"({'the same' if decoded == whole_decoded else 'MORE'}), {sampled} to inference; "
                f"source work {work:.2f} ms; total {total:.1f} ms; ")
        if k == 1:
            print(line + f"vs the whole frame {total - whole - one:+.2f} ms")
            continue
        per_zone = (total - whole - one) / (k - 1)
        worst = max(worst, per_zone / one)
        print(line + f"per extra zone {per_zone:.1f} ms = {per_zone / one:.3f} embeddings")
    print(f"zone cost: at most {worst:.3f} embeddings per extra zone (target: one embedding, plus its crop), "
          "no extra decode")


def gating_saving(args, backbone) -> float:
    size = (args.size, args.size)
    empty = sampled_frames(ROOM, 5.0, args.sample_fps, 0.0)
    person = sampled_frames(ROOM, 5.0, args.sample_fps, 96.0)
    scene = [rgb for part in (empty, empty, person, empty, empty) for rgb in (to_rgb(f, f.width, f.height) for f in part)]
    table = Zone.from_rect("table", (0.5, 0.0, 1.0, 1.0))
    detector = PersonDetector(MOVENET)
    results = {}
    for gated in (False, True):
        gates = {"table": PersonGate(detector, 2.0, 1.0)} if gated else {}
        split = ZoneSplitter("cam", [table], size, gates)
        start = time.process_time()
        pending, embedded = [], 0
        for i, rgb in enumerate(scene):
            t = i / args.sample_fps  # the clip's time is the clock
            pending += [f.rgb for f in split.split(rgb, t, t) if not f.gated]
            if len(pending) == 8 or (i == len(scene) - 1 and pending):
                backbone.embed(np.stack(pending))
                embedded += len(pending)
                pending = []
        results[gated] = (time.process_time() - start, embedded)
    (plain, n_plain), (gated_cpu, n_gated) = results[False], results[True]
    print(f"scene: {len(scene)} sampled frames, a person in {len(person) / len(scene):.0%} of them")
    print(f"without gating: {n_plain} embeddings, {plain:.2f} s CPU")
    print(f"with gating   : {n_gated} embeddings ({n_plain - n_gated} gated), {gated_cpu:.2f} s CPU "
          f"(MoveNet ~{detector.check(np.zeros((*detector.input_size, 3), np.uint8)).seconds * 1000:.0f} ms a check)")
    return gated_cpu / plain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size", type=int, default=299, help="backbone input side (default 299)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of the clip for the zone costs")
    parser.add_argument("--sample-fps", type=float, default=4.0)
    args = parser.parse_args()
    if not ROOM.is_file() or not MOVENET.is_file():
        print(f"needs {ROOM} and {MOVENET} (../shared/assets)", file=sys.stderr)
        return 2
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (a shared machine: compare "
          "ratios, not absolute times)")
    backbone = build_backbone("inception_v3", "none", (args.size, args.size))
    zone_costs(args, backbone)
    ratio = gating_saving(args, backbone)
    print(f"gating saves {1 - ratio:.0%} of the CPU")
    print(f"ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
