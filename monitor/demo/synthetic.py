"""Synthetic action clips: a stick figure acting in front of a random factory-ish backdrop.

Used by `har-monitor demo` (a fake camera) and by the training tests, so the pipeline can
be exercised end to end without a real dataset. Every clip is a pure function of its
arguments (action, length, size, seed, fps).

A figure is posed by a small vector of joint angles (layout below), so actions are just
pose trajectories and scene transitions are pose interpolations. Motion is defined in
real time units (Hz, figure heights per second) and sampled at `fps`, except that a fall
always spans its whole clip/segment (a 32-frame fall clip is a fall, whatever the fps).

"get_up" is by construction the exact time reverse of "fall" (same seed): single frames
of the two classes are identically distributed, so only temporal order separates them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from monitor.evidence.media import write_video

ACTIONS: tuple[str, ...] = ("idle", "wave", "walk", "fall", "get_up")
DEFAULT_FPS = 15.0

# Body proportions in figure heights (feet at y=0, y up, upright).
_THIGH, _SHIN, _TORSO = 0.24, 0.23, 0.30
_UPPER_ARM, _FOREARM = 0.16, 0.15
_HEAD_R = 0.09
_HIP_Y = _THIGH + _SHIN
_NECK_Y = _HIP_Y + _TORSO
_SHOULDER_Y = _NECK_Y - 0.03
_HEAD_Y = _NECK_Y + _HEAD_R + 0.01
_LINE = 0.09  # limb thickness: ~3 px once a 240-px frame is downscaled to 75 px
_REACH = 1.1  # length of a lying figure, arms overhead included

# Pose vector layout: feet x (px), body tilt about the feet (rad, + tips the head to +x),
# then absolute segment angles (rad from "down" in the body frame, + towards +x).
# "l"/"r" are screen left/right (-x/+x).
_X, _BODY, _LSH, _LEL, _RSH, _REL, _LHIP, _LKN, _RHIP, _RKN = range(10)
_POSE_LEN = 10
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing, so slow motion doesn't jitter
_NOISE_PAD = 32  # sensor noise: one random field per clip, seen through a moving window


@dataclass(frozen=True)
class _Look:
    """What stays constant for one camera and one person: backdrop, colours, scale."""

    background: np.ndarray  # uint8 [H, W, 3], the empty scene
    floor_y: float  # image row the feet stand on
    height: float  # figure height in px
    shirt: tuple[int, int, int]  # torso and arms
    pants: tuple[int, int, int]
    skin: tuple[int, int, int]
    noise_sigma: float  # per-frame sensor noise, grey levels

    @property
    def thickness(self) -> int:
        return max(2, round(_LINE * self.height))

    @property
    def x_range(self) -> tuple[float, float]:
        """Feet x positions that keep a standing figure (arms out) inside the frame."""
        margin = 0.36 * self.height  # a waving arm reaches ~0.33 h sideways
        return margin, self.background.shape[1] - margin


def _check_action(action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}")


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = int(size[0]), int(size[1])
    if h < 16 or w < 16:
        raise ValueError(f"frame size {size} is too small (need at least 16x16, given as (H, W))")
    return h, w


# ---------------------------------------------------------------------------- appearance


def _muted_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _contrasting(rng: np.random.Generator, sample: Callable[[], np.ndarray], against: Sequence[np.ndarray], min_dist: float = 90.0) -> tuple[int, int, int]:
    """A colour from `sample` that stands out from every backdrop colour in `against`."""
    for _ in range(40):
        c = np.clip(sample(), 0, 255)
        if all(np.linalg.norm(c - a) >= min_dist for a in against):
            return int(c[0]), int(c[1]), int(c[2])
    # Rare fallback: black or white, whichever is farther from the backdrop.
    mean = np.mean(against, axis=0).mean()
    return (20, 20, 20) if mean > 128 else (235, 235, 235)


def _background(rng: np.random.Generator, h: int, w: int, floor_y: float, fig_h: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Wall + floor with low-frequency shading, a few machines/cabinets and static grain.

    Also returns the flat colours used, for the figure to contrast with.
    """
    wall = _muted_colour(rng, (0.0, 0.45), (0.35, 0.9))
    floor = _muted_colour(rng, (0.0, 0.4), (0.2, 0.75))
    img = np.empty((h, w, 3), np.float32)
    horizon = int(floor_y - rng.uniform(0.15, 0.4) * fig_h)
    img[:horizon] = wall
    img[horizon:] = floor
    colours = [wall, floor]
    # Furniture on the wall, standing on the horizon line, mostly muted.
    for _ in range(rng.integers(0, 5)):
        bw, bh = rng.uniform(0.08, 0.3) * w, rng.uniform(0.15, 0.6) * horizon
        x0 = rng.uniform(-0.1, 1.0) * w
        colour = _muted_colour(rng, (0.0, 0.5), (0.25, 0.85))
        colours.append(colour)
        cv2.rectangle(img, (int(x0), int(horizon - bh)), (int(x0 + bw), horizon), colour.tolist(), -1)
    if rng.random() < 0.5:  # a painted safety line on the floor
        y = int(rng.uniform(horizon + 3, h - 2))
        cv2.line(img, (0, y), (w, y), _muted_colour(rng, (0.6, 0.9), (0.7, 0.95)).tolist(), max(1, h // 80))
    # Uneven lighting: a smooth random field plus a linear gradient, then fixed grain.
    field = cv2.resize(rng.standard_normal((4, 5, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img += field * rng.uniform(3, 14)
    img *= np.linspace(1 - rng.uniform(-0.15, 0.15), 1, w, dtype=np.float32)[None, :, None]
    img += rng.standard_normal((h, w, 3)).astype(np.float32) * rng.uniform(0, 5)
    return np.clip(img, 0, 255).astype(np.uint8), colours


def _sample_look(rng: np.random.Generator, size: tuple[int, int] = (240, 320)) -> _Look:
    """A random camera + person; consumes a fixed-ish part of `rng`'s stream."""
    h, w = _check_size(size)
    floor_y = rng.uniform(0.8, 0.94) * h
    # Tall enough to be seen; short enough that a fall fits on one side of any position
    # (from mid-frame, _REACH plus a margin on either side).
    max_h = min(0.6 * h, w / (2 * (_REACH + 0.1)), floor_y - 0.05 * h)
    fig_h = rng.uniform(0.7, 1.0) * max_h
    background, backdrop = _background(rng, h, w, floor_y, fig_h)
    skin_base = np.array([[255, 224, 189], [234, 192, 134], [198, 134, 66], [141, 85, 36], [90, 56, 37]], np.float32)

    def skin() -> np.ndarray:
        return skin_base[rng.integers(len(skin_base))] + rng.normal(0, 12, 3)

    def cloth() -> np.ndarray:
        return _muted_colour(rng, (0.2, 1.0), (0.15, 1.0))

    return _Look(
        background=background,
        floor_y=float(floor_y),
        height=float(fig_h),
        shirt=_contrasting(rng, cloth, backdrop),
        pants=_contrasting(rng, cloth, backdrop),
        skin=_contrasting(rng, skin, backdrop, min_dist=70.0),
        noise_sigma=float(rng.uniform(1.0, 3.5)),
    )


# ---------------------------------------------------------------------------- poses


def _standing(x: float, rng: np.random.Generator) -> np.ndarray:
    """A relaxed upright pose: arms slightly out, feet slightly apart."""
    p = np.zeros(_POSE_LEN)
    p[_X] = x
    arm, leg = rng.uniform(0.25, 0.45), rng.uniform(0.04, 0.14)
    p[[_LSH, _LEL]] = -arm, -arm + rng.uniform(-0.05, 0.1)
    p[[_RSH, _REL]] = arm, arm - rng.uniform(-0.05, 0.1)
    p[[_LHIP, _LKN]] = -leg
    p[[_RHIP, _RKN]] = leg
    return p


def _wave_freq(rng: np.random.Generator, lo: float, hi: float, fps: float) -> float:
    """Cycles per frame, kept below fps/4 so the motion isn't aliased at low frame rates."""
    return min(rng.uniform(lo, hi), fps / 4) / fps


def _idle(n: int, fps: float, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stand (or lie) still: slow sway/breathing of a few hundredths of a radian."""
    t = np.arange(n)
    f, ph = _wave_freq(rng, 0.15, 0.45, fps), rng.uniform(0, 2 * np.pi)
    s = np.sin(2 * np.pi * f * t + ph)
    poses = np.repeat(base[None], n, axis=0)
    poses[:, _BODY] += rng.uniform(0.01, 0.03) * s
    poses[:, [_LSH, _LEL, _RSH, _REL]] += rng.uniform(0.01, 0.04) * np.sin(2 * np.pi * f * t + ph + 1.0)[:, None] * [-1, -1, 1, 1]
    return poses


def _wave(n: int, fps: float, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One arm raised above the shoulder, swinging up and down."""
    poses = _idle(n, fps, base, rng)
    side = rng.choice([-1, 1])  # which arm (screen side)
    sh, el = (_RSH, _REL) if side > 0 else (_LSH, _LEL)
    f, ph = _wave_freq(rng, 1.2, 2.5, fps), rng.uniform(0, 2 * np.pi)
    s = np.sin(2 * np.pi * f * np.arange(n) + ph)
    upper = rng.uniform(2.0, 2.3) + rng.uniform(0.2, 0.35) * s  # elbow above the shoulder
    fore = rng.uniform(2.6, 2.8) + rng.uniform(0.4, 0.6) * np.sin(2 * np.pi * f * np.arange(n) + ph + 0.5)
    poses[:, sh], poses[:, el] = side * upper, side * fore
    return poses


def _reflect(s: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold a straight path into [lo, hi]: the walker turns round at the frame edges."""
    span = hi - lo
    u = np.mod(s - lo, 2 * span)
    return lo + np.where(u > span, 2 * span - u, u)


def _walk(n: int, fps: float, base: np.ndarray, look: _Look, rng: np.random.Generator, direction: int | None = None) -> np.ndarray:
    """Translate horizontally with swinging legs and counter-swinging arms, feet not sliding."""
    poses = np.repeat(base[None], n, axis=0)
    amp = rng.uniform(0.3, 0.5)
    f, ph = _wave_freq(rng, 0.7, 1.2, fps), rng.uniform(0, 2 * np.pi)
    speed = f * 4 * _HIP_Y * np.sin(amp) * look.height  # px/frame: one stride per half cycle
    lo, hi = look.x_range
    if direction is None:  # head for the side with more room
        direction = 1 if hi - base[_X] >= base[_X] - lo else -1
    path = base[_X] + direction * speed * np.arange(n)
    x = _reflect(path, lo, hi)
    heading = np.sign(np.gradient(x)) if n > 1 else np.array([direction])
    phase = 2 * np.pi * f * np.arange(n) + ph
    swing = amp * np.sin(phase)
    poses[:, _X] = x
    poses[:, _LHIP], poses[:, _RHIP] = swing, -swing
    # The knee bends on the back swing, so the shin trails behind the walking direction.
    bend_l = 0.6 * np.clip(-np.cos(phase), 0, None)
    bend_r = 0.6 * np.clip(np.cos(phase), 0, None)
    poses[:, _LKN] = swing - heading * bend_l
    poses[:, _RKN] = -swing - heading * bend_r
    arm = 0.7 * amp * np.sin(phase)
    poses[:, _LSH] = base[_LSH] - arm
    poses[:, _RSH] = base[_RSH] + arm
    poses[:, _LEL] = poses[:, _LSH] + heading * 0.25
    poses[:, _REL] = poses[:, _RSH] + heading * 0.25
    return poses


def _fall_direction(x: float, look: _Look, rng: np.random.Generator) -> int:
    """A random side with room to lie down, else the roomier side."""
    room = {1: look.background.shape[1] - x, -1: x}
    fits = [d for d in (1, -1) if room[d] >= _REACH * look.height + 0.1 * look.height]
    return int(rng.choice(fits)) if fits else max(room, key=lambda d: room[d])


def _fall(n: int, base: np.ndarray, direction: int, rng: np.random.Generator) -> np.ndarray:
    """Upright to lying, rotating about the feet over all n frames (never a static tail)."""
    u = np.linspace(0.0, 1.0, n)[:, None] if n > 1 else np.ones((1, 1))
    a = rng.uniform(0.2, 0.55)
    prog = (1 - a) * u + a * u**2  # accelerating like a topple, yet moving from frame 0
    start, end = base.copy(), base.copy()
    end[_BODY] = direction * (np.pi / 2 + rng.uniform(-0.03, 0.03))
    # Lying: one arm flung overhead, the other along the body, legs roughly straight.
    end[[_LSH, _LEL, _RSH, _REL]] = direction * np.array(
        [rng.uniform(2.5, 2.9), rng.uniform(2.6, 3.0), -rng.uniform(0.05, 0.25), -rng.uniform(0.0, 0.2)]
    )
    if rng.random() < 0.5:  # which arm goes overhead
        end[[_LSH, _LEL, _RSH, _REL]] = end[[_RSH, _REL, _LSH, _LEL]]
    end[[_LHIP, _LKN]] = -direction * rng.uniform(0.0, 0.12)
    end[[_RHIP, _RKN]] = -direction * rng.uniform(0.0, 0.12)
    poses = start[None] + (end - start)[None] * prog
    # Knees buckle towards the fall mid-way, straightening again on the floor.
    buckle = direction * rng.uniform(0.2, 0.5) * np.sin(np.pi * prog[:, 0])
    poses[:, [_LHIP, _RHIP]] += buckle[:, None]
    poses[:, [_LKN, _RKN]] -= buckle[:, None]
    return poses


def _joints(pose: np.ndarray, look: _Look) -> tuple[dict[str, np.ndarray], float]:
    """Image coordinates (px) of the joints, and the head radius (px)."""

    def seg(angle: float) -> np.ndarray:
        return np.array([np.sin(angle), -np.cos(angle)])

    hip = np.array([0.0, _HIP_Y])
    sho = np.array([0.0, _SHOULDER_Y])
    pts = {
        "hip": hip,
        "neck": np.array([0.0, _NECK_Y]),
        "head": np.array([0.0, _HEAD_Y]),
        "lelb": sho + _UPPER_ARM * seg(pose[_LSH]),
        "relb": sho + _UPPER_ARM * seg(pose[_RSH]),
        "lkne": hip + _THIGH * seg(pose[_LHIP]),
        "rkne": hip + _THIGH * seg(pose[_RHIP]),
        "sho": sho,
    }
    pts["lhand"] = pts["lelb"] + _FOREARM * seg(pose[_LEL])
    pts["rhand"] = pts["relb"] + _FOREARM * seg(pose[_REL])
    pts["lfoot"] = pts["lkne"] + _SHIN * seg(pose[_LKN])
    pts["rfoot"] = pts["rkne"] + _SHIN * seg(pose[_RKN])
    c, s = np.cos(pose[_BODY]), np.sin(pose[_BODY])
    rot = {k: np.array([v[0] * c + v[1] * s, -v[0] * s + v[1] * c]) for k, v in pts.items()}
    # Ground contact: whatever is lowest (feet, or the body once fallen) rests on the floor.
    half = _LINE / 2
    lowest = min(min(v[1] for k, v in rot.items() if k != "head") - half, rot["head"][1] - _HEAD_R)
    h = look.height
    img = {k: np.array([pose[_X] + h * v[0], look.floor_y - h * (v[1] - lowest)]) for k, v in rot.items()}
    return img, _HEAD_R * h


def _draw(img: np.ndarray, pose: np.ndarray, look: _Look) -> None:
    j, r = _joints(pose, look)
    t, k = look.thickness, 1 << _SHIFT

    def fp(p: np.ndarray) -> tuple[int, int]:
        return int(np.rint(p[0] * k)), int(np.rint(p[1] * k))  # numpy < 2: round() of a float64 is a float64

    def line(a: str, b: str, colour: tuple[int, int, int]) -> None:
        cv2.line(img, fp(j[a]), fp(j[b]), colour, t, cv2.LINE_AA, _SHIFT)

    for a, b in (("hip", "lkne"), ("lkne", "lfoot"), ("hip", "rkne"), ("rkne", "rfoot")):
        line(a, b, look.pants)
    line("hip", "neck", look.shirt)
    for a, b in (("sho", "lelb"), ("lelb", "lhand"), ("sho", "relb"), ("relb", "rhand")):
        line(a, b, look.shirt)
    cv2.circle(img, fp(j["head"]), int(np.rint(r * k)), look.skin, -1, cv2.LINE_AA, _SHIFT)


def _render_poses(poses: np.ndarray, look: _Look, rng: np.random.Generator) -> np.ndarray:
    """Draw every pose on the backdrop, then add sensor noise and a slight gain flicker.

    Drawing fresh Gaussian noise for every pixel of every frame dominated the render
    time, so each frame instead sees a randomly offset window of one per-clip noise
    field: still changes every frame, at a few int16 passes per frame.
    """
    n = len(poses)
    h, w = look.background.shape[:2]
    out = np.empty((n, h, w, 3), np.uint8)
    field = rng.standard_normal((h + _NOISE_PAD, w + _NOISE_PAD, 3), dtype=np.float32)
    field = np.rint(field * np.float32(look.noise_sigma)).astype(np.int16)
    offsets = rng.integers(0, _NOISE_PAD + 1, (n, 2))
    gains = rng.normal(1.0, 0.006, n)
    frame = np.empty((h, w, 3), np.int16)
    for i, pose in enumerate(poses):
        img = look.background.copy()
        _draw(img, pose, look)
        img = cv2.convertScaleAbs(img, alpha=float(gains[i]))
        dy, dx = offsets[i]
        np.add(img, field[dy : dy + h, dx : dx + w], out=frame, dtype=np.int16)
        np.clip(frame, 0, 255, out=frame)
        out[i] = frame
    return out


# ---------------------------------------------------------------------------- public API


def _action_poses(action: str, n: int, fps: float, look: _Look, rng: np.random.Generator) -> np.ndarray:
    """Poses for one stand-alone clip, starting from a random position that suits the action."""
    lo, hi = look.x_range
    base = _standing(rng.uniform(lo, hi), rng)
    if action == "idle":
        return _idle(n, fps, base, rng)
    if action == "wave":
        return _wave(n, fps, base, rng)
    if action == "walk":
        return _walk(n, fps, base, look, rng, direction=int(rng.choice([-1, 1])))
    # fall (get_up is handled by the caller as its reverse)
    return _fall(n, base, _fall_direction(base[_X], look, rng), rng)


def render_clip(
    action: str,
    n_frames: int,
    size: tuple[int, int] = (240, 320),
    seed: int = 0,
    *,
    fps: float = DEFAULT_FPS,
    look_seed: int | None = None,
) -> np.ndarray:
    """uint8 RGB frames [n_frames, H, W, 3] of one action; `size` is (H, W).

    `fps` sets how fast the periodic motions (sway, wave, walk) are per frame; a fall
    always spans the whole clip. `look_seed` (default: `seed`) draws the backdrop, colours
    and figure scale separately from the motion, so several clips can share one "actor".
    "get_up" is exactly `render_clip("fall", ...)[::-1]` for the same arguments. A reader
    that keeps every s-th frame from frame 0 sees the same frame set for both only when
    n_frames % s == 1 (e.g. 25 frames at stride 2). Otherwise the two sets are offset by
    part of a step, which a frame-averaging baseline can weakly pick up.
    """
    _check_action(action)
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if action == "get_up":
        fall = render_clip("fall", n_frames, size, seed, fps=fps, look_seed=look_seed)
        return np.ascontiguousarray(fall[::-1])
    rng = np.random.default_rng(seed)
    look = _sample_look(np.random.default_rng(look_seed) if look_seed is not None else rng, size)
    poses = _action_poses(action, n_frames, fps, look, rng)
    return _render_poses(poses, look, rng)


def _blend(prev: np.ndarray, poses: np.ndarray, k: int) -> np.ndarray:
    """Ease the first k poses from the previous segment's last pose (no pops at cuts)."""
    if k <= 0:
        return poses
    w = np.linspace(0, 1, k + 2)[1:-1]
    w = w * w * (3 - 2 * w)  # smoothstep
    out = poses.copy()
    out[:k] = prev[None] + (poses[:k] - prev[None]) * w[:, None]
    return out


def render_scene(
    segments: Sequence[tuple[str, float]],
    fps: float,
    size: tuple[int, int] = (240, 320),
    seed: int = 0,
) -> np.ndarray:
    """One continuous shot of one person doing `segments` = [(action, seconds), ...].

    The backdrop and person stay the same; each segment starts where the previous one
    ended (a figure that fell stays down until "get_up"), with a short pose blend at the
    cuts. Lying still is "idle" after a "fall"; "wave", "walk" and "fall" need the figure
    standing and "get_up" needs it lying (or being the first segment), else ValueError.
    The backdrop and person are those of `render_clip(..., look_seed=seed)`, so clips can
    be rendered that look like this camera. Segment lengths are rounded on the cumulative
    time, so the total is round(sum*fps).
    Returns uint8 RGB [N, H, W, 3] (about 230 kB per 240x320 frame: keep scenes short).
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    for action, seconds in segments:
        _check_action(action)
        if seconds < 0:
            raise ValueError(f"segment {action!r} has a negative duration ({seconds} s)")
    rng = np.random.default_rng(seed)
    look = _sample_look(rng, size)  # first draw, as render_clip(look_seed=seed) does
    lo, hi = look.x_range
    upright = _standing(rng.uniform(lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo)), rng)
    lying = segments[0][0] == "get_up" if segments else False
    fall_dir = _fall_direction(upright[_X], look, rng)
    if lying:  # start on the floor: where the get_up will need
        last = _fall(2, upright, fall_dir, rng)[-1]
    else:
        last = upright
    bounds = np.rint(np.cumsum([0.0] + [s for _, s in segments]) * fps).astype(int)
    parts: list[np.ndarray] = []
    for i, (action, _) in enumerate(segments):
        n = int(bounds[i + 1] - bounds[i])
        if n == 0:
            continue
        if lying and action not in ("idle", "get_up"):
            raise ValueError(f"segment {i} ({action!r}): the figure is lying after a fall; only 'idle' or 'get_up' can follow")
        if not lying and action == "get_up":
            raise ValueError(f"segment {i} ('get_up'): the figure is already standing; a 'fall' must come first")
        start = _standing(last[_X], rng)
        if action == "idle":
            poses = _idle(n, fps, last if lying else start, rng)
        elif action == "wave":
            poses = _wave(n, fps, start, rng)
        elif action == "walk":
            poses = _walk(n, fps, start, look, rng)
        elif action == "fall":
            fall_dir = _fall_direction(last[_X], look, rng)
            poses = _fall(n, start, fall_dir, rng)
        else:  # get_up: a fall from here played backwards
            poses = _fall(n, start, fall_dir, rng)[::-1]
        if parts:
            poses = _blend(last, poses, min(round(0.3 * fps), n // 3))
        lying = (lying or action == "fall") and action != "get_up"
        last = poses[-1]
        parts.append(poses)
    if not parts:
        h, w = look.background.shape[:2]
        return np.empty((0, h, w, 3), np.uint8)
    return _render_poses(np.concatenate(parts), look, rng)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def make_dataset(
    root: Path,
    clips_per_class: int,
    n_frames: int,
    fps: float,
    size: tuple[int, int] = (240, 320),
    seed: int = 0,
    actions: Sequence[str] = ACTIONS,
    *,
    clips_per_group: int = 4,
) -> list[Path]:
    """Write `root/<action>/<action>_gNN_cMM.mp4` clips (UCF101-style) and return their paths.

    A group is one "actor": clips gNN share backdrop, colours and scale across all actions
    and differ in motion, so splitting train/test by group keeps actors apart. Clip cMM of
    "get_up" is the exact reverse of the same clip of "fall" (same frames, other order).
    Output is a pure function of the arguments.
    """
    for a in actions:
        _check_action(a)
    if clips_per_class < 1 or clips_per_group < 1:
        raise ValueError("clips_per_class and clips_per_group must be >= 1")
    root = Path(root)
    paths: list[Path] = []
    for action in actions:
        # get_up reuses fall's motion seeds so the two classes are exact mirrors in time.
        key = zlib.crc32(("fall" if action == "get_up" else action).encode())
        for i in range(clips_per_class):
            g, c = i // clips_per_group + 1, i % clips_per_group + 1
            frames = render_clip(action, n_frames, size, _seed(seed, g, c, key), fps=fps, look_seed=_seed(seed, g))
            path = root / action / f"{action}_g{g:02d}_c{c:02d}.mp4"
            write_video(path, frames, fps, keyframe_interval=max(1, round(fps)))
            paths.append(path)
    return paths
