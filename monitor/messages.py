"""The small records passed between the stages of the data flow.

Stages never import each other; they only share these frozen dataclasses.
Times: `ts` is the capture time as UTC epoch seconds (stored), `mono` is the
monotonic clock at capture (for latency and intervals).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class SampledFrame:
    camera: str
    ts: float
    mono: float
    rgb: np.ndarray  # uint8 [H, W, 3], already resized to the backbone's input


@dataclass(frozen=True)
class Embedding:
    camera: str
    ts: float
    mono: float
    vector: np.ndarray  # float32 [D]


@dataclass(frozen=True)
class Window:
    camera: str
    t0: float
    t1: float
    mono: float  # capture time of the newest frame in the window
    features: np.ndarray  # float32 [T, D]


@dataclass(frozen=True)
class Prediction:
    camera: str
    t0: float
    t1: float
    mono: float
    probs: dict[str, float]

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
    # closed events: (window end time, confidence of the rule's action) from the windows that opened the
    # episode to its end; at most MAX_TRACE points, evenly thinned (QA's confidence timeline)
    trace: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:  # read back from the spool's JSON as lists: the same trace
        if not isinstance(self.trace, tuple) or any(not isinstance(p, tuple) for p in self.trace):
            object.__setattr__(self, "trace", tuple((float(t), float(c)) for t, c in self.trace))


MAX_TRACE = 600
