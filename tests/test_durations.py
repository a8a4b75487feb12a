"""Durations as people write them: parsed the same everywhere, printed so that they parse back."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from monitor.durations import format_duration, parse_duration

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("10m") == 600 and parse_duration(5) == 5.0
    assert parse_duration("1.5h") == 5400 and parse_duration("1h30m") == 5400 and parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        parse_duration("soon")


@given(milliseconds=st.integers(min_value=0, max_value=10 * 365 * 86400 * 1000))
@example(milliseconds=3_725_000)
@example(milliseconds=59_999)
def test_a_formatted_duration_parses_back_to_the_millisecond(milliseconds):
    seconds = milliseconds / 1000
    text = format_duration(seconds)
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-6), text


@given(parts=st.lists(st.tuples(st.integers(min_value=0, max_value=10_000), st.sampled_from(list(UNITS))),
                      min_size=1, max_size=5),
       spaced=st.booleans())
def test_a_sum_of_parts_is_what_it_says(parts, spaced):
    text = (" " if spaced else "").join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration(text) == pytest.approx(sum(n * UNITS[unit] for n, unit in parts))


@given(text=st.text())
@example("1h30")
@example("")
@example("h")
@example("1.h")
@example("-5s")
@example("1e3s")
def test_anything_else_is_a_value_error(text):
    """Garbage is a ValueError (which pydantic turns into a located message), never another exception."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert seconds >= 0
    assert text.strip()[-1:].isdigit() or text.strip()[-1:] in "smhdw", text


@pytest.mark.parametrize("value", [None, True, [1], {"s": 1}, b"5s"])
def test_what_is_not_a_number_or_text_is_a_value_error(value):
    with pytest.raises(ValueError):
        parse_duration(value)
