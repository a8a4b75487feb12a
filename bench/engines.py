#!/usr/bin/env python
"""Frames per second of the backbone on each engine: TensorFlow (the reference) against OpenVINO fp32, bf16, int8.

    python bench/engines.py [--size 299] [--batches 1,8,16] [--rounds 3] [--clip VIDEO] [--hints]

InceptionV3 with random weights (speed does not depend on the weights' values), converted exactly as
`har-monitor models optimize` converts a bundle's backbone (the same functions: preprocessing inside the
graph, uint8 frames in; int8 quantized by NNCF on real frames of a shared clip when ../shared/assets has it,
else on synthetic ones) and compiled as the daemon compiles it. Every engine runs the same frames; within a
batch size the engines take turns, round after round, so that a machine shared with other work slows all
alike. The ratio is against TensorFlow measured in the same run. `--hints` also runs fp32 and int8
under the other performance hint (LATENCY: one stream on every core; THROUGHPUT: a stream per core or two, the batch
split over them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CLIP = (REPO / ".." / "shared" / "assets" / "videos" / "intel_one-by-one-person-detection.mp4").resolve()
Embed = Callable[[np.ndarray], object]


def frames(clip: Path, size: int, n: int) -> tuple[np.ndarray, str]:
    from monitor.model.frames import read_frames

    if clip.is_file():
        got = read_frames(str(clip), (size, size), 1.0)
        if len(got) >= n:
            return got[np.linspace(0, len(got) - 1, n).round().astype(int)], clip.name
    from monitor.demo.synthetic import render_clip

    return render_clip("walk", n, (size, size), 1), "synthetic"


def timed(runs: dict[str, Embed], batch: np.ndarray, rounds: int) -> dict[str, float]:
    """frames/s of each run on `batch`: a warm-up each, then `rounds` turns in which every run goes once."""
    spent = dict.fromkeys(runs, 0.0)
    for run in runs.values():
        run(batch)
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(batch)
            spent[name] += time.perf_counter() - start
    return {name: len(batch) * rounds / seconds for name, seconds in spent.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clip", type=Path, default=CLIP, help="real frames to calibrate int8 on (default: the shared "
                    "Intel clip; synthetic frames when absent)")
    ap.add_argument("--hints", action="store_true", help="also compare OpenVINO's LATENCY and THROUGHPUT hints")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import openvino as ov

    from monitor.model import engines
    from monitor.model.backbones import keras_graph
    from monitor.training.optimize import convert

    batches = [int(b) for b in args.batches.split(",")]
    size = args.size
    calib, source = frames(args.clip, size, 64)
    graph = keras_graph("inception_v3", "none", (size, size))
    fp32 = convert(graph.function, "fp32", calib)
    int8 = convert(graph.function, "int8", calib)
    compiled = {"fp32": engines.openvino_compile(fp32, "fp32"), "bf16": engines.openvino_compile(fp32, "bf16"),
                "int8": engines.openvino_compile(int8, "int8")}
    runs: dict[str, Embed] = {"tensorflow fp32": lambda x: graph.function(x).numpy()}
    runs |= {f"openvino {p}": engines.openvino_embed(c) for p, c in compiled.items()}
    if args.hints:  # the product's split over streams, under the other hint
        other = "LATENCY" if engines.PERFORMANCE_HINT == "THROUGHPUT" else "THROUGHPUT"
        for p, model in (("fp32", fp32), ("int8", int8)):
            runs[f"openvino {p} {other}"] = engines.openvino_embed(engines.openvino_compile(model, p, other))
    amx = "amx" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
    print(f"InceptionV3 {size}x{size}, random weights; int8 calibrated on 64 frames of {source}; "
          f"{os.cpu_count()} CPUs, AMX: {'yes' if amx else 'no'}; OpenVINO {ov.__version__} "
          f"(hint {engines.PERFORMANCE_HINT} unless named)")
    print(f"{'engine':<38} {'batch':>5} {'frames/s':>9} {'ms/frame':>9} {'vs TF':>6}")
    pool = np.concatenate([calib] * (max(batches) // len(calib) + 1))
    for b in batches:
        fps = timed(runs, pool[:b], args.rounds)
        for name, value in fps.items():
            print(f"{name:<38} {b:>5} {value:>9.1f} {1000 / value:>9.1f} {value / fps['tensorflow fp32']:>5.2f}x",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
