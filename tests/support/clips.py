"""Real clips recomposed for zone and person tests (written to a temp dir; the shared originals stay untouched)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from monitor.demo.synthetic import write_video


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
