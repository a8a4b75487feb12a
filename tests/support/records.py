"""Helpers for tests of the record: the QA commands run in-process, the record as QA sees it, writer callbacks."""

from __future__ import annotations

import io
import sys
import threading

from monitor.messages import ViolationEvent

PASSWORD = "correct horse battery"


def cli(db, *args: str, stdin: str | None = None) -> int:
    """`har-monitor ARGS --db URL`, with `stdin` as the password (--password-stdin) when given."""
    from monitor.cli import main

    argv = [*args, "--db", db.url] + (["--password-stdin"] if stdin is not None else [])
    old = sys.stdin
    sys.stdin = io.StringIO((stdin or "") + "\n")
    try:
        return main(argv)
    finally:
        sys.stdin = old


def views(db):
    """Every violation as QA sees it (review.query), read through a plain engine."""
    from monitor.record.review import query

    engine = db.engine()
    try:
        with engine.connect() as conn:
            return query(conn)
    finally:
        engine.dispose()


class Recorder:
    """The StoreWriter's callbacks, recorded."""

    def __init__(self):
        self.stored: list[ViolationEvent] = []
        self.failures = 0
        self.depths: list[int] = []
        self._lock = threading.Lock()

    def on_stored(self, e: ViolationEvent) -> None:
        with self._lock:
            self.stored.append(e)

    def on_failed(self) -> None:
        with self._lock:
            self.failures += 1
