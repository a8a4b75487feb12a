"""Passwords as people (and password managers) write them, for tests that no secret is ever shown."""

from __future__ import annotations

import re

from hypothesis import strategies as st

# The characters that end a host for a URL parser, or a URL for a regex, are drawn often.
NASTY = "/'\" ?#@:%&=\\[]\n\t"
MARK = "Zq7-s3cret"  # put in the middle of every password: a leak of any part of it around a character is caught


def secret_text(env: bool = False) -> st.SearchStrategy[str]:
    """Any text (`env`: one an environment variable can hold, i.e. without NUL)."""
    chars = st.characters(exclude_categories=["Cs"], exclude_characters="\x00" if env else "")
    return st.text(st.one_of(st.sampled_from(NASTY), chars), max_size=24)


def passwords(env: bool = False) -> st.SearchStrategy[str]:
    return st.builds(lambda before, after: before + MARK + after, secret_text(env), secret_text(env))


def assert_only_redacted(text: str, shown: str) -> None:
    """`text` never shows the password: every URL in it is exactly `shown` (scheme://user:***@host/path)."""
    assert MARK not in text
    scheme = shown.split("://", 1)[0] + "://"
    for match in re.finditer(re.escape(scheme), text):
        assert text[match.start():].startswith(shown), text
