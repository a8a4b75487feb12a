"""RuleEngine: predictions in, violation episodes out, one small state machine per rule x stream (a camera,
or one zone of a camera: `Prediction.zone`).

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

Trace: a closed event carries the confidence of the rule's action at each window the tracker saw
from the windows that opened the episode to the one that closed it (QA's confidence timeline),
thinned to at most MAX_TRACE evenly spaced points however long the episode lasts.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import replace

from monitor.messages import MAX_TRACE, Prediction, ViolationEvent
from monitor.rules.ruleset import RuleSet
from monitor.rules.schedule import Calendar
from monitor.rules.schema import AbsenceRule, DurationRule, ForbiddenRule, RuleConfig, SequenceRule

STARTED, STOPPED = "started", "stopped"


class _View:
    """One prediction as the rules see it: the confidence of each action its camera's rules name, and
    whether each schedule is active, computed once for all the rules."""

    __slots__ = ("_active", "confs", "p", "rules_hash", "t")

    def __init__(self, p: Prediction, confs: dict[str, float], rules_hash: str):
        self.p, self.t, self.confs, self.rules_hash = p, p.t1, confs, rules_hash
        self._active: dict[int, bool] = {}

    def active(self, calendar: Calendar) -> bool:
        value = self._active.get(id(calendar))  # calendars are shared by equal schedules (RuleEngine._calendar)
        if value is None:
            value = self._active[id(calendar)] = calendar.active_at(calendar.local(self.t))
        return value


class _Presence:
    """Whether an action is going on, debounced by for_windows / release_windows."""

    __slots__ = ("end", "hits", "misses", "needed", "on", "peak", "release", "start")

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


class _Trace:
    """(time, confidence) points of one episode: every `every`-th window, halved whenever MAX_TRACE is reached."""

    __slots__ = ("every", "last", "points", "seen")

    def __init__(self, lead: list[tuple[float, float]]):
        self.points, self.every, self.seen = lead, 1, 0
        self.last = lead[-1] if lead else None

    def add(self, point: tuple[float, float]) -> None:
        self.seen += 1
        self.last = point
        if self.seen % self.every:
            return
        self.points.append(point)
        if len(self.points) >= MAX_TRACE:
            del self.points[1::2]
            self.every *= 2

    def done(self) -> tuple[tuple[float, float], ...]:
        """The points, ending with the last window seen (the one that closed the episode)."""
        if self.last is not None and (not self.points or self.points[-1] != self.last):
            return (*self.points[-(MAX_TRACE - 1):], self.last)
        return tuple(self.points)


_LEAD = 32  # windows kept before an episode opens: its run-up (for_windows) goes into the trace


class _Tracker:
    """One rule on one camera: the presence of the action it watches, and its open episode.

    `quiet` (nothing going on: no presence, no episode) lets the engine skip the tracker on every
    window whose confidence for `watched` is below the threshold, as stepping it would change
    nothing; a `timed` one is also asked whether time alone `wakes` it. Most windows of most rules
    are skipped this way."""

    timed = False

    def __init__(self, rule: RuleConfig, camera: str, digest: str, calendar: Calendar | None, watched: str):
        self.rule, self.camera, self.digest, self.calendar, self.watched = rule, camera, digest, calendar, watched
        self.threshold = rule.min_confidence
        self.presence = _Presence(rule)
        self.episode: ViolationEvent | None = None
        self.recent: deque[tuple[float, float]] = deque(maxlen=_LEAD)  # windows seen while no episode is open
        self.trace = _Trace([])
        self.quiet = not self.timed
        self.quiet_until = -math.inf  # cooldown

    def wakes(self, v: _View) -> bool:
        """For a quiet, timed tracker on a window below its threshold: does this window change anything?"""
        raise NotImplementedError

    def step(self, v: _View) -> list[ViolationEvent]:
        point = (v.t, v.confs[self.watched])
        if self.episode is None:
            self.recent.append(point)
        else:
            self.trace.add(point)
        if self.calendar is not None and not v.active(self.calendar):
            events = self._inactive(v)
        else:
            events = self._active(v)
        self.quiet = self._quiet()
        return events

    def _quiet(self) -> bool:
        p = self.presence
        return self.episode is None and not p.on and not p.hits

    def _active(self, v: _View) -> list[ViolationEvent]:
        raise NotImplementedError

    def _inactive(self, v: _View) -> list[ViolationEvent]:
        self.presence.reset()
        return self.close(v.t, v.p.mono)

    def _watch(self, v: _View) -> tuple[bool, str | None]:
        """Feed the watched action's confidence to the presence: (does this window show it, start/stop/None)."""
        conf = v.confs[self.watched]
        holds = conf >= self.threshold
        return holds, self.presence.step(holds, conf, v.t)

    def _open(self, v: _View, started_at: float, confidence: float) -> list[ViolationEvent]:
        if v.t < self.quiet_until:
            return []
        rule = self.rule
        self.trace = _Trace([p for p in self.recent if p[0] >= started_at])
        self.episode = ViolationEvent("opened", str(uuid.uuid4()), rule.id, rule.severity, self.camera, self.watched,
                                      confidence, started_at, None, v.p.mono, rule.labels, v.rules_hash, v.p.zone)
        return [self.episode]

    def _peak(self, confidence: float, mono: float) -> list[ViolationEvent]:
        if self.episode is None or not confidence > self.episode.confidence:
            return []
        self.episode = replace(self.episode, kind="updated", confidence=confidence, mono=mono)
        return [self.episode]

    def close(self, at: float, mono: float) -> list[ViolationEvent]:
        if self.episode is None:
            return []
        event = replace(self.episode, kind="closed", ended_at=at, mono=mono, trace=self.trace.done())
        self.episode = None
        self.recent.clear()
        self.quiet_until = at + self.rule.cooldown
        return [event]


