"""RuleEngine: predictions in, violation episodes out, one small state machine per rule x camera.

Clock. The engine's only clock is each window's end time `t1` (UTC epoch seconds): episode
times, schedules (evaluated in the rule's time zone at t1), `within`, `every`, `min`, `max` and
`cooldown` are all measured on it, so a rule behaves the same live and in a rule test.

Presence (every kind, every action it names). An action *starts* at the window that completes
`for_windows` consecutive windows at or above `min_confidence` (its start time is the first of
them) and *stops* at the window that completes `release_windows` consecutive windows below it
(its stop time is the first of those). A confidence flickering around the threshold therefore
neither starts nor stops anything by itself. A group's confidence is the sum of its labels'.

Episodes, per kind, and the events they emit (`opened`, then `updated` each time the peak
confidence rises, then `closed`):
- forbidden: opened when the action starts (started_at = its start), updated, closed when it
  stops (ended_at = its stop).
- sequence: opened when `before` starts and `require` was not present at any window in the
  `within` before that start; updated; closed when `before` stops. `require` is tracked even
  outside the schedule; the episode's action is `before`.
- duration, max: opened while the action is still going, at the first window at which it has
  lasted longer than `max` (started_at = its start + max); updated; closed when it stops.
- duration, min: when an action stops having lasted less than `min`, an episode is opened and
  closed in the same call (started_at, ended_at = the action's start and stop; its peak confidence).
- absence: opened at the first window more than `every` after the action was last present, or
  after the rule became active (started_at = that deadline; confidence = 1 - the highest confidence
  the action reached since); never updated; closed at the first window where it is present.
  Only the camera's own windows move its clock: a camera that sends nothing is the camera-down
  alert's business, and when it comes back a missed deadline opens the episode at once.
Every open episode also closes at the first window outside the rule's schedule (ended_at = that
window), at `close_all` (shutdown, end of stream: ended_at = now) and at `replace` when its rule
is removed or changed. `cooldown`: no episode of a rule opens on a camera before cooldown has
passed since the previous one closed there; an episode that describes a state (forbidden,
duration max, absence) then opens late if the state still holds, one that describes an event
(sequence, duration min) is dropped.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from datetime import datetime

from monitor.records import Prediction, ViolationEvent
from monitor.rules.ruleset import RuleSet
from monitor.rules.schedule import Schedule
from monitor.rules.schema import AbsenceRule, DurationRule, ForbiddenRule, RuleConfig, SequenceRule

STARTED, STOPPED = "started", "stopped"


class _View:
    """One prediction as the rules see it: action confidences and local times, each computed once."""

    __slots__ = ("p", "t", "rules_hash", "_groups", "_conf", "_local")

    def __init__(self, p: Prediction, groups: dict[str, tuple[str, ...]], rules_hash: str):
        self.p, self.t, self.rules_hash, self._groups = p, p.t1, rules_hash, groups
        self._conf: dict[str, float] = {}
        self._local: dict[str, datetime] = {}

    def conf(self, action: str) -> float:
        value = self._conf.get(action)
        if value is None:
            probs = self.p.probs
            value = self._conf[action] = sum(probs.get(label, 0.0) for label in self._groups.get(action, (action,)))
        return value

    def active(self, schedule: Schedule) -> bool:
        local = self._local.get(schedule.tz)
        if local is None:
            local = self._local[schedule.tz] = schedule.local(self.t)
        return schedule.active_at(local)


class _Presence:
    """Whether an action is going on, debounced by for_windows / release_windows."""

    __slots__ = ("needed", "release", "on", "hits", "misses", "start", "end", "peak")

    def __init__(self, rule: RuleConfig):
        self.needed, self.release = rule.for_windows, rule.release_windows
        self.reset()

    def reset(self) -> None:
        self.on, self.hits, self.misses = False, 0, 0
        self.start = self.end = self.peak = 0.0

    def step(self, holds: bool, conf: float, t: float) -> str | None:
        if holds:
            self.misses = 0
            if self.on:
                self.peak = max(self.peak, conf)
                return None
            self.hits += 1
            self.start, self.peak = (t, conf) if self.hits == 1 else (self.start, max(self.peak, conf))
            if self.hits >= self.needed:
                self.on = True
                return STARTED
            return None
        self.hits = 0
        if not self.on:
            return None
        self.misses += 1
        if self.misses == 1:
            self.end = t
        if self.misses >= self.release:
            self.on, self.misses = False, 0
            return STOPPED
        return None


class _Tracker:
    """One rule on one camera: its presence state and its open episode."""

    def __init__(self, rule: RuleConfig, camera: str, digest: str):
        self.rule, self.camera, self.digest = rule, camera, digest
        self.presence = _Presence(rule)
        self.episode: ViolationEvent | None = None
        self.quiet_until = -math.inf  # cooldown

    def step(self, v: _View) -> list[ViolationEvent]:
        if self.rule.schedule is not None and not v.active(self.rule.schedule):
            return self._inactive(v)
        return self._active(v)

    def _active(self, v: _View) -> list[ViolationEvent]:
        raise NotImplementedError

    def _inactive(self, v: _View) -> list[ViolationEvent]:
        self.presence.reset()
        return self.close(v.t, v.p.mono)

    def _watch(self, v: _View, action: str) -> tuple[bool, str | None]:
        """Feed `action`'s confidence to the presence; (does this window show it, start/stop/None)."""
        conf = v.conf(action)
        holds = conf >= self.rule.min_confidence
        return holds, self.presence.step(holds, conf, v.t)

    def _open(self, v: _View, action: str, started_at: float, confidence: float) -> list[ViolationEvent]:
        if v.t < self.quiet_until:
            return []
        rule = self.rule
        self.episode = ViolationEvent("opened", str(uuid.uuid4()), rule.id, rule.severity, self.camera, action,
                                      confidence, started_at, None, v.p.mono, rule.labels, v.rules_hash)
        return [self.episode]

    def _peak(self, confidence: float, mono: float) -> list[ViolationEvent]:
        if self.episode is None or not confidence > self.episode.confidence:
            return []
        self.episode = replace(self.episode, kind="updated", confidence=confidence, mono=mono)
        return [self.episode]

    def close(self, at: float, mono: float) -> list[ViolationEvent]:
        if self.episode is None:
            return []
        event = replace(self.episode, kind="closed", ended_at=at, mono=mono)
        self.episode = None
        self.quiet_until = at + self.rule.cooldown
        return [event]


