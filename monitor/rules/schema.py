"""The rule language: one pydantic model per rule kind, unknown keys refused.

```yaml
groups: {ppe_breach: [no_gloves, no_gown]}
rules:
  - {id: no-smoking, severity: critical, action: smoking, min_confidence: 0.8, for_windows: 2, cooldown: 10m,
     applies_to: {zones: ["gmp-*"]}, schedule: {days: [mon, tue, wed, thu, fri], between: ["06:00", "22:00"]},
     notify: [mqtt, shift-leads]}
  - {id: sanitize-before-entry, kind: sequence, require: sanitize_hands, before: enter_cleanroom, within: 60s}
  - {id: gowning-too-short, kind: duration, action: gowning, min: 30s}
  - {id: line-clearance-hourly, kind: absence, action: line_clearance, every: 1h}
  - {id: station-b-unattended, kind: duration, action: nobody, max: 10m, applies_to: {zones: [station-b]},
     notify: [mqtt, shift-leads]}
```
`nobody` is an action every model has: a gated zone's windows while no person is in it.
What each field means is its `description` below: the one place for that prose (`har-monitor config
schema rules` and README's configuration reference are generated from it).
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints, model_validator

from monitor.durations import Duration, PositiveDuration, format_duration
from monitor.rules.schedule import Schedule
from monitor.yamlfile import StrictModel

ActionName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MAX_WINDOWS = 10_000  # consecutive windows: hours at any sampling rate
LabelKey = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")]


class AppliesTo(StrictModel):
    """Which cameras a rule watches: both lists must match."""

    cameras: list[str] = Field(default_factory=lambda: ["*"], description="Globs over camera ids.")
    zones: list[str] = Field(default_factory=lambda: ["*"], description="Globs over camera zones "
                             "(`*` also covers cameras without a zone).")


class RuleConfig(StrictModel):
    """The fields every kind has. Use `parse_rule` to get the right kind from a mapping."""

    ACTION_FIELDS: ClassVar[tuple[str, ...]] = ()

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Unique across the rule files of a site "
                    "(lower case, digits, `_`, `-`); recorded with every violation.")
    kind: str = Field(default="forbidden", description="`forbidden`, `sequence`, `duration` or `absence`.")
    title: str = Field(default="", max_length=200, description="A human title for reviewers.")
    severity: Literal["info", "minor", "major", "critical"] = Field(default="major", description="The violation's severity.")
    enabled: bool = Field(default=True, description="`false` keeps the rule in the file but does not run it.")
    applies_to: AppliesTo = Field(default=AppliesTo(), description=AppliesTo.__doc__)
    schedule: Schedule | None = Field(default=None, description="When the rule is active (default: always); an "
                                      "episode also closes when its schedule ends.")
    min_confidence: float = Field(default=0.5, gt=0, le=1, description="A window shows an action when its probability "
                                  "(a group's: its labels' summed) is at or above this.")
    for_windows: int = Field(default=1, ge=1, le=MAX_WINDOWS, description="Consecutive windows showing the action "
                             "before it counts as started.")
    release_windows: int = Field(default=1, ge=1, le=MAX_WINDOWS, description="Consecutive windows without it "
                                 "before it counts as stopped.")
    cooldown: Duration = Field(default=0.0, description="No new episode of this rule on a camera this soon after "
                               "one closed.")
    labels: dict[LabelKey, str] = Field(default_factory=dict, description="Free key: value pairs carried into the "
                                        "violation rows and `har_monitor_rule_info`.")
    notify: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]] | None = Field(
        default=None, description="Where its episodes are pushed: target names of site.yaml's `notify:` (`mqtt`, "
        "webhook names); `[]` for nowhere. Default: `notify.by_severity`.")

    def actions(self) -> dict[str, str]:
        """Field name -> the action (label or group) it names."""
        return {f: getattr(self, f) for f in self.ACTION_FIELDS}

    def applies(self, camera: str, zone: str | None) -> bool:
        cam_ok = any(fnmatch.fnmatchcase(camera, g) for g in self.applies_to.cameras)
        zone_ok = any(fnmatch.fnmatchcase(zone or "", g) for g in self.applies_to.zones)
        return cam_ok and zone_ok


class ForbiddenRule(RuleConfig):
    """`action` must not happen."""

    ACTION_FIELDS: ClassVar[tuple[str, ...]] = ("action",)
    WHEN_FIELDS: ClassVar[frozenset[str]] = frozenset({"action", "min_confidence", "for_windows"})
    kind: Literal["forbidden"] = Field(default="forbidden", description="The action must not happen.")
    action: ActionName = Field(description="The label or group that must not be seen.")

    @model_validator(mode="before")
    @classmethod
    def _flatten_when(cls, data: Any) -> Any:
        """`when: {action, min_confidence, for_windows}` (the design sketch's short form) means the same fields."""
        if not isinstance(data, dict) or "when" not in data:
            return data
        when = data["when"]
        if not isinstance(when, dict) or not set(when) <= cls.WHEN_FIELDS:
            raise ValueError("`when` takes a mapping of action, min_confidence and for_windows")
        twice = sorted(set(when) & set(data))
        if twice:
            raise ValueError(f"{', '.join(twice)} given both in the rule and in its `when`")
        return {k: v for k, v in data.items() if k != "when"} | when


class SequenceRule(RuleConfig):
    """`require` must be seen at most `within` before `before` starts."""

    ACTION_FIELDS: ClassVar[tuple[str, ...]] = ("require", "before")
    kind: Literal["sequence"] = Field(default="sequence", description="`require` must come before `before`.")
    require: ActionName = Field(description="The action that must be seen first ...")
    before: ActionName = Field(description="... before this one starts ...")
    within: PositiveDuration = Field(description="... at most this long before it.")

    @model_validator(mode="after")
    def _two_actions(self) -> SequenceRule:
        if self.require == self.before:
            raise ValueError(f"require and before both name '{self.require}'")
        return self


class DurationRule(RuleConfig):
    """`action` must last at least `min` and/or at most `max`."""

    ACTION_FIELDS: ClassVar[tuple[str, ...]] = ("action",)
    kind: Literal["duration"] = Field(default="duration", description="The action must last between min and max.")
    action: ActionName = Field(description="The action whose duration is checked.")
    min: PositiveDuration | None = Field(default=None, description="It must last at least this long (violation "
                                         "when it stops sooner).")
    max: PositiveDuration | None = Field(default=None, description="It must last at most this long (violation "
                                         "once it lasts longer).")

    @model_validator(mode="after")
    def _bounds(self) -> DurationRule:
        if self.min is None and self.max is None:
            raise ValueError("a duration rule needs min, max or both")
        if self.min is not None and self.max is not None and self.min >= self.max:
            shortest, longest = format_duration(self.min), format_duration(self.max)
            raise ValueError(f"min ({shortest}) must be shorter than max ({longest})")
        return self


class AbsenceRule(RuleConfig):
    """`action` must be seen at least once `every` while the rule is active."""

    ACTION_FIELDS: ClassVar[tuple[str, ...]] = ("action",)
    kind: Literal["absence"] = Field(default="absence", description="The action must be seen regularly.")
    action: ActionName = Field(description="The action that must be seen ...")
    every: PositiveDuration = Field(description="... at least once this often while the rule is active.")


KINDS: dict[str, type[RuleConfig]] = {"forbidden": ForbiddenRule, "sequence": SequenceRule,
                                      "duration": DurationRule, "absence": AbsenceRule}


def rule_class(data: Any) -> type[RuleConfig]:
    """The model for a rule mapping, chosen by its `kind` (default forbidden)."""
    kind = data.get("kind", "forbidden") if isinstance(data, dict) else "forbidden"
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"unknown rule kind {kind!r} (expected one of {', '.join(KINDS)})")
    return KINDS[kind]


