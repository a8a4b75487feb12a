"""Benchmark of the training workflow (not a test).

1. Feature extraction (decode + sample + FFmpeg resize + backbone, as `har-monitor train` does it)
   in frames/s, against the raw backbone's best batched throughput measured in the same run.
   Target: ratio >= 0.8.
2. End-to-end time to train the synthetic dataset (render not included).

    python bench/train.py [--input 299] [--clips-per-class 16] [--frames 16]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from monitor.model.backbones import build_backbone
from monitor.training.features import ExtractStats, Sampling, extract
from monitor.training.train import TrainOptions, train


def raw_throughput(backbone, seconds: float = 4.0) -> tuple[float, int]:
    """Best frames/s of the backbone alone over batch sizes 1, 8, 16, 32."""
    h, w = backbone.input_size
    best = (0.0, 0)
    for batch in (1, 8, 16, 32):
        x = np.random.default_rng(0).integers(0, 255, (batch, h, w, 3), dtype=np.uint8)
        backbone.embed(x)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            backbone.embed(x)
            n += batch
        best = max(best, (n / (time.perf_counter() - start), batch))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=int, default=299)
    parser.add_argument("--clips-per-class", type=int, default=16)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    from test_training import make_clips

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        data = make_clips(work / "data", per_class=args.clips_per_class, frames=30, size=(240, 320))
        clips = sorted(data.glob("*/*.mp4"))
        backbone = build_backbone("inception_v3", "none", (args.input, args.input))
        raw, batch = raw_throughput(backbone)
        print(f"raw backbone: {raw:.1f} frames/s (best batch {batch}), InceptionV3 {args.input}x{args.input}")

        extract(backbone, clips[:2], Sampling(args.frames), None)  # warm up
        stats = ExtractStats()
        start = time.perf_counter()
        extract(backbone, clips, Sampling(args.frames), None, stats=stats)
        elapsed = time.perf_counter() - start
        extraction = stats.backbone_frames / elapsed
        print(f"feature extraction: {len(clips)} clips, {stats.backbone_frames} frames in {elapsed:.1f} s = "
              f"{extraction:.1f} frames/s (uniform {args.frames} frames per clip, batch = one clip)")

        start = time.perf_counter()
        result = train(TrainOptions(data=data, out=work / "model", backbone="inception_v3", weights="none",
                                    input_size=(args.input, args.input), frames=args.frames, epochs=40,
                                    cache_dir=work / "cache"))
        print(f"end-to-end training ({len(clips)} clips, augmentation x3, cold cache): "
              f"{time.perf_counter() - start:.1f} s, test accuracy {result.report['accuracy']:.2f} "
              "(random backbone weights: accuracy is not the point here)")
        start = time.perf_counter()
        train(TrainOptions(data=data, out=work / "model2", backbone="inception_v3", weights="none",
                           input_size=(args.input, args.input), frames=args.frames, head="lstm", epochs=40,
                           cache_dir=work / "cache"))
        print(f"second head on the same data (warm cache): {time.perf_counter() - start:.1f} s")
        print(f"ratio: {extraction / raw:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