class _Forbidden(_Tracker):
    rule: ForbiddenRule

    def _active(self, v: _View) -> list[ViolationEvent]:
        _, change = self._watch(v, self.rule.action)
        p = self.presence
        if change == STOPPED:
            return self.close(p.end, v.p.mono)
        if not p.on:
            return []
        if self.episode is None:
            return self._open(v, self.rule.action, p.start, p.peak)
        return self._peak(p.peak, v.p.mono)


class _Sequence(_Tracker):
    rule: SequenceRule

    def __init__(self, rule: SequenceRule, camera: str, digest: str):
        super().__init__(rule, camera, digest)  # self.presence tracks `before`
        self.required = _Presence(rule)
        self.required_at: float | None = None  # last window where `require` was present

    def step(self, v: _View) -> list[ViolationEvent]:
        conf = v.conf(self.rule.require)
        holds = conf >= self.rule.min_confidence
        self.required.step(holds, conf, v.t)
        if holds and self.required.on:
            self.required_at = v.t
        return super().step(v)

    def _active(self, v: _View) -> list[ViolationEvent]:
        _, change = self._watch(v, self.rule.before)
        p = self.presence
        if change == STOPPED:
            return self.close(p.end, v.p.mono)
        if change == STARTED:
            if self.required_at is None or self.required_at < p.start - self.rule.within:
                return self._open(v, self.rule.before, p.start, p.peak)
            return []
        return self._peak(p.peak, v.p.mono)


