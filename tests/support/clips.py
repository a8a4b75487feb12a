"""Video files for tests, written by the product's one H.264 writer: the demo's stick figure, and real
clips recomposed for zone and person tests (in a temp dir; the shared originals stay untouched)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from monitor.evidence.media import write_video


def write_clip(path: Path, action: str = "walk", n_frames: int = 24, size: tuple[int, int] = (120, 160),
               seed: int = 1, fps: float = 12.0, look_seed: int | None = None) -> Path:
    """`n_frames` of one action at `fps` (default: 2 s of walking, 160x120), a keyframe every second."""
    from monitor.demo.synthetic import render_clip

    frames = render_clip(action, n_frames, size, seed, fps=fps, look_seed=look_seed)
    write_video(path, frames, fps, keyframe_interval=max(1, round(fps)))
    return path


def decode(path: Path, size: tuple[int, int] | None = None, start: float = 0.0, end: float = float("inf")) -> np.ndarray:
    """Frames between start and end seconds, RGB, resized to size (width, height) if given."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time >= end:
                break
            if frame.time is not None and start <= frame.time:
                rgb = frame.to_ndarray(format="rgb24")
                frames.append(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if size else rgb)
    return np.stack(frames)


def side_by_side(left: Path, right: Path, out: Path, fps: float, size: tuple[int, int] = (320, 240)) -> Path:
    """Two clips next to each other, each at `size`, as long as the shorter one."""
    a, b = decode(left, size), decode(right, size)
    n = min(len(a), len(b))
    write_video(out, np.concatenate([a[:n], b[:n]], axis=2), fps)
    return out


def segments(path: Path, spans: list[tuple[float, float]], out: Path, fps: float) -> Path:
    """Spans (start, end seconds) of one clip played one after the other."""
    write_video(out, np.concatenate([decode(path, None, start, end) for start, end in spans]), fps)
    return out
