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
import math
import time
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

MAX_WINDOWS = 200_000  # predictions per test case: more than a day at one window a second


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

    def count(self) -> int:
        if self.until is None or self.every is None:
            return 1
        return int((self.until - self.at) / self.every - 1e-9) + 1

    def offsets(self) -> list[float]:
        return [self.at + k * (self.every or 0.0) for k in range(self.count())]


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

    @model_validator(mode="after")
    def _bounded(self) -> RuleTestCase:
        windows = sum(p.count() for p in self.predictions)
        if windows > MAX_WINDOWS:
            raise ValueError(f"predictions: {windows} windows, at most {MAX_WINDOWS} per test (fewer, or a larger `every`)")
        return self


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


def _timeline(case: RuleTestCase) -> list[tuple[float, dict[str, float]]]:
    return sorted(((offset, p.probs) for p in case.predictions for offset in p.offsets()), key=lambda x: x[0])


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