class _Duration(_Tracker):
    rule: DurationRule

    def _active(self, v: _View) -> list[ViolationEvent]:
        rule, p = self.rule, self.presence
        holds, change = self._watch(v, rule.action)
        if change == STOPPED:
            events = self.close(p.end, v.p.mono)
            if rule.min is not None and p.end - p.start < rule.min:
                events += self._open(v, rule.action, p.start, p.peak) + self.close(p.end, v.p.mono)
            return events
        if rule.max is None or not (p.on and holds):  # judged on windows that show the action
            return []
        if self.episode is None and v.t - p.start > rule.max:
            return self._open(v, rule.action, p.start + rule.max, p.peak)
        return self._peak(p.peak, v.p.mono)


class _Absence(_Tracker):
    rule: AbsenceRule

    def __init__(self, rule: AbsenceRule, camera: str, digest: str):
        super().__init__(rule, camera, digest)
        self.since: float | None = None  # last presence, or when the rule became active
        self.best = 0.0  # highest confidence of the action since then

    def _active(self, v: _View) -> list[ViolationEvent]:
        if self.since is None:
            self.since, self.best = v.t, 0.0
        holds, _ = self._watch(v, self.rule.action)
        if holds and self.presence.on:
            self.since, self.best = v.t, 0.0
            return self.close(v.t, v.p.mono)
        self.best = max(self.best, min(1.0, v.conf(self.rule.action)))
        if self.episode is None and v.t - self.since > self.rule.every:
            return self._open(v, self.rule.action, self.since + self.rule.every, 1.0 - self.best)
        return []

    def _inactive(self, v: _View) -> list[ViolationEvent]:
        self.since = None
        return super()._inactive(v)


_TRACKERS: dict[type[RuleConfig], type[_Tracker]] = {
    ForbiddenRule: _Forbidden, SequenceRule: _Sequence, DurationRule: _Duration, AbsenceRule: _Absence}


class RuleEngine:
    """Only one thread may call it (the daemon's analysis thread)."""

    def __init__(self, ruleset: RuleSet, zones: dict[str, str | None]):
        self.ruleset = ruleset
        self._zones = dict(zones)
        self._digests = {r.id: ruleset.digest(r) for r in ruleset.rules}
        self._trackers: dict[str, list[_Tracker]] = {}  # camera -> the rules that apply to it, built on first use
        self._open = 0

    def observe(self, p: Prediction) -> list[ViolationEvent]:
        trackers = self._trackers.get(p.camera)
        if trackers is None:
            trackers = self._trackers[p.camera] = self._build(p.camera, {})
        view = _View(p, self.ruleset.groups, self.ruleset.hash)
        events = [e for tracker in trackers for e in tracker.step(view)]
        return self._counted(events)

    def close_all(self, now: float, mono: float) -> list[ViolationEvent]:
        """Close every open episode (shutdown, end of stream)."""
        return self._counted([e for ts in self._trackers.values() for t in ts for e in t.close(now, mono)])

    def replace(self, ruleset: RuleSet, now: float, mono: float) -> list[ViolationEvent]:
        """Swap in a new rule set. Rules whose content is unchanged keep their state and open episodes;
        episodes of removed or changed rules are closed (ended_at = now)."""
        digests = {r.id: ruleset.digest(r) for r in ruleset.rules}
        old, events = self._trackers, []
        self.ruleset, self._digests, self._trackers = ruleset, digests, {}
        for camera, trackers in old.items():
            kept = {}
            for tracker in trackers:
                if digests.get(tracker.rule.id) == tracker.digest:
                    kept[tracker.rule.id] = tracker
                else:
                    events += tracker.close(now, mono)
            self._trackers[camera] = self._build(camera, kept)
        return self._counted(events)

    def open_count(self) -> int:
        return self._open

    def _build(self, camera: str, kept: dict[str, _Tracker]) -> list[_Tracker]:
        zone = self._zones.get(camera)
        return [kept.get(r.id) or _TRACKERS[type(r)](r, camera, self._digests[r.id])
                for r in self.ruleset.rules if r.applies(camera, zone)]

    def _counted(self, events: list[ViolationEvent]) -> list[ViolationEvent]:
        self._open += sum(e.kind == "opened" for e in events) - sum(e.kind == "closed" for e in events)
        return events
