"""File cameras on real codecs: native-rate playback, looping, corrupt data, real clips."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from monitor.messages import SampledFrame
from monitor.model.frames import read_frames
from monitor.ops.logs import setup_logging
from monitor.pipeline.sources import CameraSource, SourceHooks, SourceSettings
from support.assets import asset
from support.clips import write_clip
from support.examples import examples
from support.secrets import assert_only_redacted, passwords
from support.videos import write_tiny_video
from support.waiting import wait_until


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


def play(location: Path, until: Callable[[Recorder], bool] | None = None, **settings) -> Recorder:
    """Play a file camera until it ends by itself (or, with `until`, until that holds), with a generous ceiling."""
    rec = Recorder()
    source = CameraSource(SourceSettings("cam", str(location), False, (75, 75), **settings), rec.hooks())
    source.start()
    try:
        if until is None:
            wait_until(lambda: not source.running, 60, f"{location.name} to play to its end")
        else:
            wait_until(lambda: until(rec), 60, f"{location.name}: the frames asked for")
    finally:
        source.stop()
        source.join(5)
    return rec


def test_a_file_plays_at_its_native_rate_like_a_camera(tmp_path):
    second = write_clip(tmp_path / "second.mp4", n_frames=12)  # 1 s at 12 fps: pacing shows as well as in 2 s
    rec = play(second, sample_fps=8.0)
    assert len(rec.frames) == 8, "8 fps sampled from 12 fps timestamps"
    assert rec.frames[0].rgb.shape == (75, 75, 3) and rec.frames[0].rgb.dtype == np.uint8
    # Paced, not a burst: the 8 frames of 1 s arrive over at least the 11/12 s between the first and the last
    # (a loaded machine only spreads them more).
    assert rec.frames[-1].mono - rec.frames[0].mono >= 0.85
    assert rec.ups == [True, False], "up while playing, down at the end"


def test_realtime_false_reads_as_fast_as_possible(tmp_path):
    """A minute of video (30 frames, one every 2 s) is read whole well before a paced read could end."""
    minute = write_clip(tmp_path / "minute.mp4", "idle", n_frames=30, fps=0.5)
    rec = Recorder()
    source = CameraSource(SourceSettings("cam", str(minute), False, (75, 75), sample_fps=0.5, realtime=False),
                          rec.hooks())
    source.start()
    source.join(30)  # half the video's length: a paced read would have 15 frames by then
    source.stop()
    assert len(rec.frames) == 30 and rec.ups == [True, False]


def test_loop_restarts_the_file_and_keeps_time_going(clip):
    rec = play(clip, until=lambda r: len(r.frames) >= 20, sample_fps=4.0, loop=True, realtime=False)
    assert len(rec.frames) >= 20, "more than two passes of the 2 s clip at 4 fps"
    assert np.all(np.diff([f.mono for f in rec.frames]) > 0), "time goes on across loops"
    assert rec.ups[:1] == [True] and False not in rec.ups[:-1], "a loop is not a reconnect: the camera stays up"


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
                                         backoff_initial=0.1, backoff_max=1.6), rec.hooks())
    source.start()
    wait_until(lambda: log_lines(capsys, seen).count("event=camera_down") >= 4, 60, "four camera_down lines")
    source.stop()
    source.join(5)
    downs = [line for line in "".join(seen).splitlines() if "event=camera_down" in line]
    assert all("1x1" in line and "too small" in line for line in downs), downs[0]
    assert rec.frames == [] and True not in rec.ups, "never up, never a frame"
    delays = [float(re.search(r"retry_in_s=([0-9.]+)", line).group(1)) for line in downs]
    assert delays[3] > 2 * delays[0], f"the retries back off: {delays}"


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
