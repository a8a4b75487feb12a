"""Motion gating: unchanged frames reuse their stream's last embedding; a change is embedded at once."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import yaml

from monitor.demo.synthetic import render_scene
from monitor.errors import UserError
from monitor.evidence.media import write_video
from monitor.messages import NO_PIXELS, Embedding, SampledFrame
from monitor.model.backbones import Backbone
from monitor.pipeline.embedder import Embedder
from monitor.pipeline.factory import motion_settings
from monitor.pipeline.framequeue import FrameQueues
from monitor.pipeline.motion import MotionGate, MotionSettings
from monitor.pipeline.sources import CameraSource, SourceHooks, SourceSettings
from monitor.site.config import load_site
from support.sites import write_site
from support.waiting import wait_until

FPS = 12.0
SIZE = (120, 160)


def still_walk_still(path: Path, still: float = 2.0, walk: float = 2.0) -> Path:
    """A camera that sees nothing move, then a person walk, then nothing move again (frozen frames: a still scene)."""
    moving = render_scene([("walk", walk)], FPS, SIZE, seed=7)
    n = round(still * FPS)
    frames = np.concatenate([np.repeat(moving[:1], n, 0), moving, np.repeat(moving[-1:], n, 0)])
    write_video(path, frames, FPS, keyframe_interval=round(FPS))
    return path


def play(path: Path, motion: MotionSettings | None) -> list[SampledFrame]:
    frames: list[SampledFrame] = []
    source = CameraSource(SourceSettings("cam", str(path), False, (75, 75), 4.0, realtime=False),
                          SourceHooks(frame=frames.append), motion=motion)
    source.start()
    try:
        wait_until(lambda: not source.running, 60, f"{path.name} to play to its end")
    finally:
        source.stop()
        source.join(5)
    return frames


def frame(i: float, value: int = 0, zone: str = "", reuse_of: float | None = None, camera: str = "cam") -> SampledFrame:
    return SampledFrame(camera, i, i, np.full((75, 75, 3), value, np.uint8), zone, reuse_of=reuse_of)


def test_a_static_scene_reuses_and_the_first_frame_after_a_change_is_embedded(tmp_path):
    clip = still_walk_still(tmp_path / "still-walk-still.mp4")
    gated = play(clip, MotionSettings())
    plain = play(clip, None)
    assert len(gated) == len(plain) == 24, "gating drops no frame: every sampled frame still goes on"
    assert not any(f.reuse_of is not None for f in plain), "gating off: every frame is embedded"
    reused = [f.reuse_of is not None for f in gated]
    # at 4 fps: frames 0-8 show the still scene (the walk starts from it), 9-16 the walk, 16-23 its last frame
    assert reused == [False] + [True] * 8 + [False] * 8 + [True] * 7
    # a keyframe of the still scene differs by about 1 grey level on average (coding noise): not a change
    moved = [True] + [np.abs(a.rgb.astype(int) - b.rgb).mean() > 3 for a, b in itertools.pairwise(plain)]
    assert reused == [not m for m in moved], "a frame that moved is embedded at once (none delayed), a still one reused"
    by_mono = {f.mono: f for f in gated}
    for f in gated:
        if f.reuse_of is not None:
            ref = by_mono[f.reuse_of]
            assert ref.reuse_of is None, "a frame reuses an embedded frame's vector"
            assert np.abs(f.rgb.astype(int) - ref.rgb).mean() < 2, "and only when it looks the same"


def test_small_slow_changes_add_up_and_a_refresh_bounds_reuse():
    gate = MotionGate(MotionSettings(pixel_threshold=10, min_changed=0.003, refresh_seconds=5.0))
    base = np.full((75, 75, 3), 100, np.uint8)
    frames = []
    for i in range(6):  # a patch brightening by 4 levels a frame: each step under the threshold
        rgb = base.copy()
        rgb[20:50, 20:50] += 4 * i
        frames.append(gate(SampledFrame("cam", i, float(i), rgb)))
    assert [f.reuse_of for f in frames] == [None, 0.0, 0.0, None, 3.0, 3.0], "compared with the last embedded frame"
    late = gate(SampledFrame("cam", 9, 9.0, frames[-1].rgb))
    assert late.reuse_of is None, "after refresh_seconds of reuse a frame is embedded anyway"


def test_each_zone_is_gated_on_its_own_and_person_gated_frames_pass():
    gate = MotionGate(MotionSettings())
    assert gate(frame(0, 10, "door")).reuse_of is None and gate(frame(0, 10, "bench")).reuse_of is None
    assert gate(frame(1, 10, "door")).reuse_of == 0.0
    assert gate(frame(1, 200, "bench")).reuse_of is None, "a change in one zone embeds that zone only"
    nobody = SampledFrame("cam", 2, 2.0, NO_PIXELS, "door", gated=True)
    assert gate(nobody) is nobody


class CountingBackbone:
    """A real (tiny) backbone: each frame's mean colour, counting the frames it ran on."""

    def __init__(self) -> None:
        self.frames = 0
        self.backbone = Backbone("mean-colour", (75, 75), 3, self.embed)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        self.frames += len(batch)
        return batch.mean(axis=(1, 2)).astype(np.float32)


