"""The small records passed between the stages of the data flow.

Stages never import each other; they only share these frozen dataclasses.
Times: `ts` is the capture time as UTC epoch seconds (stored), `mono` is the
monotonic clock at capture (for latency and intervals).

Streams: a camera without zones is one stream (`zone` ""); a camera with zones is one stream per
zone, `(camera, zone)`, from the sampled frame to the violation. A zone with person gating sends
`gated` frames while nobody is in it: no pixels, not embedded; their windows are predicted as
NOBODY, so that rules still see time pass with nobody there. With motion gating, a frame whose scene did
not change since its stream's last embedded one names that frame (`reuse_of`) and gets its vector again
(`reused`): it still counts as a new embedding of the stream, so windows keep their cadence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

NOBODY = "nobody"  # the action of a gated window (no person in the zone); rules may name it
NO_PIXELS = np.zeros((0, 0, 3), np.uint8)
NO_FEATURES = np.zeros(0, np.float32)


@dataclass(frozen=True)
class SampledFrame:
    camera: str
    ts: float
    mono: float
    rgb: np.ndarray  # uint8 [H, W, 3], already resized to the backbone's input (NO_PIXELS when gated)
    zone: str = ""  # "" for a camera without zones
    gated: bool = False  # nobody in the zone: not embedded
    reuse_of: float | None = None  # unchanged since the stream's frame captured at this `mono` (pipeline/motion.py)


@dataclass(frozen=True)
class Embedding:
    camera: str
    ts: float
    mono: float
    vector: np.ndarray  # float32 [D] (NO_FEATURES when gated)
    zone: str = ""
    gated: bool = False
    reused: bool = False  # motion gating: the stream's previous vector, the backbone did not run


@dataclass(frozen=True)
class Window:
    camera: str
    t0: float
    t1: float
    mono: float  # capture time of the newest frame in the window
    features: np.ndarray  # float32 [T, D] (empty when gated)
    zone: str = ""
    gated: bool = False  # S gated embeddings (nobody there): predicted as NOBODY without the classifier


@dataclass(frozen=True)
class Prediction:
    camera: str
    t0: float
    t1: float
    mono: float
    probs: dict[str, float]
    zone: str = ""

    @property
    def top(self) -> tuple[str, float]:
        action = max(self.probs, key=self.probs.__getitem__)
        return action, self.probs[action]


@dataclass(frozen=True)
class ViolationEvent:
    kind: Literal["opened", "updated", "closed"]
    episode_id: str
    rule: str
    severity: str
    camera: str
    action: str
    confidence: float  # peak confidence so far
    started_at: float  # UTC epoch seconds
    ended_at: float | None  # set when closed
    mono: float  # capture time of the frame that caused this event
    labels: dict[str, str] = field(default_factory=dict)  # the rule's free-form labels
    rules_hash: str = ""  # the rule set in force when the episode opened
    zone: str = ""  # the stream's zone ("" for a camera without zones)
    # closed events: (window end time, confidence of the rule's action) from the windows that opened the
    # episode to its end; at most MAX_TRACE points, evenly thinned (QA's confidence timeline)
    trace: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:  # read back from the spool's JSON as lists: the same trace
        if not isinstance(self.trace, tuple) or any(not isinstance(p, tuple) for p in self.trace):
            object.__setattr__(self, "trace", tuple((float(t), float(c)) for t, c in self.trace))


MAX_TRACE = 600
