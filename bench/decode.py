#!/usr/bin/env python
"""Benchmark of decode cost per camera (not a test): what does one camera's H.264 cost the box to decode?

    python bench/decode.py [--seconds 20] [--repeat 3]

Input: Intel's room camera (real, 768x432 H.264, ../shared/assets), its frames re-encoded by the product's
H.264 writer (x264, veryfast, a camera-like capped bitrate) into a temporary folder as 25 fps streams at
1080p (4 Mbit/s), 720p (2 Mbit/s) and a 640x360 sub-stream (512 kbit/s): a keyframe a second and no B-frames
(as most IP cameras send); at 720p and 1080p also with 2 B-frames between P-frames, and with a keyframe every
6 frames (a camera set up for `skip_frames: nonkey` at 4 samples a second).

Each stream is decoded whole, --repeat times (best kept), in one process: CPU seconds (all threads) and wall.
Printed per row: CPU ms per frame of the stream, the % of one core one such camera costs at 25 fps, and the
ratio against the same resolution decoded on one thread with every frame (the daemon's default). Modes:
`1 thread` (the default for cameras), `threads AUTO` (frame + slice threads, FFmpeg's count), `nonref` (FFmpeg's
skip_frame=NONREF: B-frames left out), `nonkey` (keyframes only) and `no loop filt.` (a camera's
`skip_loop_filter: true`: every frame decoded without the deblocking filter).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from monitor.evidence.media import write_video
from monitor.model.frames import configure_decoder

ASSETS = Path(os.environ.get("HAR_MONITOR_ASSETS", Path(__file__).resolve().parents[1] / ".." / "shared" / "assets"))
ROOM = ASSETS / "videos" / "intel_one-by-one-person-detection.mp4"
FPS = 25
SIZES = {"1080p": (1920, 1080, 4000), "720p": (1280, 720, 2000), "360p": (640, 360, 512)}  # width, height, kbit/s


def source_frames(width: int, height: int, count: int) -> Iterator[np.ndarray]:
    """The room clip's frames (10 fps, real motion), scaled in FFmpeg; played at 25 fps they are a busier scene."""
    with av.open(str(ROOM)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == count:
                return
            yield frame.reformat(width, height, "rgb24").to_ndarray()


def encode(folder: Path, size: str, gop: int, bframes: int, seconds: float) -> Path:
    width, height, kbps = SIZES[size]
    path = folder / f"{size}-gop{gop}-b{bframes}.mp4"
    write_video(path, source_frames(width, height, round(seconds * FPS)), FPS, keyframe_interval=gop,
                bitrate_kbps=kbps, x264_params=f"bframes={bframes}")
    return path


def decode_cost(path: Path, threads: int, skip: str, repeat: int, skip_loop_filter: bool = False) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, frames decoded) of decoding the whole stream, best of `repeat`: the decoder
    set up as the daemon's cameras set it up (`threads` 1 or 0 = FFmpeg's choice)."""
    best = (float("inf"), float("inf"), 0)
    for _ in range(repeat):
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            configure_decoder(stream, threads, skip_loop_filter)
            stream.codec_context.skip_frame = skip
            cpu, wall = time.process_time(), time.perf_counter()
            n = sum(1 for _ in c.decode(stream))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if cpu < best[0]:
            best = (cpu, wall, n)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="of each 25 fps stream (default 20)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not ROOM.exists():
        print(f"skipped: {ROOM} is absent (shared assets)")
        return 0
    total = round(args.seconds * FPS)
    print(f"{'stream':8} {'mode':13} {'frames':>7} {'CPU ms/frame':>13} {'wall ms/frame':>14} "
          f"{'% core @25fps':>14} {'vs 1 thread':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in SIZES:
            plain = encode(folder, size, FPS, 0, args.seconds)
            rows = [("1 thread", plain, 1, "DEFAULT", False), ("threads AUTO", plain, 0, "DEFAULT", False),
                    ("no loop filt.", plain, 1, "DEFAULT", True)]
            if size != "360p":
                rows += [("nonref, B=2", encode(folder, size, FPS, 2, args.seconds), 1, "NONREF", False),
                         ("B=2, all", folder / f"{size}-gop{FPS}-b2.mp4", 1, "DEFAULT", False),
                         ("nonkey, GOP 6", encode(folder, size, 6, 0, args.seconds), 1, "NONKEY", False),
                         ("GOP 6, all", folder / f"{size}-gop6-b0.mp4", 1, "DEFAULT", False)]
            baseline = None
            for mode, path, threads, skip, skip_loop_filter in rows:
                cpu, wall, n = decode_cost(path, threads, skip, args.repeat, skip_loop_filter)
                per_frame = cpu / total * 1000  # per frame of the stream, decoded or skipped
                baseline = baseline or per_frame
                print(f"{size:8} {mode:13} {n:7d} {per_frame:13.2f} {wall / total * 1000:14.2f} "
                      f"{per_frame * FPS / 10:13.1f}% {per_frame / baseline:12.2f}", flush=True)
    print("% core @25fps: the share of one core one such camera costs to decode, 25 frames a second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
