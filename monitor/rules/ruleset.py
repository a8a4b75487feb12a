"""Load rule files into a RuleSet, or lint them: every problem located as file:line:column.

Errors (the set is refused): schema errors, unknown keys, duplicate ids within or across files,
empty schedules, durations <= 0, unknown actions and group members (when the model's labels are
known), groups defined twice differently. Warnings (the set runs): settings that are legal but
probably wrong, e.g. `for_windows: 1` on a critical rule.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from monitor.errors import UserError
from monitor.messages import NOBODY
from monitor.rules.schema import DurationRule, RuleConfig, RuleFile, parse_rule, rule_class
from monitor.yamlfile import field_name, located, parse_yaml, read_text, validation_problems


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[RuleConfig, ...]  # the enabled rules
    groups: dict[str, tuple[str, ...]]  # every action name a rule may use -> the labels it sums
    hash: str  # of the files' content: recorded with every violation
    text: str = ""  # that content, each file after a `# file: PATH` line (stored by its hash for QA)

    def severities(self) -> list[tuple[str, str]]:
        return [(r.id, r.severity) for r in self.rules]

    def digest(self, rule: RuleConfig) -> str:
        """A rule's own content, with the labels its actions cover: equal digests behave the same."""
        covered = {a: self.groups.get(a, (a,)) for a in rule.actions().values()}
        text = rule.model_dump_json() + json.dumps(covered, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ruleset: RuleSet | None = None


@dataclass(frozen=True)
class _Placed:
    """A parsed rule and where it is written."""

    rule: RuleConfig
    path: Path
    marks: dict[tuple, tuple[int, int]]
    index: int

    def at(self, *fields: str) -> str:
        loc = ("rules", self.index, *fields)
        if loc not in self.marks and ("rules", self.index, "when", *fields) in self.marks:
            loc = ("rules", self.index, "when", *fields)  # the `when` short form
        return f"{located(self.path, self.marks, loc)}: {field_name(loc)}"


def load_rules(paths: list[Path], labels: list[str], groups: dict[str, list[str]] | None = None,
               targets: list[str] | None = None) -> RuleSet:
    """Load rule files for a model with these labels and groups (and a site with these notify targets);
    UserError lists every error."""
    found = check_rules(paths, labels, groups, targets)
    if found.errors:
        raise UserError(found.errors)
    assert found.ruleset is not None
    return found.ruleset


def check_rules(paths: list[Path], labels: list[str] | None,
                groups: dict[str, list[str]] | None = None, targets: list[str] | None = None) -> Findings:
    """Lint rule files. Without `labels` (no model given) actions are not checked, without `targets` (no
    site given) notify targets are not. NOBODY is an action of every model (gated zones)."""
    labels = None if labels is None else [*labels, *([NOBODY] if NOBODY not in labels else [])]
    found = Findings()
    digest = hashlib.sha256()
    texts: list[str] = []
    placed: list[_Placed] = []
    defined: dict[str, tuple[tuple[str, ...], str]] = {g: (tuple(m), "the model") for g, m in (groups or {}).items()}
    for path in paths:
        try:
            text = read_text(path)
            data, marks = parse_yaml(text, path)
        except UserError as err:
            found.errors += err.problems
            continue
        digest.update(text.encode())
        texts.append(f"# file: {path}\n{text}")
        loaded = _parse_file(path, data, marks, found.errors)
        if loaded is None:
            continue
        file_groups, rules = loaded
        _add_groups(path, marks, file_groups, defined, labels, found.errors)
        placed += [_Placed(rule, path, marks, i) for i, rule in rules]
    actions = {label: (label,) for label in labels or ()} | {g: members for g, (members, _) in defined.items()}
    found.errors += _duplicate_ids(placed)
    if labels is not None:
        found.errors += _unknown_actions(placed, actions)
    if targets is not None:
        found.errors += _unknown_targets(placed, targets)
    found.warnings += [w for p in placed for w in _warnings(p)]
    enabled = tuple(p.rule for p in placed if p.rule.enabled)
    found.ruleset = RuleSet(enabled, actions, digest.hexdigest()[:16], "\n".join(texts))
    return found


def _parse_file(path: Path, data: Any, marks: dict,
                errors: list[str]) -> tuple[dict[str, list[str]], list[tuple[int, RuleConfig]]] | None:
    """Validate one file's top level, then each rule as its kind; None when the file cannot be used."""
    if data is None:
        errors.append(f"{path}: file is empty")
        return None
    try:
        top = RuleFile.model_validate(data)
    except pydantic.ValidationError as exc:
        errors += validation_problems(exc, path, marks)
        return None
    rules = []
    for i, item in enumerate(top.rules):
        try:
            rule_class(item)
        except ValueError as exc:
            errors.append(f"{located(path, marks, ('rules', i, 'kind'))}: rules[{i}].kind: {exc}")
            continue
        try:
            rules.append((i, parse_rule(item)))
        except pydantic.ValidationError as exc:
            errors += validation_problems(exc, path, marks, prefix=("rules", i))
    return top.groups, rules


def _add_groups(path: Path, marks: dict, file_groups: dict[str, list[str]],
                defined: dict[str, tuple[tuple[str, ...], str]], labels: list[str] | None, errors: list[str]) -> None:
    for name, members in file_groups.items():
        here = located(path, marks, ("groups", name))
        where = f"{here}: groups.{name}"
        if labels is not None and name in labels:
            errors.append(f"{where}: '{name}' is a label of the model: a group needs its own name")
            continue
        if name in defined and set(defined[name][0]) != set(members):
            errors.append(f"{where}: group '{name}' is already defined differently (in {defined[name][1]})")
            continue
        unknown = [m for m in members if labels is not None and m not in labels]
        if unknown:
            names = ", ".join(repr(m) for m in unknown)
            errors.append(f"{where}: unknown label{'s' if len(unknown) > 1 else ''} {names} "
                          f"(the model knows: {', '.join(labels or ())})")
            continue
        defined.setdefault(name, (tuple(members), here))


def _duplicate_ids(placed: list[_Placed]) -> list[str]:
    first: dict[str, _Placed] = {}
    errors = []
    for p in placed:
        if p.rule.id in first:
            other = first[p.rule.id]
            errors.append(f"{p.at('id')}: duplicate rule id '{p.rule.id}' "
                          f"(also at {located(other.path, other.marks, ('rules', other.index, 'id'))})")
        else:
            first[p.rule.id] = p
    return errors


def _unknown_actions(placed: list[_Placed], actions: dict[str, tuple[str, ...]]) -> list[str]:
    known = ", ".join(sorted(actions))
    return [f"{p.at(name)}: unknown action '{action}' (the model knows: {known})"
            for p in placed for name, action in p.rule.actions().items() if action not in actions]


def _unknown_targets(placed: list[_Placed], targets: list[str]) -> list[str]:
    defined = ", ".join(targets) or "none: site.yaml has no `notify:`"
    return [f"{p.at('notify')}: unknown notify target '{t}' (site.yaml defines: {defined})"
            for p in placed for t in p.rule.notify or () if t not in targets]


def _warnings(p: _Placed) -> list[str]:
    rule, out = p.rule, []
    if not rule.enabled:
        out.append(f"{p.at('enabled')}: rule '{rule.id}' is disabled: it is checked but never runs")
    if rule.severity == "critical" and rule.for_windows == 1:
        out.append(f"{p.at('for_windows')}: for_windows: 1 on a critical rule: one misclassified window "
                   "opens an episode (use 2 or more)")
    if isinstance(rule, DurationRule) and rule.min is not None and rule.release_windows == 1:
        out.append(f"{p.at('release_windows')}: release_windows: 1 with min: one missed window cuts the action "
                   "short and reports it as too short (use 2 or more)")
    return out
