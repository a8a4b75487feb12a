"""Violation events and the provenance of a made-up site, for store and record tests."""

from __future__ import annotations

import hashlib
import time

from monitor.messages import ViolationEvent
from monitor.record.writer import Provenance

T0 = 1_700_000_000.25  # an epoch time with a fraction that floats and microseconds both hold exactly
PROV = Provenance(site="plant-7", model_hash=hashlib.sha256(b"model").hexdigest(),
                  rules_hash=hashlib.sha256(b"rules").hexdigest(), config_hash=hashlib.sha256(b"config").hexdigest(),
                  host="edge-1")


def event(kind: str, episode: str, confidence: float = 0.7, started: float = T0, ended: float | None = None) -> ViolationEvent:
    return ViolationEvent(kind=kind, episode_id=episode, rule="no-gloves", severity="major", camera="line-2",
                          action="touch_product", confidence=confidence, started_at=started,
                          ended_at=ended if kind == "closed" else None, mono=time.monotonic(), labels={"area": "b"})


def pair(episode: str, started: float = T0) -> list[ViolationEvent]:
    return [event("opened", episode, 0.6, started), event("closed", episode, 0.9, started, started + 3.0)]
