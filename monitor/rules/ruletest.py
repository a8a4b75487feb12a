"""Rule unit tests in YAML, run by `har-monitor rules test`: predictions in, expected episodes out.

```yaml
rules: [../gmp-conduct.yaml]
labels: [idle, walking, smoking, eating]
tests:
  - name: smoking flickering around the threshold is one episode
    camera: {id: line-1, zone: gmp-packing}
    start: 2024-05-06T10:00:00+02:00
    predictions:
      - {at: 0s, until: 1m, every: 1s, probs: {idle: 0.9}}
      - {at: 1m, probs: {smoking: 0.85}}
    expect:
      - {rule: no-smoking, opened: 1m, closed: 1m5s}
```
Each test runs a fresh RuleEngine on its own camera; the episodes it produced are compared with
`expect` and a difference fails the test. What each key means is its `description` below.
"""

from __future__ import annotations

import difflib
import heapq
import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pydantic
from pydantic import AwareDatetime, BeforeValidator, Field, TypeAdapter, WithJsonSchema, model_validator

from monitor.durations import Duration, PositiveDuration, format_duration
from monitor.errors import UserError
from monitor.messages import Prediction
from monitor.rules.engine import RuleEngine
from monitor.rules.ruleset import RuleSet, load_rules
from monitor.yamlfile import StrictModel, located, parse_yaml, read_text, validation_problems

MAX_WINDOWS = 1_000_000  # per test: 11 days at one window a second, a few seconds to run


class CameraSpec(StrictModel):
    """The camera the predictions come from."""

    id: str = Field(min_length=1, description="Its id, for the rules' `applies_to.cameras`.")
    zone: str | None = Field(default=None, description="Its zone, for the rules' `applies_to.zones`.")


class PredictionSpec(StrictModel):
    """One window's probabilities, or the same every `every` from `at` to `until`."""

    at: Duration = Field(description="The window's end time, from the test's start.")
    until: Duration | None = Field(default=None, description="Repeat every `every` from `at` up to (not including) this.")
    every: PositiveDuration | None = Field(default=None, description="The spacing of the repeated windows.")
    probs: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(description="Probability by label (a label not "
                                                                  "given is 0).")

    @model_validator(mode="after")
    def _repeat(self) -> PredictionSpec:
        if (self.until is None) != (self.every is None):
            raise ValueError("until and every go together (one window every `every` until `until`)")
        if self.until is not None and self.until <= self.at:
            raise ValueError("until must be after at")
        return self

    def count(self) -> float:
        """How many windows this line generates (a float: `until: 1000000d, every: 1ms` must not overflow)."""
        if self.until is None or self.every is None:
            return 1
        span = (self.until - self.at) / self.every
        return math.floor(span - 1e-9) + 1 if math.isfinite(span) else math.inf

    def offsets(self) -> Iterator[float]:
        """The end times of the windows this line generates, one by one."""
        if self.every is None:
            return iter([self.at])
        return (self.at + k * self.every for k in range(int(self.count())))


def _closed(value: object) -> object:
    return None if value == "open" else value


class ExpectedEpisode(StrictModel):
    """An episode the rules must produce."""

    rule: str = Field(description="The rule's id.")
    opened: Duration = Field(description="When it opened, from the test's start.")
    closed: Annotated[Duration | None, BeforeValidator(_closed),
                      WithJsonSchema({"anyOf": [TypeAdapter(Duration).json_schema(), {"const": "open"}]})] = Field(
        description="When it closed, from the test's start, or `open`: still open at the end.")


class RuleTestCase(StrictModel):
    """One test: predictions in, every expected episode out."""

    name: str = Field(min_length=1, description="Shown in the report.")
    camera: CameraSpec = Field(description=CameraSpec.__doc__)
    start: AwareDatetime = Field(description="The time of offset 0, with its UTC offset (e.g. 2024-05-06T10:00:00+02:00).")
    predictions: list[PredictionSpec] = Field(min_length=1, description="The classifier's windows, in any order.")
    expect: list[ExpectedEpisode] = Field(description="Every episode of every rule, and nothing else (times to the "
                                          "millisecond).")


class RuleTestFile(StrictModel):
    """A rule test file, run by `har-monitor rules test`."""

    rules: list[str] = Field(min_length=1, description="The rule files under test, relative to this file.")
    labels: list[str] = Field(min_length=1, description="The model's labels.")
    groups: dict[str, list[str]] = Field(default_factory=dict, description="The model's groups, if any.")
    tests: list[RuleTestCase] = Field(min_length=1, description="The test cases.")


@dataclass(frozen=True)
class Episode:
    opened: float  # offsets from the test's start, in seconds
    rule: str
    closed: float | None

    def __str__(self) -> str:
        closed = "open" if self.closed is None else format_duration(self.closed)
        return f"{self.rule}  opened {format_duration(self.opened)}  closed {closed}"


@dataclass(frozen=True)
class LoadedTests:
    path: Path
    spec: RuleTestFile
    ruleset: RuleSet


@dataclass(frozen=True)
class Outcome:
    name: str
    expected: list[Episode]
    got: list[Episode]

    @property
    def passed(self) -> bool:
        return self.expected == self.got


