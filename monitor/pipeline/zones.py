"""A camera with zones: each sampled frame becomes one SampledFrame per zone, on the camera's reader thread.

The frame is decoded and converted to RGB once, at its decoded resolution; each zone is cut from it
and resized once to the backbone's input (`model.zones.Zone.crop`). A zone with person gating asks
its `PersonGate` first: while nobody is in it, the zone sends a `gated` frame (no pixels; the
embedder skips it and its windows are predicted as `nobody`), which costs nothing but a check at
`check_hz` (MoveNet on the zone's crop, 6-14 ms).

The detector runs right here rather than on a thread of its own: at 2 checks per second it takes
1-3% of a core per zone, well inside the time a reader waits for its next frame, and the gate's
decision is then made on the very frame it applies to.
"""

from __future__ import annotations

from collections.abc import Callable

import av
import numpy as np

from monitor.messages import NO_PIXELS, SampledFrame
from monitor.model.frames import to_rgb
from monitor.model.persons import PersonCheck, PersonDetector
from monitor.model.zones import Zone


class PersonGate:
    """Open while a person was seen in the zone within `hold` seconds (monotonic clock); checked at most
    `check_hz` times per second. Closed until the first check sees someone."""

    def __init__(self, detector: PersonDetector, check_hz: float, hold: float,
                 observe: Callable[[PersonCheck], None] = lambda check: None):
        self.detector = detector
        self.period = 1.0 / check_hz
        self.hold = hold
        self.observe = observe
        self._next_check = -np.inf
        self._seen = -np.inf

    def open(self, zone: Zone, rgb: np.ndarray, mono: float) -> bool:
        if mono >= self._next_check:
            self._next_check = mono + self.period
            check = self.detector.check(zone.crop(rgb, self.detector.input_size))
            if check.present:
                self._seen = mono
            self.observe(check)
        return mono - self._seen <= self.hold


class ZoneSplitter:
    """Turns a decoded frame into one SampledFrame per zone. `gates`: zone name -> its PersonGate."""

    def __init__(self, camera: str, zones: list[Zone], size: tuple[int, int], gates: dict[str, PersonGate]):
        self.camera = camera
        self.zones = zones
        self.size = size
        self.gates = gates

    def __call__(self, frame: av.VideoFrame, ts: float, mono: float) -> list[SampledFrame]:
        rgb = to_rgb(frame, frame.width, frame.height)
        return self.split(rgb, ts, mono)

    def split(self, rgb: np.ndarray, ts: float, mono: float) -> list[SampledFrame]:
        out = []
        for zone in self.zones:
            gate = self.gates.get(zone.name)
            if gate is not None and not gate.open(zone, rgb, mono):
                out.append(SampledFrame(self.camera, ts, mono, NO_PIXELS, zone.name, gated=True))
            else:
                out.append(SampledFrame(self.camera, ts, mono, zone.crop(rgb, self.size), zone.name))
        return out