def embed_all(frames: list[SampledFrame]) -> tuple[list[Embedding], int]:
    counting = CountingBackbone()
    queues = FrameQueues(["cam", "cam-2"], 64)
    out: list[Embedding] = []
    embedder = Embedder(counting.backbone, queues, max_batch=4, max_wait_ms=0, emit=out.extend)
    for f in frames:
        queues.put(f)
    embedder.start()
    embedder.stop()
    embedder.join(30)
    return out, counting.frames


def test_the_embedder_reuses_the_named_frames_vector_without_the_backbone():
    frames = [frame(0, 10), frame(1, 11, reuse_of=0.0), frame(2, 12, reuse_of=0.0),
              frame(0, 50, camera="cam-2"), frame(3, 90), frame(4, 91, reuse_of=3.0), frame(5, 92, reuse_of=3.0)]
    out, ran = embed_all(frames)
    assert ran == 3, "only the changed frames ran through the backbone"
    cam = [e for e in out if e.camera == "cam"]
    assert [e.reused for e in cam] == [False, True, True, False, True, True]
    assert [float(e.vector[0]) for e in cam] == [10, 10, 10, 90, 90, 90], "a reused frame gets its reference's vector"
    assert [e.ts for e in cam] == [0, 1, 2, 3, 4, 5], "and still counts as a frame of the stream, in order"


def test_a_frame_whose_reference_was_dropped_is_embedded_and_stands_for_it():
    frames = [frame(0, 10), frame(4, 30, reuse_of=3.0), frame(5, 31, reuse_of=3.0), frame(6, 32, reuse_of=3.0)]
    out, ran = embed_all(frames)  # frame 3 was dropped from a full queue: its vector never existed
    assert ran == 2 and [e.reused for e in out] == [False, False, True, True]
    assert [float(e.vector[0]) for e in out] == [10, 30, 30, 30], "never the vector of another scene"


def test_motion_is_on_by_default_and_a_camera_can_set_its_own(tmp_path, tiny_bundle, clip):
    path = write_site(tmp_path, tiny_bundle, [
        {"id": "default", "url": str(clip)},
        {"id": "busy-door", "url": str(clip), "motion": {"min_changed": 0.02}},
        {"id": "off", "url": str(clip), "motion": {"enabled": False}}],
        motion={"pixel_threshold": 20})
    site = load_site(path)
    motion = {c.id: motion_settings(site, c) for c in site.cameras}
    assert motion["off"] is None
    assert motion["default"] == MotionSettings(20, 0.003, 10.0), "the site's, over the defaults"
    assert motion["busy-door"] == MotionSettings(10, 0.02, 10.0), "a camera's own block replaces the site's"
    data = yaml.safe_load(path.read_text())
    data["cameras"][0]["motion"] = {"min_changed": 0}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match="min_changed"):
        load_site(path)



def test_an_engine_that_gives_too_few_vectors_loses_that_batch_not_the_embedder(caplog):
    """Seen with OpenVINO under overload: the embedder thread died on the missing vector and every camera stopped."""
    counting = CountingBackbone()

    def short_once(batch: np.ndarray) -> np.ndarray:
        vectors = counting.embed(batch)
        return vectors[:-1] if counting.frames == len(batch) else vectors  # the first call loses a vector

    queues = FrameQueues(["cam"], 64)
    out: list[Embedding] = []
    embedder = Embedder(Backbone("short", (75, 75), 3, short_once), queues, max_batch=2, max_wait_ms=0, emit=out.extend)
    queues.put(frame(0, 10))
    queues.put(frame(1, 20))
    embedder.start()
    try:
        wait_until(lambda: counting.frames == 2, 30, "the first batch to run")
        queues.put(frame(2, 30))
        wait_until(lambda: out, 30, "the next frame to be embedded")
    finally:
        embedder.stop()
        embedder.join(30)
    assert [float(e.vector[0]) for e in out] == [30], "the short batch gave no frame another frame's vector"
    assert "event=inference_failed" in caplog.text and "1 vectors for 2 frames" in caplog.text
