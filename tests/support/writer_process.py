"""A daemon-like process around a real StoreWriter, for fault tests that kill it or take its storage away.

    python tests/support/writer_process.py URL SPOOL [--interval SECONDS]

It puts an opened and a closed event for episodes ep-00000, ep-00001, ... (support.events), one
every `interval` seconds, and prints one line per fact, flushed:
    acked KIND EPISODE      put() returned: the record is in the fsync'd spool
    stored KIND EPISODE     the event was committed to the database
    failed                  a write to the database failed (it is retried)
A line "stop" on stdin (or its end) stops the puts, closes the writer and prints `closed True|False`.
Its log goes to stderr. `WriterProcess` runs it and reads those lines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent


def checkout_env() -> dict[str, str]:
    """The environment for a child process that imports `monitor` from this checkout (that of these tests)."""
    import os

    root = str(HERE.parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def main() -> None:
    sys.path.insert(0, str(HERE.parent))  # `support`, as under pytest
    from monitor.ops.logs import setup_logging
    from monitor.record.writer import StoreWriter
    from support.events import PROV, T0, event

    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("spool", type=Path)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    setup_logging("info")
    say_lock = threading.Lock()

    def say(*words: str) -> None:
        with say_lock:
            print(*words, flush=True)

    writer = StoreWriter(args.url, PROV, args.spool, backoff_max=1.0, stored=lambda e: say("stored", e.kind, e.episode_id),
                         failed=lambda: say("failed"))
    writer.thread.start()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    number = 0
    while not stop.is_set():
        episode = f"ep-{number:05d}"
        for e in (event("opened", episode, 0.6, T0 + number), event("closed", episode, 0.9, T0 + number, T0 + number + 1)):
            writer.put(e)
            say("acked", e.kind, episode)
        number += 1
        stop.wait(args.interval)
    say("closed", str(writer.close(30)))


class WriterProcess:
    """Runs this file; `lines(word)` are the facts it printed so far, in order."""

    def __init__(self, url: str, spool: Path, interval: float = 0.05):
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), url, str(spool),
                                         "--interval", str(interval)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=checkout_env())
        self._out: list[list[str]] = []
        self.log: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.process.stdout, self._out, str.split), daemon=True),
                         threading.Thread(target=self._read, args=(self.process.stderr, self.log, str.rstrip), daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list, parse) -> None:
        for line in stream:
            if line.endswith("\n"):  # a line that SIGKILL cut short (a full pipe buffer flushed mid-print) says nothing
                into.append(parse(line))

    def lines(self, word: str) -> list[list[str]]:
        return [line[1:] for line in list(self._out) if line and line[0] == word]

    def count(self, word: str) -> int:
        return len(self.lines(word))

    def wait_for(self, predicate, what: str, timeout: float = 60) -> None:
        from support.waiting import wait_until

        def done() -> bool:
            if not predicate() and self.process.poll() is not None:
                raise AssertionError(f"the writer process exited ({self.process.returncode}) while waiting for {what}; "
                                     f"its log: {self.log[-5:]}")
            return predicate()

        wait_until(done, timeout, what, describe=lambda: f"its log: {self.log[-5:]}")

    def stop(self, timeout: float = 60) -> str:
        """Stop the puts and close the writer; what `close` returned."""
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        self.process.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return self.lines("closed")[-1][0]

    def kill(self) -> None:
        """SIGKILL: no chance to flush or close anything."""
        self.process.kill()
        self.process.wait(10)
        for reader in self._readers:
            reader.join(5)


if __name__ == "__main__":
    main()
