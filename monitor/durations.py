"""Durations as people write them, the same units everywhere (rules, rule tests, site.yaml, `--since`).

>>> parse_duration("1h30m"), parse_duration("250ms"), parse_duration(30)
(5400.0, 0.25, 30.0)
>>> format_duration(3725)
'1h2m5s'
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

_NUMBER = r"\d+(?:\.\d+)?"
DURATION_PATTERN = rf"^(?:\s*{_NUMBER}\s*(?:ms|s|m|h|d|w))+\s*$"
_DURATION = re.compile(DURATION_PATTERN)
_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: float | int | str) -> float:
    """'90s', '10m', '1.5h', '1h30m', '2w', 30 -> seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a duration (expected e.g. 30s, 10m, 1h)")
    if isinstance(value, int) and abs(value) > MAX_SECONDS:
        return math.inf if value > 0 else -math.inf  # float() of a huge int raises OverflowError; the bounds refuse inf
    if isinstance(value, (int, float)):
        return float(value)
    if re.fullmatch(rf"\s*{_NUMBER}\s*", value):
        return float(value)
    if not _DURATION.match(value):
        raise ValueError(f"'{value}' is not a duration (expected e.g. 30s, 10m, 1h)")
    return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))


def format_duration(seconds: float) -> str:
    """3725 -> '1h2m5s', 0.5 -> '0.5s': the inverse of parse_duration, for messages."""
    sign, rest = ("-", -seconds) if seconds < 0 else ("", seconds)
    hours, rest = divmod(round(rest, 3), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{int(hours)}h" if hours else "", f"{int(minutes)}m" if minutes else "",
             f"{round(secs, 3):g}s" if secs or not (hours or minutes) else ""]
    return sign + "".join(parts)


MAX_SECONDS = 366 * 86400.0  # a year (and a day): any longer duration in a rule is a typo, and times stay in range
_SCHEMA_MAX = f"{MAX_SECONDS / 86400:g}d"


def _not_negative(seconds: float) -> float:
    if math.isnan(seconds) or seconds < 0:
        raise ValueError("must be a duration of 0 or more (e.g. 60s)")
    return _at_most_max(seconds)


def _positive(seconds: float) -> float:
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError("must be a duration longer than 0 (e.g. 60s)")
    return _at_most_max(seconds)


def _at_most_max(seconds: float) -> float:
    if seconds > MAX_SECONDS:
        raise ValueError(f"must be at most {_SCHEMA_MAX}")
    return seconds


def _schema(minimum: dict[str, float]) -> WithJsonSchema:
    """Editors see what the validator accepts: a number of seconds or a text with units."""
    return WithJsonSchema({"anyOf": [{"type": "number", **minimum, "maximum": MAX_SECONDS},
                                     {"type": "string", "pattern": DURATION_PATTERN}],
                           "description": f"a duration: seconds, or e.g. 90s, 10m, 1h30m, 2d (at most {_SCHEMA_MAX})"})


Duration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_not_negative),
                     _schema({"minimum": 0})]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive),
                             _schema({"exclusiveMinimum": 0})]
