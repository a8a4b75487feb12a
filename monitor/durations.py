"""Durations as people write them, the same units everywhere (rules, rule tests, site.yaml, `--since`).

>>> parse_duration("1h30m"), parse_duration("250ms"), parse_duration(30)
(5400.0, 0.25, 30.0)
>>> format_duration(3725)
'1h2m5s'
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(rf"^(?:\s*{_NUMBER}\s*(?:ms|s|m|h|d|w))+\s*$")
_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: float | int | str) -> float:
    """'90s', '10m', '1.5h', '1h30m', '2w', 30 -> seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a duration (expected e.g. 30s, 10m, 1h)")
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


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be a duration longer than 0 (e.g. 60s)")
    return seconds


def _not_negative(seconds: float) -> float:
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_not_negative)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
