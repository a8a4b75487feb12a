"""The one lifecycle of every long-running stage: a thread of its own, started and stopped from outside.

    stage = SomeStage(...)   # a constructor starts nothing
    stage.start()            # starts its thread
    stage.stop()             # asks it to finish (what "finish" means is the stage's: e.g. drain its input)
    stage.join(timeout)      # True once it has ended

One owner per thread; one stop signal per stage, so the daemon stops them one by one in flow order.
A thread that dies of an unexpected exception is logged and reported by `healthy`, which /healthz
reads, so a supervisor (systemd, Kubernetes) restarts the process instead of it limping on.
"""

from __future__ import annotations

import logging
import threading

from monitor.ops.logs import kv

log = logging.getLogger(__name__)


class Worker:
    """A stage with one thread. Subclasses implement `run()`, which returns once `stopping` is set
    (and whatever the stage must finish is finished)."""

    def __init__(self, name: str):
        self.name = name
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._died = False

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} was started already")
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def healthy(self) -> bool:
        """False once the thread died of an exception, or ended although nobody asked it to stop."""
        if self._thread is None or self._thread.is_alive():
            return not self._died
        return self.stopping.is_set() and not self._died

    def _main(self) -> None:
        try:
            self.run()
        except Exception:
            self._died = True
            log.exception(kv(event="thread_died", thread=self.name))

    def run(self) -> None:
        raise NotImplementedError