def parse_rule(data: dict[str, Any]) -> RuleConfig:
    """Validate one rule mapping as its kind (pydantic.ValidationError or ValueError when it is wrong)."""
    return rule_class(data).model_validate(data)


class RuleFile(StrictModel):
    """A rule file: action groups and rules."""

    groups: dict[ActionName, Annotated[list[ActionName], Field(min_length=1)]] = Field(
        default_factory=dict, description="Names for sets of labels that rules may name as an action; a group's "
        "confidence is its labels' summed.")
    rules: list[Any] = Field(default_factory=list, description="The rules; each is validated by its `kind`.")


def rule_file_json_schema() -> dict[str, Any]:
    """JSON Schema of a rule file for editors: each rule is one of the kinds, chosen by `kind` (default forbidden)."""
    schema = RuleFile.model_json_schema()
    defs = schema.setdefault("$defs", {})
    kinds = []
    for kind, model in KINDS.items():
        rule = model.model_json_schema()
        defs.update(rule.pop("$defs", {}))
        if kind == "forbidden":  # `when:` is a short form of three of its fields, so `action` may be in it
            props = rule["properties"]
            props["when"] = {"type": "object", "additionalProperties": False,
                             "description": "Short form of " + ", ".join(sorted(ForbiddenRule.WHEN_FIELDS)) + ".",
                             "properties": {f: props[f] for f in sorted(ForbiddenRule.WHEN_FIELDS)}}
            rule["required"] = [r for r in rule.get("required", []) if r != "action"]
            rule["anyOf"] = [{"required": ["action"]}, {"required": ["when"]}]
        else:  # only a forbidden rule may leave out its kind
            rule["required"] = [*rule.get("required", []), "kind"]
        defs[model.__name__] = rule
        kinds.append({"$ref": f"#/$defs/{model.__name__}"})
    schema["properties"]["rules"]["items"] = {"oneOf": kinds}
    return schema
