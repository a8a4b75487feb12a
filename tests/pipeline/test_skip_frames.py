"""Cheaper decoding: FFmpeg's skip_frame (used only where it costs no sampled frame) and skip_loop_filter."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from monitor.demo.synthetic import render_clip
from monitor.errors import UserError
from monitor.evidence.media import write_video
from monitor.messages import SampledFrame
from monitor.model.bundle import load_bundle
from monitor.pipeline.factory import source_settings
from monitor.pipeline.sources import CameraSource, SourceHooks, SourceSettings
from monitor.site.config import load_site
from support.sites import write_site
from support.waiting import wait_until

FPS = 12.0


def clip_with_keyframes(path: Path, every: int, seconds: float = 12.0) -> Path:
    """A walking figure (160x120, 12 fps) with a keyframe every `every` frames, as a camera's GOP setting."""
    write_video(path, render_clip("walk", round(seconds * FPS), (120, 160), 3, fps=FPS), FPS, keyframe_interval=every)
    return path


def play(path: Path, skip: str, skip_loop_filter: bool = False) -> tuple[list[SampledFrame], int]:
    """(frames sampled at 4 fps, frames decoded) reading the whole file."""
    frames: list[SampledFrame] = []
    decoded = []
    source = CameraSource(SourceSettings("cam", str(path), False, (75, 75), 4.0, realtime=False, skip_frames=skip,
                                         skip_loop_filter=skip_loop_filter),
                          SourceHooks(frame=frames.append, decoded=lambda cam, ts: decoded.append(ts)))
    source.start()
    try:
        wait_until(lambda: not source.running, 60, f"{path.name} to play to its end")
    finally:
        source.stop()
        source.join(5)
    return frames, len(decoded)


def test_keyframes_only_when_they_come_once_a_sample_period_the_same_samples_for_a_third_of_the_decode(tmp_path, caplog):
    clip = clip_with_keyframes(tmp_path / "gop3.mp4", every=3)  # a keyframe every 0.25 s: the 4 fps grid
    caplog.set_level(logging.INFO, logger="monitor.pipeline.sources")
    full, decoded_full = play(clip, "none")
    skipped, decoded_skipped = play(clip, "nonkey")
    assert decoded_full == 144 and len(full) == 48
    assert decoded_skipped <= 37 + 36 + 2, "every frame of the 3 s probe, then keyframes only (one or two in flight)"
    assert len(skipped) == len(full), "no sampled frame lost"
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(full, skipped, strict=True)), "the very same frames"
    assert "event=skip_frames_on camera=cam mode=nonkey" in caplog.text


@pytest.mark.parametrize("skip", ["nonkey", "nonref"])
def test_no_skipping_where_it_would_lose_samples(tmp_path, caplog, skip):
    clip = clip_with_keyframes(tmp_path / "gop12.mp4", every=12, seconds=6.0)  # a keyframe a second
    caplog.set_level(logging.INFO, logger="monitor.pipeline.sources")
    full, decoded_full = play(clip, "none")
    kept, decoded = play(clip, skip)
    assert len(kept) == len(full) == 24
    if skip == "nonkey":
        assert decoded == decoded_full, "keyframes a second apart cannot feed 4 samples a second: every frame decoded"
        assert "event=skip_frames_off camera=cam mode=nonkey" in caplog.text
    else:  # what x264 writes here: B-frames between P-frames, the others still come every 1/12 s
        assert decoded <= decoded_full and all(np.array_equal(a.rgb, b.rgb) for a, b in zip(full, kept, strict=True))


def test_without_the_loop_filter_every_frame_is_decoded_with_faint_differences_only(tmp_path):
    clip = clip_with_keyframes(tmp_path / "gop12.mp4", every=12, seconds=4.0)
    filtered, decoded_filtered = play(clip, "none")
    unfiltered, decoded = play(clip, "none", skip_loop_filter=True)
    assert decoded == decoded_filtered and len(unfiltered) == len(filtered) == 16
    diffs = [np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() for a, b in zip(filtered, unfiltered, strict=True)]
    assert max(diffs) > 0, "the decoder left its deblocking filter out"
    assert float(np.mean(diffs)) < 2.0, f"block edges, not another picture: {diffs}"


def test_skip_frames_is_a_camera_setting_checked_up_front(tmp_path, tiny_bundle, clip):
    path = write_site(tmp_path, tiny_bundle, [{"id": "sub", "url": str(clip), "skip_frames": "nonkey",
                                               "skip_loop_filter": True}, {"id": "main", "url": str(clip)}])
    site = load_site(path)
    bundle = load_bundle(tiny_bundle)
    settings = [source_settings(site, c, bundle, (75, 75)) for c in site.cameras]
    assert [(s.skip_frames, s.skip_loop_filter) for s in settings] == [("nonkey", True), ("none", False)]
    path.write_text(path.read_text().replace("skip_frames: nonkey", "skip_frames: all"))
    with pytest.raises(UserError, match="skip_frames"):
        load_site(path)
