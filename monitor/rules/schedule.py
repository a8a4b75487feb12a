"""When a rule is active: days of the week and time ranges in a time zone.

```yaml
schedule: {days: [mon, tue, wed, thu, fri], between: ["06:00", "22:00"], tz: Europe/Copenhagen}
schedule: {between: [["22:00", "06:00"], ["12:00", "13:00"]]}   # several ranges; UTC by default
```
A range whose end is not after its start runs overnight and belongs to the day it starts on:
with `days: [fri]`, `["22:00", "06:00"]` is active from Friday 22:00 to Saturday 06:00.
Times are local wall-clock times, so across a DST change a range keeps its local hours (a night
shift is an hour shorter or longer in UTC) and a time the clock skips never matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator

from monitor.yamlfile import StrictModel

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _time_of_day(value: object) -> str:
    if not isinstance(value, str):  # YAML 1.1 reads an unquoted 22:00 as the number 1320
        raise ValueError(f"write times as quoted strings, e.g. \"22:00\" (got {value!r})")
    if not _TIME.match(value):
        raise ValueError(f"'{value}' is not a time of day HH:MM (00:00 to 23:59)")
    return value


def _seconds_of_day(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60


_TIME_SCHEMA = {"type": "string", "pattern": _TIME.pattern}
_RANGE_SCHEMA = {"type": "array", "prefixItems": [_TIME_SCHEMA, _TIME_SCHEMA], "minItems": 2, "maxItems": 2}
TimeOfDay = Annotated[str, BeforeValidator(_time_of_day), WithJsonSchema(_TIME_SCHEMA)]
TimeRanges = Annotated[list[tuple[TimeOfDay, TimeOfDay]] | None,  # one pair, or a list of pairs: see _ranges_list
                       WithJsonSchema({"anyOf": [_RANGE_SCHEMA, {"type": "array", "items": _RANGE_SCHEMA}, {"type": "null"}]})]


class Schedule(StrictModel):
    """When a rule is active: days of the week and local time ranges."""

    days: list[Day] = Field(default_factory=lambda: list(DAYS), description="Days the rule is active (default: every day).")
    between: TimeRanges = Field(default=None, description=(
        'Time ranges `["HH:MM", "HH:MM"]` (quoted), one pair or a list of pairs (default: all day). A range whose '
        "end is not after its start runs overnight and belongs to the day it starts on."))
    tz: str = Field(default="UTC", description="The IANA time zone of the times, e.g. Europe/Copenhagen.")

    @field_validator("days")
    @classmethod
    def _some_day(cls, days: list[str]) -> list[str]:
        if not days:
            raise ValueError("empty schedule: no day selected (omit `days` for every day)")
        return days

    @field_validator("between", mode="before")
    @classmethod
    def _ranges_list(cls, value: object) -> object:
        """One range may be written as a plain pair: ["06:00", "22:00"]."""
        if isinstance(value, list) and len(value) == 2 and not any(isinstance(v, list) for v in value):
            return [value]
        return value

    @field_validator("between")
    @classmethod
    def _valid_ranges(cls, ranges: list[tuple[str, str]] | None) -> list[tuple[str, str]] | None:
        if ranges is None:
            return None
        if not ranges:
            raise ValueError("empty schedule: no time range (omit `between` for all day)")
        for start, end in ranges:
            if _seconds_of_day(start) == _seconds_of_day(end):
                raise ValueError(f"empty time range {start}-{end} (omit `between` for all day)")
        return ranges

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{tz}' (expected an IANA name, e.g. Europe/Copenhagen)") from None
        return tz

    def calendar(self) -> Calendar:
        return Calendar(ZoneInfo(self.tz), frozenset(DAYS.index(d) for d in self.days),
                        tuple((_seconds_of_day(s), _seconds_of_day(e)) for s, e in self.between or ()))


@dataclass(frozen=True, slots=True)
class Calendar:
    """A validated Schedule in the form the engine evaluates for every window: plain attributes."""

    zone: ZoneInfo
    days: frozenset[int]  # 0 = Monday
    ranges: tuple[tuple[int, int], ...]  # (start, end) in seconds of the day; none: all day

    def local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, self.zone)

    def active_at(self, local: datetime) -> bool:
        """Is the rule active at this local time (`local(ts)`)?"""
        day = local.weekday()
        if not self.ranges:
            return day in self.days
        now = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        for start, end in self.ranges:
            if start < end:
                if day in self.days and start <= now < end:
                    return True
            elif (day in self.days and now >= start) or ((day - 1) % 7 in self.days and now < end):
                return True
        return False
