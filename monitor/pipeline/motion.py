"""Motion gating: a sampled frame whose scene has not changed since the stream's last embedded frame reuses
that frame's embedding instead of running the backbone again.

Runs on the camera's reader thread, after the split into streams (a camera, or each of its zones): each
stream's frame, already resized to the backbone's input, is reduced to a small grey copy (cv2, INTER_AREA:
about 0.2 ms) and compared with the small copy of the stream's last frame sent to be embedded. The scene
changed when at least `min_changed` of the copy's pixels moved by `pixel_threshold` grey levels or more;
such a frame is embedded at once (gating never delays the first frame after a change) and becomes the new
reference. Comparing against the reference, not the previous frame, lets a slow change (a person creeping,
light drifting) add up until it counts. After `refresh_seconds` of reuse the next frame is embedded anyway.

An unchanged frame still carries its pixels and the reference's capture time (`reuse_of`): the embedder
reuses the stream's last vector only while that vector is the reference's (the reference may have been
dropped from a full queue, or its batch failed) and otherwise embeds the frame after all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from monitor.messages import SampledFrame

SMALL = (48, 48)  # (width, height) of the grey copy: a person a few percent of the frame is still dozens of pixels


@dataclass(frozen=True)
class MotionSettings:
    pixel_threshold: int = 10  # grey levels (0-255) a pixel must change by to count as changed
    min_changed: float = 0.003  # fraction of the small copy's pixels that must change
    refresh_seconds: float = 10.0  # embed at least this often, changed or not


@dataclass
class _Reference:
    small: np.ndarray
    mono: float


def small_grey(rgb: np.ndarray) -> np.ndarray:
    """The frame reduced to a small grey copy (int16, so differences do not wrap)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, SMALL, interpolation=cv2.INTER_AREA).astype(np.int16)


def changed_fraction(a: np.ndarray, b: np.ndarray, pixel_threshold: int) -> float:
    return float(np.count_nonzero(np.abs(a - b) >= pixel_threshold)) / a.size


class MotionGate:
    """One camera connection's gate: a reference per stream (zone). Its reader thread alone uses it."""

    def __init__(self, settings: MotionSettings):
        self.s = settings
        self._refs: dict[str, _Reference] = {}

    def __call__(self, frame: SampledFrame) -> SampledFrame:
        """`frame` as it is (embed it), or marked to reuse its stream's last embedding."""
        if frame.gated:
            return frame
        small = small_grey(frame.rgb)
        ref = self._refs.get(frame.zone)
        if (ref is not None and frame.mono - ref.mono < self.s.refresh_seconds
                and changed_fraction(small, ref.small, self.s.pixel_threshold) < self.s.min_changed):
            return dataclasses.replace(frame, reuse_of=ref.mono)
        self._refs[frame.zone] = _Reference(small, frame.mono)
        return frame
