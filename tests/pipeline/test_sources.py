"""File cameras on real codecs: native-rate playback, looping, corrupt data, real clips."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from monitor.demo import synthetic
from monitor.messages import SampledFrame
from monitor.model.frames import read_frames
from monitor.ops.logs import setup_logging
from monitor.pipeline.sources import CameraSource, SourceHooks, SourceSettings
from support.assets import asset
from support.secrets import assert_only_redacted, passwords
from support.videos import write_tiny_video
from support.waiting import wait_until


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """2 s of a walking figure at 12 fps, H.264."""
    path = tmp_path_factory.mktemp("src") / "walk.mp4"
    synthetic.write_video(path, synthetic.render_clip("walk", 24, (240, 320), 1), 12)
    return path


def ffmpeg_threads() -> int:
    """FFmpeg's decoder threads alive in this process (FFmpeg names them av:<codec>:...)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text())
        except OSError:
            continue  # the thread ended meanwhile
    return sum(name.startswith("av:") for name in names)


class Recorder:
    def __init__(self):
        self.frames: list[SampledFrame] = []
        self.errors = 0
        self.ups: list[bool] = []
        self.ffmpeg_workers = 0  # the most FFmpeg decoder threads seen while frames arrived

    def hooks(self) -> SourceHooks:
        def error(_):
            self.errors += 1

        def frame(f: SampledFrame) -> None:
            self.frames.append(f)
            self.ffmpeg_workers = max(self.ffmpeg_workers, ffmpeg_threads())
        return SourceHooks(frame=frame, decode_error=error, up=lambda _, up: self.ups.append(up))


def play(location: Path, seconds: float | None = None, **settings) -> Recorder:
    rec = Recorder()
    source = CameraSource(SourceSettings("cam", str(location), False, (75, 75), **settings), rec.hooks())
    source.start()
    source.join(seconds if seconds is not None else 30)
    source.stop()
    source.join(5)
    return rec


def test_a_file_plays_at_its_native_rate_like_a_camera(clip):
    start = time.monotonic()
    rec = play(clip, sample_fps=4.0)
    elapsed = time.monotonic() - start
    assert 1.6 < elapsed < 6, "2 s of video take about 2 s"
    assert len(rec.frames) == 8, "4 fps sampled from 12 fps timestamps"
    assert rec.frames[0].rgb.shape == (75, 75, 3) and rec.frames[0].rgb.dtype == np.uint8
    gaps = np.diff([f.mono for f in rec.frames])
    assert gaps.mean() > 0.15, "frames are spread over time, not delivered in a burst"
    assert rec.ups == [True, False], "up while playing, down at the end"


def test_realtime_false_reads_as_fast_as_possible(clip):
    start = time.monotonic()
    rec = play(clip, sample_fps=12.0, realtime=False)
    assert time.monotonic() - start < 1.5
    assert len(rec.frames) == 24


def test_loop_restarts_the_file_and_keeps_time_going(clip):
    rec = play(clip, seconds=5.0, sample_fps=4.0, loop=True)
    assert 16 <= len(rec.frames) <= 24, "about 5 s worth at 4 fps across loops"
    assert np.all(np.diff([f.mono for f in rec.frames]) > 0)


def test_corrupt_packets_are_counted_and_skipped(clip, tmp_path):
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(0)
    third = len(data) // 3
    data[third:2 * third] = rng.integers(0, 255, third, dtype=np.uint8).tobytes()  # the middle third is garbage
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    rec = play(bad, sample_fps=12.0, realtime=False)
    assert rec.errors >= 1
    assert 8 <= len(rec.frames) < 24, "the intact frames still come through"


def test_one_decode_thread_spawns_no_ffmpeg_workers_and_gives_the_same_frames(clip):
    """decode_threads 1 (cameras' default) decodes on the reader thread alone: the least CPU per frame."""
    one = play(clip, sample_fps=12.0, realtime=False, decode_threads=1)
    two = play(clip, sample_fps=12.0, realtime=False, decode_threads=2)
    assert one.ffmpeg_workers == 0, "no FFmpeg worker threads"
    assert two.ffmpeg_workers >= 1, "frame threads when asked for"
    assert np.array_equal(np.stack([f.rgb for f in one.frames]), np.stack([f.rgb for f in two.frames])), \
        "the same pixels either way"


@pytest.mark.parametrize("name", ["hmdb51_RATRACE_wave_f_nm_np1_fr_goo_37.avi", "intel_worker-zone-detection.mp4"])
def test_real_clips_are_sampled_by_timestamp(name):
    frames = read_frames(str(asset("videos", name)), (96, 128), 5.0)
    import av

    with av.open(str(asset("videos", name))) as c:
        duration = c.streams.video[0].frames / float(c.streams.video[0].average_rate)
    assert frames.shape[1:] == (96, 128, 3)
    assert abs(len(frames) - duration * 5) <= 2


def log_lines(capsys, seen: list[str]) -> str:
    """Everything logged so far (setup_logging writes to whatever stderr is now)."""
    seen.append(capsys.readouterr().err)
    return "".join(seen)


def test_a_video_too_small_for_any_model_is_down_with_its_reason_and_backs_off(tmp_path, capsys):
    """A 1x1 camera never goes up (no frames, no flapping); its retries back off instead of looping tightly."""
    setup_logging("info")
    tiny = write_tiny_video(tmp_path / "tiny.mp4", 1, 1)
    seen: list[str] = []
    rec = Recorder()
    source = CameraSource(SourceSettings("tiny", str(tiny), False, (75, 75), 5.0, loop=True,
                                         backoff_initial=0.2, backoff_max=1.6), rec.hooks())
    source.start()
    wait_until(lambda: log_lines(capsys, seen).count("event=camera_down") >= 4, 60, "four camera_down lines")
    source.stop()
    source.join(5)
    downs = [line for line in "".join(seen).splitlines() if "event=camera_down" in line]
    assert all("1x1" in line and "too small" in line for line in downs), downs[0]
    assert rec.frames == [] and True not in rec.ups, "never up, never a frame"
    delays = [float(re.search(r"retry_in_s=([0-9.]+)", line).group(1)) for line in downs]
    assert delays[3] > 2 * delays[0], f"the retries back off: {delays}"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=passwords())
def test_camera_down_lines_never_show_the_password(capsys, password):
    """The daemon's camera_down line (its url and its reason, FFmpeg's error) for an unreachable camera."""
    setup_logging("info")
    capsys.readouterr()
    seen: list[str] = []
    url = f"rtsp://viewer:{password}@127.0.0.1:1/stream"
    source = CameraSource(SourceSettings("door", url, True, (75, 75), 5.0, open_timeout=2, backoff_initial=30,
                                         backoff_max=30), SourceHooks(frame=lambda f: None))
    source.start()
    wait_until(lambda: "event=camera_down" in log_lines(capsys, seen), 30, "camera_down")
    source.stop()
    source.join(5)
    assert "reason=" in "".join(seen)
    assert_only_redacted("".join(seen), "rtsp://viewer:***@127.0.0.1:1/stream")
