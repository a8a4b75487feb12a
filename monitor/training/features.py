"""Frames and features of labelled clips, with augmentation and an on-disk feature cache.

Frames come from `monitor.sources.read_frames`: the same sampling and FFmpeg resize as a live
camera. Features are cached per clip, keyed by backbone, weights, input size, sampling and
augmentation variant, so training another head on the same data does not run the backbone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from monitor.fileio import atomic_output
from monitor.model.backbones import Backbone
from monitor.model.frames import count_frames, read_frames
from monitor.ops.logs import kv

log = logging.getLogger(__name__)
VARIANTS = ("orig", "flip_crop", "speed")  # augmentation variants of a training clip


@dataclass(frozen=True)
class Sampling:
    """`fps` set: every frame at that rate (windows like the daemon's). Else `frames` spread evenly over the clip."""

    frames: int
    fps: float | None = None

    def describe(self) -> str:
        return f"fps={self.fps}" if self.fps else f"uniform={self.frames}"


@dataclass
class ExtractStats:
    backbone_frames: int = 0
    cache_hits: int = 0
    skipped: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # skipped clip -> why it could not be read


def uniform_indices(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over n frames (repeats when the clip is shorter than k)."""
    return np.linspace(0, n - 1, k).round().astype(int) if n else np.zeros(0, int)


def clip_frames(path: Path, size: tuple[int, int], sampling: Sampling, variant: str = "orig",
                rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 [N, H, W, 3] of a video or image; `variant` applies training augmentation."""
    rng = rng or np.random.default_rng(0)
    if path.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".webp"}:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("unreadable image")
        frames = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), size[::-1], interpolation=cv2.INTER_AREA)[None]
    else:
        speed = rng.uniform(0.8, 1.25) if variant == "speed" else 1.0  # frame-rate jitter
        if sampling.fps:
            frames = read_frames(str(path), size, sampling.fps * speed)
        else:  # N frames spread over the clip (a shorter span of it when sped up); only those are resized
            total = count_frames(str(path))
            span = min(total, max(1, round(total / speed)))
            start = int(rng.integers(0, total - span + 1)) if span < total else 0
            frames = read_frames(str(path), size, indices=start + uniform_indices(span, sampling.frames))
        if not len(frames):
            raise ValueError("no decodable frame")
    if variant == "flip_crop":
        frames = _crop(frames[:, :, ::-1], rng)
    return np.ascontiguousarray(frames)


def _crop(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random 80-95% crop resized back: the same crop for every frame of the clip."""
    h, w = frames.shape[1:3]
    scale = rng.uniform(0.8, 0.95)
    ch, cw = int(h * scale), int(w * scale)
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.stack([cv2.resize(f[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR) for f in frames])


class FeatureCache:
    def __init__(self, root: Path, backbone_key: str):
        self.root = root
        self.backbone_key = backbone_key

    def path(self, clip: Path, sampling: Sampling, variant: str, seed: int) -> Path:
        stat = clip.stat()
        key = json.dumps([self.backbone_key, str(clip.resolve()), stat.st_size, stat.st_mtime_ns,
                          sampling.describe(), variant, seed if variant != "orig" else 0])
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.npy"


def backbone_key(name: str, weights: str, input_size: tuple[int, int], seed: int) -> str:
    """Identifies what a backbone computes: a weights file by its content, not its name."""
    from monitor.fileio import sha256_file

    ident = weights if weights in ("imagenet", "none") else sha256_file(Path(weights))
    return f"{name}:{ident}:{input_size[0]}x{input_size[1]}:{seed if weights == 'none' else ''}"


def extract(backbone: Backbone, clips: list[Path], sampling: Sampling, cache: FeatureCache | None,
            variant: str = "orig", seed: int = 0, batch: int = 32, stats: ExtractStats | None = None,
            progress=None) -> list[np.ndarray | None]:
    """Features [N, D] per clip (None for an unreadable clip: skipped with a warning and counted)."""
    stats = stats if stats is not None else ExtractStats()
    out: list[np.ndarray | None] = []
    for i, clip in enumerate(clips):
        cached = cache.path(clip, sampling, variant, seed + i) if cache else None
        if cached is not None and cached.is_file():
            out.append(np.load(cached))
            stats.cache_hits += 1
        else:
            out.append(_embed_clip(backbone, clip, sampling, variant, seed + i, batch, stats))
            if cached is not None and out[-1] is not None:
                with atomic_output(cached) as tmp:  # a crash never leaves a cache entry that loads wrong
                    np.save(tmp, out[-1])
        if progress is not None:
            progress()
    return out


def _embed_clip(backbone: Backbone, clip: Path, sampling: Sampling, variant: str, seed: int, batch: int,
                stats: ExtractStats) -> np.ndarray | None:
    try:
        frames = clip_frames(clip, backbone.input_size, sampling, variant, np.random.default_rng(seed))
    except Exception as exc:  # av errors, unreadable files: skip the clip, never the run
        log.warning(kv(event="clip_skipped", clip=str(clip), reason=f"{type(exc).__name__}: {exc}"))
        stats.skipped.append(str(clip))
        stats.reasons[str(clip)] = str(exc) or type(exc).__name__
        return None
    stats.backbone_frames += len(frames)
    return np.concatenate([backbone.embed(frames[i:i + batch]) for i in range(0, len(frames), batch)])