class _Forbidden(_Tracker):
    def _active(self, v: _View) -> list[ViolationEvent]:
        _, change = self._watch(v)
        p = self.presence
        if change == STOPPED:
            return self.close(p.end, v.p.mono)
        if not p.on:
            return []
        if self.episode is None:
            return self._open(v, p.start, p.peak)
        return self._peak(p.peak, v.p.mono)


class _Required(_Tracker):
    """A sequence rule's `require`, on its own tracker: when it was last present, schedule or not."""

    def __init__(self, rule: SequenceRule, camera: str, digest: str):
        super().__init__(rule, camera, digest, None, rule.require)
        self.seen_at: float | None = None

    def _active(self, v: _View) -> list[ViolationEvent]:
        holds, _ = self._watch(v)
        if holds and self.presence.on:
            self.seen_at = v.t
        return []


class _Sequence(_Tracker):
    rule: SequenceRule

    def __init__(self, rule: SequenceRule, camera: str, digest: str, calendar: Calendar | None, required: _Required):
        super().__init__(rule, camera, digest, calendar, rule.before)
        self.required = required  # stepped before this one, on every window

    def _active(self, v: _View) -> list[ViolationEvent]:
        _, change = self._watch(v)
        p = self.presence
        if change == STOPPED:
            return self.close(p.end, v.p.mono)
        if change == STARTED:
            seen_at = self.required.seen_at
            if seen_at is None or seen_at < p.start - self.rule.within:
                return self._open(v, p.start, p.peak)
            return []
        return self._peak(p.peak, v.p.mono)


class _Duration(_Tracker):
    rule: DurationRule

    def _active(self, v: _View) -> list[ViolationEvent]:
        rule, p = self.rule, self.presence
        holds, change = self._watch(v)
        if change == STOPPED:
            events = self.close(p.end, v.p.mono)
            if rule.min is not None and p.end - p.start < rule.min:
                events += self._open(v, p.start, p.peak) + self.close(p.end, v.p.mono)
            return events
        if rule.max is None or not (p.on and holds):  # judged on windows that show the action
            return []
        if self.episode is None and v.t - p.start > rule.max:
            return self._open(v, p.start + rule.max, p.peak)
        return self._peak(p.peak, v.p.mono)


class _Absence(_Tracker):
    rule: AbsenceRule
    timed = True

    def __init__(self, rule: AbsenceRule, camera: str, digest: str, calendar: Calendar | None):
        super().__init__(rule, camera, digest, calendar, rule.action)
        self.since: float | None = None  # last presence, or when the rule became active
        self.best = 0.0  # highest confidence of the action since then

    def wakes(self, v: _View) -> bool:
        due = self.episode is None and v.t - self.since > self.rule.every  # type: ignore[operator]
        return due or v.confs[self.watched] > self.best or (self.calendar is not None and not v.active(self.calendar))

    def _quiet(self) -> bool:  # an open episode waits for the action, which the threshold check watches
        p = self.presence
        return self.since is not None and not p.on and not p.hits

    def _active(self, v: _View) -> list[ViolationEvent]:
        if self.since is None:
            self.since, self.best = v.t, 0.0
        holds, _ = self._watch(v)
        if holds and self.presence.on:
            self.since, self.best = v.t, 0.0
            return self.close(v.t, v.p.mono)
        self.best = max(self.best, min(1.0, v.confs[self.watched]))
        if self.episode is None and v.t - self.since > self.rule.every:
            return self._open(v, self.since + self.rule.every, 1.0 - self.best)
        return []

    def _inactive(self, v: _View) -> list[ViolationEvent]:
        self.since = None
        return super()._inactive(v)


