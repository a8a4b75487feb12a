"""How many examples a property test runs: what it asks for in the full suite, a share of it in the fast tier."""

from __future__ import annotations

from hypothesis import settings

FULL = 100  # hypothesis's default max_examples: the count a profile is measured against


def examples(wanted: int) -> int:
    """`wanted` under the default profile; scaled like the loaded profile's max_examples (tests/conftest.py loads
    "fast", a quarter, for `pytest -m fast`), and never fewer than 10. Read when a test module is imported."""
    return max(10, round(wanted * settings().max_examples / FULL))
