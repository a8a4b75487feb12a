"""The synthetic clip renderer: shapes, determinism, fall/get_up symmetry, datasets on disk."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from monitor.demo.synthetic import ACTIONS, make_dataset, render_clip, render_scene

SIZE = (120, 160)  # small frames keep the file fast; the default size is checked once


def decode(path: Path) -> tuple[np.ndarray, list[bool]]:
    """All frames (RGB) and, per packet, whether it is a keyframe."""
    with av.open(str(path)) as c:
        keys = [p.is_keyframe for p in c.demux(video=0) if p.size]
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    return frames, keys


def blur(frames: np.ndarray) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f, (5, 5), 0) for f in frames]).astype(int)


def height_trend(frames: np.ndarray) -> float:
    """Slope (rows/frame) of the mean row of moving pixels: > 0 when things move down.

    Uses only the pixels, no knowledge of the backdrop: frame differences above the
    sensor noise mark the moving figure.
    """
    moving = np.abs(np.diff(frames.astype(np.int16), axis=0)).max(axis=-1) > 40
    rows = np.arange(frames.shape[1])[None, :, None]
    ys = (moving * rows).sum(axis=(1, 2)) / np.maximum(moving.sum(axis=(1, 2)), 1)
    return float(np.polyfit(np.arange(len(ys)), ys, 1)[0])


@pytest.mark.parametrize("action", ACTIONS)
def test_shape_dtype_and_determinism(action: str) -> None:
    a = render_clip(action, 6, SIZE, seed=3)
    assert a.shape == (6, *SIZE, 3) and a.dtype == np.uint8 and a.flags.c_contiguous
    np.testing.assert_array_equal(a, render_clip(action, 6, SIZE, seed=3))
    assert not np.array_equal(a, render_clip(action, 6, SIZE, seed=4))
    assert a.std() > 5  # not a blank frame


def test_default_size() -> None:
    assert render_clip("wave", 2).shape == (2, 240, 320, 3)


def test_there_is_motion_and_idle_is_stillest() -> None:
    def motion(action: str) -> float:
        c = render_clip(action, 16, SIZE, seed=1).astype(np.int16)
        return float((np.abs(np.diff(c, axis=0)).max(axis=-1) > 40).mean())

    m = {a: motion(a) for a in ACTIONS}
    assert all(m["idle"] < m[a] for a in ("wave", "walk", "fall")), m


def test_get_up_is_fall_reversed() -> None:
    for seed in (0, 7):
        fall = render_clip("fall", 12, SIZE, seed=seed)
        np.testing.assert_array_equal(render_clip("get_up", 12, SIZE, seed=seed), fall[::-1])
    np.testing.assert_array_equal(
        render_clip("get_up", 5, SIZE, seed=1, look_seed=9), render_clip("fall", 5, SIZE, seed=1, look_seed=9)[::-1]
    )


def test_fall_and_get_up_differ_only_in_order() -> None:
    falls = [render_clip("fall", 16, SIZE, seed=s) for s in range(8)]
    ups = [render_clip("get_up", 16, SIZE, seed=s) for s in range(8)]
    # Frame statistics can't tell them apart...
    np.testing.assert_array_equal(np.mean(falls, axis=(0, 1)), np.mean(ups, axis=(0, 1)))
    # ...a temporal feature can, on every clip.
    assert all(height_trend(f) > 1.0 for f in falls), [height_trend(f) for f in falls]
    assert all(height_trend(u) < -1.0 for u in ups), [height_trend(u) for u in ups]


def test_look_seed_shares_the_backdrop() -> None:
    a = render_clip("idle", 3, SIZE, seed=1, look_seed=5)
    b = render_clip("walk", 3, SIZE, seed=2, look_seed=5)
    c = render_clip("idle", 3, SIZE, seed=1, look_seed=6)
    # Same actor: the top rows (wall, no figure) agree up to sensor noise.
    assert np.abs(a[:, :10].astype(int) - b[:, :10]).mean() < 6
    assert np.abs(a[:, :10].astype(int) - c[:, :10]).mean() > 6
    # A scene with seed s is filmed by the same camera/person as clips with look_seed=s
    # (the demo trains on clips that look like its camera scenes).
    scene = render_scene([("idle", 0.3)], 10, SIZE, seed=5)
    assert np.abs(a[:, :10].astype(int) - scene[:3, :10]).mean() < 6


def test_unknown_action() -> None:
    with pytest.raises(ValueError, match=r"'jump'.*idle, wave, walk, fall, get_up"):
        render_clip("jump", 4)
    with pytest.raises(ValueError, match="jump"):
        render_scene([("idle", 1.0), ("jump", 1.0)], fps=10)
    with pytest.raises(ValueError, match="jump"):
        make_dataset(Path("/nonexistent"), 1, 4, 10, actions=("jump",))


def test_scene_is_one_continuous_shot() -> None:
    segs = [("idle", 0.5), ("wave", 0.8), ("walk", 0.8), ("fall", 1.0), ("idle", 0.5), ("get_up", 1.0)]
    fps = 10.0
    s = render_scene(segs, fps, SIZE, seed=2)
    assert s.shape == (round(sum(t for _, t in segs) * fps), *SIZE, 3)
    np.testing.assert_array_equal(s, render_scene(segs, fps, SIZE, seed=2))
    # No cut anywhere: consecutive frames never change wholesale (same backdrop, no jumps).
    changed = (np.abs(np.diff(s.astype(np.int16), axis=0)).max(axis=-1) > 40).mean(axis=(1, 2))
    assert changed.max() < 0.15  # a cut would change most of the frame
    # Frames 21-30 fall, 31-35 lie still, 36-45 get up.
    assert height_trend(s[21:31]) > 1.0
    assert changed[31:35].max() < changed[21:30].min()
    assert height_trend(s[36:46]) < -1.0


def test_scene_rejects_impossible_orders() -> None:
    with pytest.raises(ValueError, match="lying"):
        render_scene([("fall", 1.0), ("walk", 1.0)], fps=10, size=SIZE)
    with pytest.raises(ValueError, match="standing"):
        render_scene([("idle", 1.0), ("get_up", 1.0)], fps=10, size=SIZE)
    # Starting on the floor is fine.
    assert len(render_scene([("get_up", 1.0), ("wave", 0.5)], fps=10, size=SIZE)) == 15


def test_make_dataset_layout(tmp_path: Path) -> None:
    paths = make_dataset(tmp_path, clips_per_class=5, n_frames=8, fps=10, size=SIZE, seed=1, actions=("wave", "fall", "get_up"))
    names = {p.relative_to(tmp_path).as_posix() for p in paths}
    expected = {f"{a}/{a}_g{g:02d}_c{c:02d}.mp4" for a in ("wave", "fall", "get_up") for g, c in [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1)]}
    assert names == expected and len(paths) == 15
    assert all(p.is_file() for p in paths)
    fall, _ = decode(tmp_path / "fall" / "fall_g01_c02.mp4")
    up, _ = decode(tmp_path / "get_up" / "get_up_g01_c02.mp4")
    assert fall.shape == (8, *SIZE, 3)
    # get_up clips mirror the fall clips of the same group and number.
    assert np.abs(blur(fall[::-1]) - blur(up)).mean() < 3