def _trackers(rule: RuleConfig, camera: str, digest: str, calendar: Calendar | None) -> list[_Tracker]:
    if isinstance(rule, SequenceRule):
        required = _Required(rule, camera, digest)
        return [required, _Sequence(rule, camera, digest, calendar, required)]
    if isinstance(rule, ForbiddenRule):
        return [_Forbidden(rule, camera, digest, calendar, rule.action)]
    if isinstance(rule, DurationRule):
        return [_Duration(rule, camera, digest, calendar, rule.action)]
    assert isinstance(rule, AbsenceRule)
    return [_Absence(rule, camera, digest, calendar)]


class _Camera:
    """The trackers of the rules that apply to one camera, and the actions they watch with their labels."""

    def __init__(self, trackers: list[_Tracker], groups: dict[str, tuple[str, ...]]):
        self.trackers = trackers
        names = sorted({t.watched for t in trackers})
        self.actions = [(a, groups.get(a, (a,))) for a in names]

    def confidences(self, probs: dict[str, float]) -> dict[str, float]:
        return {a: probs.get(labels[0], 0.0) if len(labels) == 1 else sum(probs.get(x, 0.0) for x in labels)
                for a, labels in self.actions}


class RuleEngine:
    """Only one thread may call it (the daemon's analysis thread).

    Each stream (a camera, or one zone of a camera) has its own trackers. `zones`: each camera's `zone`,
    the zone rules see for a camera without zones; a zone of a camera is seen by its own name."""

    def __init__(self, ruleset: RuleSet, zones: dict[str, str | None]):
        self.ruleset = ruleset
        self._zones = dict(zones)
        self._digests = {r.id: ruleset.digest(r) for r in ruleset.rules}
        self._cameras: dict[tuple[str, str], _Camera] = {}  # by stream, built on its first prediction
        self._calendars: dict[Calendar, Calendar] = {}
        self._open = 0

    def observe(self, p: Prediction) -> list[ViolationEvent]:
        camera = self._cameras.get((p.camera, p.zone))
        if camera is None:
            camera = self._cameras[(p.camera, p.zone)] = self._build((p.camera, p.zone), {})
        confs = camera.confidences(p.probs)
        view = _View(p, confs, self.ruleset.hash)
        events: list[ViolationEvent] = []
        for tracker in camera.trackers:
            below = confs[tracker.watched] < tracker.threshold
            if tracker.quiet and below and not (tracker.timed and tracker.wakes(view)):
                continue
            events += tracker.step(view)
        return self._counted(events) if events else events

    def close_all(self, now: float, mono: float) -> list[ViolationEvent]:
        """Close every open episode (shutdown, end of stream)."""
        return self._counted([e for c in self._cameras.values() for t in c.trackers for e in t.close(now, mono)])

    def replace(self, ruleset: RuleSet, now: float, mono: float) -> list[ViolationEvent]:
        """Swap in a new rule set. Rules whose content is unchanged keep their state and open episodes;
        episodes of removed or changed rules are closed (ended_at = now)."""
        digests = {r.id: ruleset.digest(r) for r in ruleset.rules}
        old, events = self._cameras, []
        self.ruleset, self._digests, self._cameras = ruleset, digests, {}
        for stream, camera in old.items():
            kept: dict[str, list[_Tracker]] = {}
            for tracker in camera.trackers:
                if digests.get(tracker.rule.id) == tracker.digest:
                    kept.setdefault(tracker.rule.id, []).append(tracker)
                else:
                    events += tracker.close(now, mono)
            self._cameras[stream] = self._build(stream, kept)
        return self._counted(events)

    def open_count(self) -> int:
        return self._open

    def _build(self, stream: tuple[str, str], kept: dict[str, list[_Tracker]]) -> _Camera:
        camera, zone = stream[0], stream[1] or self._zones.get(stream[0])
        trackers = [t for r in self.ruleset.rules if r.applies(camera, zone)
                    for t in kept.get(r.id) or _trackers(r, camera, self._digests[r.id], self._calendar(r))]
        return _Camera(trackers, self.ruleset.groups)

    def _calendar(self, rule: RuleConfig) -> Calendar | None:
        """Equal schedules share one Calendar, so a window evaluates each schedule once."""
        if rule.schedule is None:
            return None
        calendar = rule.schedule.calendar()
        return self._calendars.setdefault(calendar, calendar)

    def _counted(self, events: list[ViolationEvent]) -> list[ViolationEvent]:
        self._open += sum(e.kind == "opened" for e in events) - sum(e.kind == "closed" for e in events)
        return events
