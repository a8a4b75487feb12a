"""Every number a user writes in site.yaml, model.yaml, a rule file or a rule test is bounded, so that the
code's arithmetic on any accepted value stays finite and in range.

Issue 10: `retention_days: 1e300` and `reconnect.initial_seconds: 1e308` passed `check`, then killed the
retention thread and a camera's reconnect loop with OverflowError (the camera never came back).
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timezone

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.backoff import Backoff
from monitor.cli.config import SCHEMAS, json_schema
from monitor.durations import format_duration
from monitor.evidence.retention import prune
from monitor.messages import Prediction
from monitor.rules import RuleEngine, RuleSet, parse_rule
from monitor.site.config import CameraConfig, EvidenceConfig, ReconnectConfig
from support.examples import examples

# Anything YAML can hold as a number: huge, tiny, negative, inf, nan, and integers past any float.
numbers = st.one_of(st.floats(), st.integers(), st.integers(min_value=10**300, max_value=10**320))
NOW = time.time()
INT64 = 2**63 - 1


def accepted(model: type[pydantic.BaseModel], **fields: object) -> pydantic.BaseModel | None:
    try:
        return model.model_validate(fields)
    except pydantic.ValidationError:
        return None


def numeric_leaves(schema: dict) -> list[tuple[str, dict]]:
    """(where, schema) of every number or integer a file may hold."""
    defs, found = schema.get("$defs", {}), []

    def walk(node: dict, at: str, seen: frozenset) -> None:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            if name not in seen:
                walk(defs[name], at, seen | {name})
            return
        if node.get("type") in ("number", "integer") and "const" not in node and "enum" not in node:
            found.append((at, node))
        for choice in node.get("anyOf", []) + node.get("oneOf", []) + node.get("prefixItems", []):
            walk(choice, at, seen)
        for inner in [node.get("items"), node.get("additionalProperties"), *node.get("patternProperties", {}).values()]:
            if isinstance(inner, dict):
                walk(inner, f"{at}[]", seen)
        for name, prop in node.get("properties", {}).items():
            walk(prop, f"{at}.{name}", seen)

    walk(schema, "", frozenset())
    return found


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_every_number_in_every_config_file_has_a_lower_and_an_upper_bound(kind):
    leaves = numeric_leaves(json_schema(kind))
    assert leaves or kind == "ruletest"
    unbounded = [at for at, node in leaves
                 if not ({"minimum", "exclusiveMinimum"} & node.keys() and {"maximum", "exclusiveMaximum"} & node.keys())]
    assert not unbounded, f"{kind}: numbers without bounds: {unbounded}"


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=numbers)
def test_any_accepted_retention_keeps_the_retention_pass_alive(days, tmp_path_factory):
    config = accepted(EvidenceConfig, retention_days=days)
    if config is None:
        return
    root = tmp_path_factory.mktemp("evidence")
    (root / "cam" / "2001-01-01").mkdir(parents=True)
    (root / "cam" / "2001-01-01" / "ep.mp4").write_bytes(b"clip")
    deleted = prune(root, config.retention_days, now=NOW)  # timedelta(days=...) and a date 100 years back
    assert len(deleted) == (1 if NOW - config.retention_days * 86400 > datetime(2001, 1, 2, tzinfo=timezone.utc).timestamp() else 0)


@settings(max_examples=examples(300))
@given(initial=numbers, maximum=numbers)
def test_any_accepted_reconnect_keeps_the_backoff_waitable(initial, maximum):
    config = accepted(ReconnectConfig, initial_seconds=initial, max_seconds=maximum)
    if config is None:
        return
    backoff = Backoff(config.initial_seconds, config.max_seconds)
    for _ in range(200):  # far past the doubling's cap
        delay = backoff.next()
        assert 0 < delay <= config.max_seconds <= threading.TIMEOUT_MAX, "Event.wait(delay) would raise OverflowError"


@settings(max_examples=examples(300))
@given(stall=numbers, timeout=numbers)
def test_any_accepted_camera_timeout_fits_ffmpeg_and_the_watchdog(stall, timeout):
    camera = accepted(CameraConfig, id="cam", url="rtsp://10.0.0.1/s", stall_seconds=stall, open_timeout_seconds=timeout)
    if camera is None:
        return
    for seconds in (camera.stall_seconds, camera.open_timeout_seconds):
        assert math.isfinite(time.monotonic() + seconds) and seconds <= threading.TIMEOUT_MAX
        assert int(seconds * 1_000_000) <= INT64, "FFmpeg's timeouts are int64 microseconds"


def run_rule(rule: dict, until: float) -> list:
    engine = RuleEngine(RuleSet((parse_rule(rule),), {"a": ("a",), "b": ("b",)}, "h"), {"cam": None})
    events = []
    for t in (NOW, NOW + 1, NOW + until / 2, NOW + until, NOW + until + 1):
        events += engine.observe(Prediction("cam", t, t, t, {"b": 1.0}))
    return events + engine.close_all(NOW + until + 2, time.monotonic())


@settings(max_examples=examples(200))
@given(every=numbers, cooldown=numbers)
def test_any_accepted_rule_duration_gives_storable_episode_times(every, cooldown):
    rule = {"id": "r", "kind": "absence", "action": "a", "every": every, "cooldown": cooldown}
    try:
        parsed = parse_rule(rule)
    except (pydantic.ValidationError, ValueError):
        return
    assert format_duration(parsed.every) and format_duration(parsed.cooldown)
    for event in run_rule(rule, parsed.every * 2 + parsed.cooldown):
        for ts in (event.started_at, event.ended_at):
            if ts is not None:
                datetime.fromtimestamp(ts, timezone.utc)  # as the record stores it
