"""Every log line is one event with `event=`: ours, the libraries', TensorFlow's runtime's and Python warnings."""

from __future__ import annotations

import ast
import logging
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from monitor.ops.logs import _Formatter, kv, native_stderr_logged, setup_logging
from support.sites import write_site
from support.waiting import wait_until

MONITOR = Path(__file__).resolve().parents[2] / "monitor"
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(debug|info|warning|error|critical) logger=\S+ event=\w+( |$)")
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def test_every_log_call_in_the_code_names_its_event():
    """`log.info(kv(event="...", ...))` everywhere: a grep of every log call, by the syntax tree."""
    bad = []
    for path in MONITOR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LOG_METHODS
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("log", "logger", "native")):
                first = node.args[0] if node.args else None
                if not (isinstance(first, ast.Call) and getattr(first.func, "id", None) == "kv"
                        and first.keywords and first.keywords[0].arg == "event"):
                    bad.append(f"{path.relative_to(MONITOR.parent)}:{node.lineno}")
    assert not bad, f"log calls without kv(event=...) first: {bad}"


def formatted(logger: str, message: str, *args) -> str:
    record = logging.getLogger(logger).makeRecord(logger, logging.WARNING, __file__, 1, message, args, None)
    return _Formatter().format(record)


def test_a_librarys_line_and_a_multiline_value_stay_one_event_line():
    line = formatted("alembic.runtime", "Context impl %s\nwill assume %s", "SQLiteImpl", "non-transactional DDL")
    assert LINE.match(line) and "\n" not in line
    assert line.endswith('event=library message="Context impl SQLiteImpl\\nwill assume non-transactional DDL"')
    assert LINE.match(formatted("monitor.x", kv(event="camera_down", error="refused\nby peer"))) and "\n" not in line


def test_python_warnings_and_native_stderr_become_events(capfd):
    logging.captureWarnings(False)  # an earlier test's capture may have been undone by pytest's own
    setup_logging("debug")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("keras says so", UserWarning, stacklevel=1)
        with native_stderr_logged("native_test"):
            subprocess.run(["sh", "-c", "echo 'W0000 00:00:1 port.cc:1] a native warning' >&2; echo 'plain note' >&2"],
                           check=True)
    finally:
        logging.captureWarnings(False)
    lines = capfd.readouterr().err.splitlines()
    assert lines and all(LINE.match(line) for line in lines), lines
    assert any("event=library" in line and "keras says so" in line for line in lines)
    assert any("level=warning" in line and "event=native_test" in line and "a native warning" in line for line in lines)
    assert any("level=debug" in line and "event=native_test" in line and "plain note" in line for line in lines)


@pytest.mark.tf
@pytest.mark.slow
def test_every_line_a_running_daemon_writes_is_an_event(tmp_path, tiny_bundle, clip):
    """The real daemon at debug level, with a camera that works, one that cannot be reached, evidence and
    retention: every line it writes to stderr, TensorFlow's startup included, carries `event=`."""
    from monitor.record.db import upgrade

    cameras = [{"id": "cam", "url": str(clip), "loop": True},
               {"id": "gone", "url": "rtsp://viewer:pw@127.0.0.1:1/stream", "open_timeout_seconds": 1}]
    site = write_site(tmp_path, tiny_bundle, cameras, evidence={"retention_days": 30})
    upgrade(f"sqlite:///{tmp_path / 'violations.db'}")
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "--log-level", "debug", "run", "--cameras", str(site)],
                                stdout=subprocess.DEVNULL, stderr=err)
    events = ("daemon_started", "camera_up", "camera_down", "violation_opened")
    try:
        wait_until(lambda: all(f"event={e}" in log.read_text() for e in events), 120, f"the events {events}",
                   interval=0.2, describe=lambda: log.read_text()[-3000:])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        proc.kill()
    lines = log.read_text().splitlines()
    assert any("event=daemon_stopped" in line for line in lines)
    assert all(LINE.match(line) for line in lines), [line for line in lines if not LINE.match(line)]
