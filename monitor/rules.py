"""Compliance rules: predictions in, violation episodes out.

The first rule kind: an action (or a group of actions) above `min_confidence` for
`for_windows` consecutive windows opens an episode; it is updated while it lasts and closed
at the first window below the threshold; `cooldown` keeps a new episode from opening right
after one closed. The engine only sees `Prediction`s and returns `ViolationEvent`s.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from monitor.errors import UserError
from monitor.records import Prediction, ViolationEvent
from monitor.yamlfile import load_model

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: float | int | str) -> float:
    """'90s', '10m', '1.5h', 30 -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"'{value}' is not a duration (expected e.g. 30s, 10m, 1h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppliesTo(_Strict):
    cameras: list[str] = Field(default_factory=lambda: ["*"])
    zones: list[str] = Field(default_factory=lambda: ["*"])


class When(_Strict):
    action: str
    min_confidence: float = Field(default=0.5, gt=0, le=1)
    for_windows: int = Field(default=1, ge=1)


class RuleConfig(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    title: str = ""
    severity: Literal["info", "minor", "major", "critical"] = "major"
    enabled: bool = True
    applies_to: AppliesTo = AppliesTo()
    when: When
    cooldown: float = 0.0

    @field_validator("cooldown", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)  # type: ignore[arg-type]

    def applies(self, camera: str, zone: str | None) -> bool:
        cam_ok = any(fnmatch.fnmatchcase(camera, g) for g in self.applies_to.cameras)
        zone_ok = any(fnmatch.fnmatchcase(zone or "", g) for g in self.applies_to.zones)
        return cam_ok and zone_ok


class RuleFile(_Strict):
    rules: list[RuleConfig] = Field(default_factory=list)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[RuleConfig, ...]
    groups: dict[str, tuple[str, ...]]  # action name -> the labels it covers
    hash: str

    def severities(self) -> list[tuple[str, str]]:
        return [(r.id, r.severity) for r in self.rules]


def load_rules(paths: list[Path], labels: list[str], groups: dict[str, list[str]] | None = None) -> RuleSet:
    """Load rule files; every problem (schema, duplicate id, unknown action) is reported with its file."""
    actions = {label: (label,) for label in labels} | {g: tuple(m) for g, m in (groups or {}).items()}
    problems: list[str] = []
    rules: list[RuleConfig] = []
    where: dict[str, Path] = {}
    digest = hashlib.sha256()
    for path in paths:
        try:
            loaded = load_model(RuleFile, path)
        except UserError as err:
            problems += err.problems
            continue
        digest.update(path.read_bytes())
        for i, rule in enumerate(loaded.rules):
            at = f"{path}: rules[{i}]"
            if rule.id in where:
                problems.append(f"{at}.id: duplicate rule id '{rule.id}' (also in {where[rule.id]})")
            if rule.when.action not in actions:
                problems.append(f"{at}.when.action: unknown action '{rule.when.action}' "
                                f"(the model knows: {', '.join(sorted(actions))})")
            where[rule.id] = path
            if rule.enabled:
                rules.append(rule)
    if problems:
        raise UserError(problems)
    return RuleSet(tuple(rules), actions, digest.hexdigest()[:16])


@dataclass(frozen=True)
class _State:
    streak: int = 0  # consecutive windows meeting the condition
    streak_start: float = 0.0
    open: ViolationEvent | None = None
    quiet_until: float = 0.0  # cooldown end (window time)


class RuleEngine:
    def __init__(self, ruleset: RuleSet, zones: dict[str, str | None]):
        self.ruleset = ruleset
        self._zones = zones
        self._state: dict[tuple[str, str], _State] = {}

    def observe(self, p: Prediction) -> list[ViolationEvent]:
        events = []
        for rule in self.ruleset.rules:
            if rule.applies(p.camera, self._zones.get(p.camera)):
                event = self._step(rule, p)
                if event is not None:
                    events.append(event)
        return events

    def _step(self, rule: RuleConfig, p: Prediction) -> ViolationEvent | None:
        key = (rule.id, p.camera)
        state = self._state.get(key, _State())
        action = rule.when.action
        confidence = sum(p.probs.get(label, 0.0) for label in self.ruleset.groups[action])
        event = None
        if confidence >= rule.when.min_confidence:
            state = replace(state, streak=state.streak + 1,
                            streak_start=state.streak_start if state.streak else p.t0)
            if state.open is not None:
                if confidence > state.open.confidence:
                    event = replace(state.open, kind="updated", confidence=confidence, mono=p.mono)
                    state = replace(state, open=event)
            elif state.streak >= rule.when.for_windows and p.t1 >= state.quiet_until:
                event = ViolationEvent("opened", str(uuid.uuid4()), rule.id, rule.severity, p.camera, action,
                                       confidence, state.streak_start, None, p.mono)
                state = replace(state, open=event)
        else:
            if state.open is not None:
                event = replace(state.open, kind="closed", ended_at=p.t1, mono=p.mono)
                state = replace(state, open=None, quiet_until=p.t1 + rule.cooldown)
            state = replace(state, streak=0)
        self._state[key] = state
        return event

    def close_all(self, now: float, mono: float) -> list[ViolationEvent]:
        """Close every open episode (shutdown, end of stream)."""
        events = []
        for key, state in self._state.items():
            if state.open is not None:
                events.append(replace(state.open, kind="closed", ended_at=now, mono=mono))
                self._state[key] = replace(state, open=None, streak=0)
        return events

    def open_count(self) -> int:
        return sum(s.open is not None for s in self._state.values())
