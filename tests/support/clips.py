"""Synthetic video files for tests: the demo's stick figure, written by the product's one H.264 writer."""

from __future__ import annotations

from pathlib import Path


def write_clip(path: Path, action: str = "walk", n_frames: int = 24, size: tuple[int, int] = (120, 160),
               seed: int = 1, fps: float = 12.0, look_seed: int | None = None) -> Path:
    """`n_frames` of one action at `fps` (default: 2 s of walking, 160x120), a keyframe every second."""
    from monitor.demo.synthetic import render_clip
    from monitor.evidence.media import write_video

    frames = render_clip(action, n_frames, size, seed, fps=fps, look_seed=look_seed)
    write_video(path, frames, fps, keyframe_interval=max(1, round(fps)))
    return path
