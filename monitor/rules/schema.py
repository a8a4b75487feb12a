"""The rule language: one pydantic model per rule kind, unknown keys refused.

```yaml
groups: {ppe_breach: [no_gloves, no_gown]}     # optional: action groups rules may name
rules:
  - id: no-smoking                             # unique across all the rule files of a site
    kind: forbidden                            # the default kind; `when: {action, min_confidence,
                                               # for_windows}` is a short form of those three fields
    title: Smoking on the GMP floor
    severity: critical                         # info | minor | major | critical
    applies_to: {cameras: ["line-*"], zones: ["gmp-*"]}
    schedule: {days: [mon, tue, wed, thu, fri], between: ["06:00", "22:00"], tz: Europe/Copenhagen}
    action: smoking
    min_confidence: 0.8                        # a window shows an action at or above this
    for_windows: 2                             # consecutive windows before the action counts as started
    release_windows: 2                         # consecutive windows without it before it counts as stopped
    cooldown: 10m                              # no new episode this soon after one closed
    labels: {area: packing, sop: SOP-114}      # carried into the rows and metrics
    notify: [mqtt, shift-leads]                # site.yaml's notify targets (default: by severity)
  - {id: sanitize-before-entry, kind: sequence, require: sanitize_hands, before: enter_cleanroom, within: 60s}
  - {id: gowning-too-short, kind: duration, action: gowning, min: 30s}
  - {id: station-unattended, kind: duration, action: station_unattended, max: 10m}
  - {id: line-clearance-hourly, kind: absence, action: line_clearance, every: 1h}
  - {id: station-b-unattended, kind: duration, action: nobody, max: 10m, applies_to: {zones: [station-b]},
     notify: [mqtt, shift-leads]}
```
`nobody` is an action every model has: a gated zone's windows while no person is in it.
Durations: see monitor/durations.py (`90s`, `10m`, `1h30m` ...).
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints, model_validator

from monitor.durations import Duration, PositiveDuration, format_duration
from monitor.rules.schedule import Schedule
from monitor.yamlfile import StrictModel

ActionName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
LabelKey = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")]


class AppliesTo(StrictModel):
    cameras: list[str] = Field(default_factory=lambda: ["*"])  # globs over camera ids
    zones: list[str] = Field(default_factory=lambda: ["*"])  # globs over zones ("*" also covers no zone)


class RuleConfig(StrictModel):
    """The fields every kind has. Use `parse_rule` to get the right kind from a mapping."""

    ACTION_FIELDS: ClassVar[tuple[str, ...]] = ()

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    kind: str
    title: str = ""
    severity: Literal["info", "minor", "major", "critical"] = "major"
    enabled: bool = True
    applies_to: AppliesTo = AppliesTo()
    schedule: Schedule | None = None  # None: always active
    min_confidence: float = Field(default=0.5, gt=0, le=1)
    for_windows: int = Field(default=1, ge=1)
    release_windows: int = Field(default=1, ge=1)
    cooldown: Duration = 0.0
    labels: dict[LabelKey, str] = Field(default_factory=dict)
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
    kind: Literal["forbidden"] = "forbidden"
    action: ActionName

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
    kind: Literal["sequence"] = "sequence"
    require: ActionName
    before: ActionName
    within: PositiveDuration

    @model_validator(mode="after")
    def _two_actions(self) -> SequenceRule:
        if self.require == self.before:
            raise ValueError(f"require and before both name '{self.require}'")
        return self


class DurationRule(RuleConfig):
    """`action` must last at least `min` and/or at most `max`."""

    ACTION_FIELDS: ClassVar[tuple[str, ...]] = ("action",)
    kind: Literal["duration"] = "duration"
    action: ActionName
    min: PositiveDuration | None = None
    max: PositiveDuration | None = None

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
    kind: Literal["absence"] = "absence"
    action: ActionName
    every: PositiveDuration


KINDS: dict[str, type[RuleConfig]] = {"forbidden": ForbiddenRule, "sequence": SequenceRule,
                                      "duration": DurationRule, "absence": AbsenceRule}


def rule_class(data: Any) -> type[RuleConfig]:
    """The model for a rule mapping, chosen by its `kind` (default forbidden)."""
    kind = data.get("kind", "forbidden") if isinstance(data, dict) else "forbidden"
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"unknown rule kind {kind!r} (expected one of {', '.join(KINDS)})")
    return KINDS[kind]


def parse_rule(data: dict) -> RuleConfig:
    """Validate one rule mapping as its kind (pydantic.ValidationError or ValueError when it is wrong)."""
    return rule_class(data).model_validate(data)


class RuleFile(StrictModel):
    groups: dict[ActionName, Annotated[list[ActionName], Field(min_length=1)]] = Field(default_factory=dict)
    rules: list[Any] = Field(default_factory=list)  # each validated by parse_rule, to locate errors per rule
