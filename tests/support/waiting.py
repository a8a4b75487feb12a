"""Waiting in tests: poll a condition with a generous ceiling, never assert on wall-clock time.

The one polling helper of the test suite: every wait for a daemon, a server, a file or a metric goes
through `wait_until`, so a loaded machine makes a test slower, never wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05,
               describe: Callable[[], object] | None = None,
               retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """Return `predicate()`'s first truthy value; fail naming `what` after `timeout` seconds.

    `describe()` adds the state worth seeing to the failure; an error of a `retry_on` type raised by
    the predicate counts as "not yet" (the last one is reported).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except retry_on as err:
            last_error = err
        if time.monotonic() > deadline:
            details = [f" (last error: {last_error})" if last_error else "", f"; {describe()}" if describe else ""]
            raise AssertionError(f"timed out after {timeout} s waiting for {what}" + "".join(details))
        time.sleep(interval)
