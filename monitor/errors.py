"""Errors a user can fix (bad config, missing file, wrong model): exit status 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """One or more problems in the user's input, each `file: field: what was expected`."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
