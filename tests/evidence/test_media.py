"""The one H.264 writer: what evidence clips, synthetic clips and the benchmark's camera clips ask of it."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from monitor.demo.synthetic import render_clip
from monitor.evidence.media import write_video

SIZE = (120, 160)


def decode(path: Path) -> tuple[np.ndarray, list[bool], list[float]]:
    """All frames (RGB), per packet whether it is a keyframe, and each frame's time in seconds."""
    with av.open(str(path)) as c:
        keys = [p.is_keyframe for p in c.demux(video=0) if p.size]
    with av.open(str(path)) as c:
        decoded = list(c.decode(video=0))
    return np.stack([f.to_ndarray(format="rgb24") for f in decoded]), keys, [float(f.time) for f in decoded]


def blur(frames: np.ndarray) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f, (5, 5), 0) for f in frames]).astype(int)


def test_round_trip_with_a_keyframe_every_second(tmp_path):
    frames = render_clip("wave", 25, SIZE, seed=0)
    path = tmp_path / "sub" / "dir" / "clip.mp4"
    assert write_video(path, frames, 10, keyframe_interval=10) == 25
    decoded, keys, times = decode(path)
    assert decoded.shape == frames.shape
    # Lossy: the encoder drops most of the per-pixel sensor noise, the picture survives.
    assert np.abs(decoded.astype(int) - frames).mean() < 6
    assert np.abs(blur(decoded) - blur(frames)).mean() < 3
    assert [i for i, k in enumerate(keys) if k] == [0, 10, 20]
    assert times == pytest.approx([i / 10 for i in range(25)])
    assert [p.name for p in path.parent.iterdir()] == ["clip.mp4"], "no temp file left"


def test_frames_keep_their_own_times_and_metadata(tmp_path):
    """Evidence clips: frames at their real spacing (a camera's jitter and gaps), not a nominal rate."""
    frames = render_clip("idle", 5, SIZE, seed=1)
    times = [1_700_000_000.0, 1_700_000_000.2, 1_700_000_000.45, 1_700_000_001.5, 1_700_000_001.7]
    write_video(tmp_path / "e.mp4", frames, 5, times=times, threads=1, metadata={"comment": "episode=ep-1"})
    _, _, got = decode(tmp_path / "e.mp4")
    assert got == pytest.approx([t - times[0] for t in times], abs=0.002)
    with av.open(str(tmp_path / "e.mp4")) as c:
        assert c.metadata["comment"] == "episode=ep-1"


def test_a_camera_like_capped_bitrate_from_a_generator(tmp_path):
    """The benchmark's cameras: frames streamed from a generator, a GOP, no B-frames, a capped bitrate."""
    rng = np.random.default_rng(0)
    noisy = (rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8) for _ in range(50))
    low, high = tmp_path / "low.mp4", tmp_path / "high.mp4"
    write_video(low, noisy, 25, keyframe_interval=25, bitrate_kbps=100, x264_params="bframes=0")
    write_video(high, (rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8) for _ in range(50)), 25,
                keyframe_interval=25, bitrate_kbps=2000, x264_params="bframes=0")
    _, keys, _ = decode(low)
    assert [i for i, k in enumerate(keys) if k] == [0, 25]
    assert low.stat().st_size < high.stat().st_size / 3, "the bitrate cap holds on incompressible noise"


def test_odd_sizes_are_trimmed_and_bad_input_refused(tmp_path):
    frames = render_clip("idle", 3, (61, 81), seed=0)
    write_video(tmp_path / "odd.mp4", frames, 29.97)
    decoded, _, _ = decode(tmp_path / "odd.mp4")
    assert decoded.shape == (3, 60, 80, 3)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "bad.mp4", frames.astype(np.float32), 10)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]


def test_a_failure_midway_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, render_clip("idle", 3, SIZE, seed=0), 10)
    before = path.read_bytes()

    def frames_then_failure():
        yield from render_clip("wave", 3, SIZE, seed=0)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_video(path, frames_then_failure(), 10)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