def load_tests(path: Path) -> LoadedTests:
    """Read a rule test file and the rule files it names; UserError lists every problem, located."""
    data, marks = parse_yaml(read_text(path), path)
    if data is None:
        raise UserError(f"{path}: file is empty")
    try:
        spec = RuleTestFile.model_validate(data)
    except pydantic.ValidationError as exc:
        raise UserError(validation_problems(exc, path, marks)) from None
    ruleset = load_rules([path.parent / r for r in spec.rules], spec.labels, spec.groups)
    problems = []
    rule_ids = {r.id for r in ruleset.rules}
    at: tuple[str | int, ...]
    for i, case in enumerate(spec.tests):
        problems += _too_many_windows(path, marks, i, case)
        for j, pred in enumerate(case.predictions):
            for label in pred.probs.keys() - set(spec.labels):
                at = ("tests", i, "predictions", j, "probs", label)
                problems.append(f"{located(path, marks, at)}: tests[{i}].predictions[{j}].probs: unknown label "
                                f"'{label}' (labels: {', '.join(spec.labels)})")
        for j, expected in enumerate(case.expect):
            if expected.rule not in rule_ids:
                at = ("tests", i, "expect", j, "rule")
                problems.append(f"{located(path, marks, at)}: tests[{i}].expect[{j}].rule: no enabled rule "
                                f"'{expected.rule}' in {', '.join(spec.rules)}")
    if problems:
        raise UserError(problems)
    return LoadedTests(path, spec, ruleset)


def _too_many_windows(path: Path, marks: dict[tuple[str | int, ...], tuple[int, int]], i: int, case: RuleTestCase) -> list[str]:
    """A test generates its windows one by one: refuse one that would run for days (or exhaust memory)."""
    total = 0.0
    for j, pred in enumerate(case.predictions):
        total += pred.count()
        if not total <= MAX_WINDOWS:  # also NaN and infinity (`at: .inf`)
            at = ("tests", i, "predictions", j)
            return [f"{located(path, marks, at)}: tests[{i}].predictions[{j}]: the test would generate "
                    f"{total:.3g} windows, more than the {MAX_WINDOWS} a test may (make `every` longer or "
                    "`until` earlier)"]
    return []


def run_case(ruleset: RuleSet, case: RuleTestCase) -> Outcome:
    start = case.start.timestamp()
    engine = RuleEngine(ruleset, {case.camera.id: case.camera.zone})
    opened: dict[str, tuple[str, float]] = {}
    got: list[Episode] = []
    for offset, probs in _timeline(case):
        for event in engine.observe(Prediction(case.camera.id, start + offset, start + offset, offset, probs)):
            if event.kind == "opened":
                opened[event.episode_id] = (event.rule, event.started_at - start)
            elif event.kind == "closed":
                rule, at = opened.pop(event.episode_id)
                got.append(Episode(_ms(at), rule, _ms(event.ended_at - start)))  # type: ignore[operator]
    got += [Episode(_ms(at), rule, None) for rule, at in opened.values()]
    expected = [Episode(_ms(e.opened), e.rule, None if e.closed is None else _ms(e.closed)) for e in case.expect]
    return Outcome(case.name, sorted(expected, key=_order), sorted(got, key=_order))


def _timeline(case: RuleTestCase) -> Iterator[tuple[float, dict[str, float]]]:
    """Every window of the test in time order, generated as it is consumed (ties in the order written)."""
    lines = [zip(p.offsets(), itertools.repeat(p.probs)) for p in case.predictions]
    return heapq.merge(*lines, key=lambda x: x[0])


def _ms(seconds: float) -> float:
    return round(seconds, 3)


def _order(e: Episode) -> tuple[float, str, float]:
    return e.opened, e.rule, math.inf if e.closed is None else e.closed


def run_files(paths: list[Path]) -> bool:
    """Run rule test files, printing a pytest-like report; True when every test passed."""
    began = time.perf_counter()
    loaded, problems = [], []
    for path in paths:
        try:
            loaded.append(load_tests(path))
        except UserError as err:
            problems += err.problems
    if problems:
        raise UserError(problems)
    failures: list[tuple[Path, Outcome]] = []
    passed = 0
    for tests in loaded:
        outcomes = [run_case(tests.ruleset, case) for case in tests.spec.tests]
        print(f"{tests.path} " + "".join("." if o.passed else "F" for o in outcomes))
        passed += sum(o.passed for o in outcomes)
        failures += [(tests.path, o) for o in outcomes if not o.passed]
    if failures:
        print(" FAILURES ".center(72, "="))
    for path, outcome in failures:
        print(f" {path}::{outcome.name} ".center(72, "_"))
        print("\n".join(_diff(outcome)))
    counts = ([f"{len(failures)} failed"] if failures else []) + ([f"{passed} passed"] if passed else [])
    print(f" {', '.join(counts)} in {time.perf_counter() - began:.2f}s ".center(72, "="))
    return not failures


def _diff(outcome: Outcome) -> list[str]:
    """Expected episodes prefixed '-', episodes the rules produced instead '+', matches ' '."""
    lines = difflib.ndiff([str(e) for e in outcome.expected], [str(e) for e in outcome.got])
    return ["(- expected, + got)"] + [f"  {line}" for line in lines if not line.startswith("?")]

