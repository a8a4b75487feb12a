"""The rule engine against hand-written prediction streams, one kind at a time, then random streams.

Windows are one second apart and t0 == t1 unless a test says otherwise; the engine's clock is t1.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.messages import Prediction, ViolationEvent
from monitor.rules import RuleEngine, RuleSet, parse_rule
from monitor.rules.schedule import Schedule
from support.examples import examples

LABELS = ["idle", "smoking", "eating", "drinking", "sanitize", "enter", "gowning", "clearance"]
GROUPS = {label: (label,) for label in LABELS} | {"food_or_drink": ("eating", "drinking")}


def ruleset(*rules: dict, hash: str = "set-1", groups: dict | None = None) -> RuleSet:
    return RuleSet(tuple(parse_rule(r) for r in rules), groups or GROUPS, hash)


def forbidden(**fields) -> dict:
    return {"id": "no-smoking", "action": "smoking", "min_confidence": 0.8} | fields


def pred(t: float, camera: str = "cam", **probs: float) -> Prediction:
    return Prediction(camera, t, t, t, probs or {"idle": 1.0})


def feed(engine: RuleEngine, stream: list[tuple[float, dict]], camera: str = "cam") -> list[ViolationEvent]:
    return [e for t, probs in stream for e in engine.observe(pred(t, camera, **probs))]


def seconds(start: float, end: float, **probs: float) -> list[tuple[float, dict]]:
    """One window a second from start up to (not including) end."""
    return [(float(t), probs) for t in range(int(start), int(end))]


def episodes(events: list[ViolationEvent]) -> list[tuple]:
    """(rule, started_at, ended_at) of each closed episode, checking the event order on the way."""
    open_: dict[str, ViolationEvent] = {}
    out = []
    for e in events:
        if e.kind == "opened":
            assert e.episode_id not in open_
            open_[e.episode_id] = e
        elif e.kind == "updated":
            assert e.episode_id in open_
        else:
            opened = open_.pop(e.episode_id)
            assert e.started_at == opened.started_at
            out.append((e.rule, e.started_at, e.ended_at))
    return out + [(e.rule, e.started_at, None) for e in open_.values()]


# -- forbidden ---------------------------------------------------------------------------------

def test_flicker_around_the_threshold_opens_one_episode():
    flicker = [(float(t), {"smoking": 0.85 if t % 2 else 0.75}) for t in range(10, 30)]
    stream = seconds(0, 10, idle=1) + flicker + seconds(30, 40, idle=1)
    held = RuleEngine(ruleset(forbidden(release_windows=2)), {"cam": None})
    assert episodes(feed(held, stream)) == [("no-smoking", 11.0, 30.0)], "one episode, not one per bounce"
    strict = RuleEngine(ruleset(forbidden(for_windows=2)), {"cam": None})
    assert feed(strict, stream) == [], "never two windows in a row: never started"


def test_hysteresis_closes_after_release_windows_at_the_first_window_without_the_action():
    engine = RuleEngine(ruleset(forbidden(release_windows=3)), {"cam": None})
    stream = seconds(0, 5, smoking=0.9) + seconds(5, 7, idle=1) + seconds(7, 9, smoking=0.9) + seconds(9, 15, idle=1)
    assert episodes(feed(engine, stream)) == [("no-smoking", 0.0, 9.0)], "a 2-window gap is bridged; 3 close it"


def test_an_episode_is_opened_once_updated_when_its_peak_rises_and_closed_once():
    rules = ruleset(forbidden(severity="critical", for_windows=2, labels={"sop": "SOP-14"}), hash="abc")
    engine = RuleEngine(rules, {"cam": None})
    stream = [(0.0, {"smoking": 0.85}), (1.0, {"smoking": 0.9}), (2.0, {"smoking": 0.82}),
              (3.0, {"smoking": 0.95}), (4.0, {"idle": 1.0})]
    events = feed(engine, stream)
    assert [(e.kind, e.confidence) for e in events] == [("opened", 0.9), ("updated", 0.95), ("closed", 0.95)]
    assert len({e.episode_id for e in events}) == 1
    assert all(e.labels == {"sop": "SOP-14"} and e.rules_hash == "abc" and e.severity == "critical" for e in events)
    assert (events[0].started_at, events[-1].ended_at, events[0].action) == (0.0, 4.0, "smoking")
    assert engine.open_count() == 0


def test_cooldown_delays_a_state_episode_until_it_has_passed():
    engine = RuleEngine(ruleset(forbidden(cooldown="10s")), {"cam": None})
    stream = seconds(0, 3, smoking=0.9) + seconds(3, 5, idle=1) + seconds(5, 20, smoking=0.9) + seconds(20, 22, idle=1)
    assert episodes(feed(engine, stream)) == [("no-smoking", 0.0, 3.0), ("no-smoking", 5.0, 20.0)]
    opened_again = [e for e in feed(RuleEngine(ruleset(forbidden(cooldown="10s")), {"cam": None}), stream)
                    if e.kind == "opened"][1]
    assert opened_again.mono == 13.0, "opened when the cooldown (3 + 10 s) was over, dated from the action's start"


def test_groups_sum_their_members():
    engine = RuleEngine(ruleset(forbidden(id="no-food", action="food_or_drink", min_confidence=0.7)), {"cam": None})
    assert [e.kind for e in feed(engine, [(0.0, {"eating": 0.4, "drinking": 0.4})])] == ["opened"]
    assert [e.action for e in engine.close_all(1.0, 1.0)] == ["food_or_drink"]


def test_applies_to_globs_over_cameras_and_zones():
    rules = ruleset(forbidden(applies_to={"cameras": ["line-*"], "zones": ["gmp-*"]}))
    engine = RuleEngine(rules, {"line-1": "gmp-a", "line-2": "office", "dock": "gmp-b", "line-3": None})
    fired = {cam for cam in ("line-1", "line-2", "dock", "line-3") if engine.observe(pred(0, cam, smoking=0.9))}
    assert fired == {"line-1"}
    everywhere = RuleEngine(ruleset(forbidden()), {"cam": None})
    assert everywhere.observe(pred(0, "cam", smoking=0.9)), "default applies_to covers cameras without a zone"


# -- sequence ----------------------------------------------------------------------------------

SANITIZE = {"id": "sanitize-first", "kind": "sequence", "require": "sanitize", "before": "enter", "within": "60s",
            "min_confidence": 0.7, "for_windows": 2}


@pytest.mark.parametrize("sanitized_at, violation", [
    (None, True),  # never
    (78, False),  # seen until 79: 21 s before the entry
    (0, True),  # more than 60 s before (last seen at 1, entry at 100)
    (39, False),  # last seen at 40: exactly 60 s before
    (102, True),  # only once the entry had started
])
def test_sequence_requires_the_first_action_within_the_time_before_the_second(sanitized_at, violation):
    engine = RuleEngine(ruleset(SANITIZE), {"cam": None})
    stream = seconds(0, 130, idle=1)
    stream[100:104] = seconds(100, 104, enter=0.9)
    if sanitized_at is not None:
        for k in (sanitized_at, sanitized_at + 1):
            stream[k] = (stream[k][0], stream[k][1] | {"sanitize": 0.9})
    expected = [("sanitize-first", 100.0, 104.0)] if violation else []
    assert episodes(feed(engine, stream)) == expected


def test_sequence_violations_within_the_cooldown_are_dropped():
    engine = RuleEngine(ruleset(SANITIZE | {"cooldown": "5m"}), {"cam": None})
    stream = seconds(0, 200, idle=1)
    for start in (10, 50, 150):
        stream[start:start + 3] = seconds(start, start + 3, enter=0.9)
    assert episodes(feed(engine, stream)) == [("sanitize-first", 10.0, 13.0)]


# -- duration ----------------------------------------------------------------------------------

GOWNING = {"id": "gowning-short", "kind": "duration", "action": "gowning", "min": "30s", "min_confidence": 0.6,
           "release_windows": 3}


def test_duration_min_reports_a_too_short_action_when_it_ends():
    engine = RuleEngine(ruleset(GOWNING), {"cam": None})
    during = feed(engine, seconds(0, 20, gowning=0.9) + seconds(20, 22, idle=1))
    assert during == [], "nothing while it goes on, nor on the first windows without it"
    ending = engine.observe(pred(22))
    assert [(e.kind, e.started_at, e.ended_at) for e in ending] == [("opened", 0.0, None), ("closed", 0.0, 20.0)]
    assert engine.open_count() == 0


def test_duration_min_bridges_a_doubtful_window_and_accepts_a_long_enough_action():
    engine = RuleEngine(ruleset(GOWNING), {"cam": None})
    stream = [*seconds(0, 15, gowning=0.9), (15.0, {"gowning": 0.2}), *seconds(16, 35, gowning=0.9)]
    assert feed(engine, stream + seconds(35, 40, idle=1)) == []
    split = RuleEngine(ruleset(GOWNING | {"release_windows": 1}), {"cam": None})
    assert episodes(feed(split, stream + seconds(35, 40, idle=1))) == [("gowning-short", 0.0, 15.0),
                                                                        ("gowning-short", 16.0, 35.0)]


def test_duration_max_opens_while_the_action_goes_on():
    rules = ruleset({"id": "unattended", "kind": "duration", "action": "idle", "max": "10m", "release_windows": 2})
    engine = RuleEngine(rules, {"cam": None})
    stream = [(t * 30.0, {"idle": 0.9}) for t in range(30)]  # 0 .. 14m30s
    events = feed(engine, stream)
    assert [(e.kind, e.started_at, e.mono) for e in events] == [("opened", 600.0, 630.0)]
    events = feed(engine, [(900.0, {"smoking": 1.0}), (930.0, {"smoking": 1.0})])
    assert [(e.kind, e.ended_at) for e in events] == [("closed", 900.0)]


def test_duration_max_is_judged_on_windows_that_show_the_action():
    rules = ruleset({"id": "unattended", "kind": "duration", "action": "idle", "max": "10s", "release_windows": 5})
    engine = RuleEngine(rules, {"cam": None})
    stream = seconds(0, 9, idle=0.9) + seconds(9, 20, smoking=1)  # lasted 9 s; the release windows run past 10 s
    assert feed(engine, stream) == []


# -- absence -----------------------------------------------------------------------------------

CLEARANCE = {"id": "clearance", "kind": "absence", "action": "clearance", "every": "1h", "min_confidence": 0.7}


def test_absence_opens_at_the_deadline_once_and_closes_when_the_action_is_seen():
    engine = RuleEngine(ruleset(CLEARANCE), {"cam": None})
    stream = [(t * 60.0, {"idle": 0.8, "clearance": 0.2}) for t in range(200)]  # 3h20m without it
    stream += [(12000.0, {"clearance": 0.9}), (12060.0, {"idle": 1.0})]
    events = feed(engine, stream)
    assert [(e.kind, e.started_at, e.ended_at) for e in events] == [("opened", 3600.0, None),
                                                                     ("closed", 3600.0, 12000.0)]
    assert events[0].confidence == pytest.approx(0.8), "1 - the highest confidence the action reached"


def test_absence_clock_restarts_when_seen_and_a_silent_camera_is_judged_when_it_returns():
    engine = RuleEngine(ruleset(CLEARANCE), {"cam": None})
    assert feed(engine, [(0.0, {}), (3000.0, {"clearance": 0.9}), (6500.0, {})]) == [], "seen at 3000: due at 6600"
    events = feed(engine, [(9000.0, {})])  # the camera was silent from 6500 to 9000
    assert [(e.kind, e.started_at) for e in events] == [("opened", 6600.0)]


# -- schedules ---------------------------------------------------------------------------------

def utc(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def test_overnight_ranges_belong_to_the_day_they_start_on():
    night = Schedule(days=["fri"], between=["22:00", "06:00"], tz="UTC").calendar()
    active = lambda *when: night.active_at(night.local(utc(*when)))
    assert active(2024, 5, 10, 22, 0) and active(2024, 5, 11, 5, 59), "Friday 22:00 to Saturday 06:00"
    assert not active(2024, 5, 10, 5, 0), "Friday early morning belongs to Thursday's night"
    assert not active(2024, 5, 11, 22, 30) and not active(2024, 5, 11, 6, 0)


def test_schedules_keep_local_hours_across_dst_changes():
    spring = Schedule(between=["01:00", "03:00"], tz="Europe/Copenhagen").calendar()  # 2024-03-31 02:00 -> 03:00
    minutes = [utc(2024, 3, 30, 23, 0) + 60 * m for m in range(240)]
    assert sum(spring.active_at(spring.local(t)) for t in minutes) == 60, "the skipped hour never matches"
    autumn = Schedule(between=["02:00", "03:00"], tz="Europe/Copenhagen").calendar()  # 2024-10-27 03:00 -> 02:00
    minutes = [utc(2024, 10, 26, 22, 0) + 60 * m for m in range(300)]
    assert sum(autumn.active_at(autumn.local(t)) for t in minutes) == 120, "the repeated hour counts twice"


def test_an_episode_closes_at_the_schedule_end_and_a_new_one_opens_at_its_start():
    rule = forbidden(schedule={"days": ["sat", "sun"], "between": ["22:00", "06:00"], "tz": "Europe/Copenhagen"})
    engine = RuleEngine(ruleset(rule), {"cam": None})
    start = utc(2024, 3, 30, 20, 0)  # Saturday 21:00 CET; DST starts at 02:00 local that night
    stream = [(start + 600 * k, {"smoking": 0.9}) for k in range(6 * 12)]  # 12 h of smoking
    got = episodes(feed(engine, stream))
    assert got == [("no-smoking", utc(2024, 3, 30, 21, 0), utc(2024, 3, 31, 4, 0))], \
        "22:00 CET to 06:00 CEST: 7 hours, not 8"


# -- reload ------------------------------------------------------------------------------------

def test_replace_keeps_episodes_of_unchanged_rules_and_closes_the_others():
    eating = forbidden(id="no-food", action="food_or_drink")
    old = ruleset(forbidden(), eating, forbidden(id="gone"), hash="set-1")
    engine = RuleEngine(old, {"cam": None})
    opened = {e.rule: e for e in feed(engine, [(0.0, {"smoking": 0.9, "eating": 0.45, "drinking": 0.45})])}
    assert opened.keys() == {"no-smoking", "no-food", "gone"} and engine.open_count() == 3

    narrower = dict(GROUPS, food_or_drink=("eating",))  # the group changed: so did the rule naming it
    new = ruleset(forbidden(), eating, hash="set-2", groups=narrower)
    closed = engine.replace(new, now=5.0, mono=5.0)
    assert sorted((e.rule, e.kind, e.ended_at) for e in closed) == [("gone", "closed", 5.0), ("no-food", "closed", 5.0)]
    assert engine.open_count() == 1

    later = feed(engine, [(6.0, {"smoking": 0.95, "eating": 0.9}), (7.0, {"idle": 1.0})])
    by_rule = {(e.rule, e.kind): e for e in later}
    assert by_rule["no-smoking", "closed"].episode_id == opened["no-smoking"].episode_id, "the same episode went on"
    assert by_rule["no-smoking", "closed"].rules_hash == "set-1", "recorded with the set that opened it"
    assert by_rule["no-food", "opened"].rules_hash == "set-2"


# -- random streams ----------------------------------------------------------------------------

SCHEDULES = [None, {"between": ["22:00", "06:00"], "tz": "Europe/Copenhagen"},
             {"days": ["mon", "wed", "sat"], "between": [["00:30", "01:00"], ["12:00", "13:00"]], "tz": "UTC"}]
ACTIONS = ["smoking", "eating", "food_or_drink", "sanitize", "enter"]


@st.composite
def rule_dicts(draw, index: int) -> dict:
    common = {"id": f"r{index}", "min_confidence": draw(st.sampled_from([0.3, 0.5, 0.8])),
              "for_windows": draw(st.integers(1, 3)), "release_windows": draw(st.integers(1, 3)),
              "cooldown": draw(st.sampled_from([0, 5, 120])), "schedule": draw(st.sampled_from(SCHEDULES)),
              "applies_to": {"cameras": [draw(st.sampled_from(["*", "a"]))]}}
    action = draw(st.sampled_from(ACTIONS))
    time = st.sampled_from(["1s", "30s", "10m"])
    kind = draw(st.sampled_from(["forbidden", "sequence", "duration-min", "duration-max", "absence"]))
    extra = {"forbidden": {"action": action},
             "sequence": {"kind": "sequence", "require": "sanitize", "before": "enter", "within": draw(time)},
             "duration-min": {"kind": "duration", "action": action, "min": draw(time)},
             "duration-max": {"kind": "duration", "action": action, "max": draw(time)},
             "absence": {"kind": "absence", "action": action, "every": draw(time)}}[kind]
    return {k: v for k, v in (common | extra).items() if v is not None}


# Built once: a strategy built per draw cost more than the draw (a stream draws up to 840 values).
GAPS, LEVELS, CAMERAS = st.sampled_from([0.5, 1.0, 7.0, 600.0]), st.sampled_from([0.0, 0.2, 0.45, 0.9]), \
    st.sampled_from(["a", "b"])


@st.composite
def streams(draw) -> list[Prediction]:
    t = utc(2024, 3, 30, 23, 30)  # a DST night in Copenhagen
    out = []
    for _ in range(draw(st.integers(1, 120))):
        t += draw(GAPS)
        probs = {label: draw(LEVELS) for label in ("smoking", "eating", "drinking", "sanitize", "enter")}
        out.append(Prediction(draw(CAMERAS), t, t, t, probs))
    return out


def check_episodes(events: list[ViolationEvent]) -> None:
    """Per rule x camera: opened, updated*, closed, in turn; episodes never overlap."""
    last: dict[tuple, ViolationEvent] = {}
    for e in events:
        key = (e.rule, e.camera)
        prev = last.get(key)
        if e.kind == "opened":
            assert prev is None or prev.kind == "closed", f"{key}: opened while one is open"
            assert prev is None or e.started_at >= prev.ended_at, f"{key}: overlaps the previous episode"
        else:
            assert prev is not None and prev.kind != "closed" and prev.episode_id == e.episode_id
        if e.kind == "closed":
            assert e.ended_at >= e.started_at
        last[key] = e
    assert all(e.kind == "closed" for e in last.values()), "every episode is closed"


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 5), min_size=1, max_size=6, unique=True).flatmap(
           lambda ids: st.tuples(*[rule_dicts(i) for i in ids])),
       streams(), st.data())
def test_random_streams_give_well_formed_episodes(rules, stream, data):
    engine = RuleEngine(ruleset(*rules), {"a": "gmp-1", "b": None})
    reload_at = data.draw(st.integers(0, len(stream)))
    kept = data.draw(st.lists(st.sampled_from(rules), unique_by=lambda r: r["id"]))
    events = []
    for i, p in enumerate(stream):
        if i == reload_at:
            events += engine.replace(ruleset(*kept, hash="set-2"), p.t1, p.mono)
        events += engine.observe(p)
    end = stream[-1].t1 + 1
    events += engine.close_all(end, end)
    assert engine.open_count() == 0
    check_episodes(events)


# -- the confidence trace of a closed episode ----------------------------------------------------------

def test_a_closed_episode_carries_its_confidence_trace_from_run_up_to_end():
    engine = RuleEngine(ruleset(forbidden(for_windows=2)), {"cam": None})
    stream = [*seconds(0, 5, idle=1.0), (5.0, {"smoking": 0.85}), (6.0, {"smoking": 0.9}), (7.0, {"smoking": 0.95}),
              (8.0, {"idle": 1.0}), (9.0, {"idle": 1.0})]
    (closed,) = [e for e in feed(engine, stream) if e.kind == "closed"]
    assert closed.trace == ((5.0, 0.85), (6.0, 0.9), (7.0, 0.95), (8.0, 0.0)), \
        "the windows that opened it, those while it lasted, and the one that closed it"
    assert all(e.trace == () for e in feed(engine, seconds(10, 12, smoking=0.9)) if e.kind != "closed")


def test_a_long_episode_keeps_at_most_max_trace_evenly_spaced_points():
    from monitor.messages import MAX_TRACE

    engine = RuleEngine(ruleset(forbidden()), {"cam": None})
    events = feed(engine, [(float(t), {"smoking": 0.8 + (t % 10) / 100}) for t in range(5000)] + [(5000.0, {"idle": 1})])
    (closed,) = [e for e in events if e.kind == "closed"]
    times = [t for t, _ in closed.trace]
    gaps = {b - a for a, b in itertools.pairwise(times[:-1])}
    assert MAX_TRACE // 2 <= len(closed.trace) <= MAX_TRACE and times[0] == 0.0 and times[-1] == 5000.0
    assert len(gaps) == 1, "evenly thinned"
