"""Real media files that are wrong in ways a camera or a clip can be: too small, or without video."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_tiny_video(path: Path, width: int, height: int, frames: int = 10) -> Path:
    """A real video too small to show anything (MPEG-4 Part 2: H.264 refuses odd sizes)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 20 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_audio_only(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """A real file with one audio stream (a 440 Hz tone, AAC) and no video: e.g. a meeting recording."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        t = np.arange(int(seconds * rate)) / rate
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
