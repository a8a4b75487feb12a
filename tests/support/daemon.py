"""A real daemon in a thread of the test process, scraped over HTTP."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

from support.waiting import wait_until


class RunningDaemon:
    def __init__(self, site_path: Path, upgrade: bool = True, shard: tuple[int, int] | None = None):
        from monitor.pipeline.daemon import Daemon
        from monitor.record.db import upgrade as upgrade_schema
        from monitor.site.check import check_site

        checked = check_site(site_path)
        if upgrade:
            upgrade_schema(checked.site.database_url)
        self.daemon = Daemon.for_site(checked, shard)
        self.stop = threading.Event()
        self.summary = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.summary = self.daemon.run(self.stop)

    def __enter__(self) -> RunningDaemon:
        self.thread.start()
        wait_until(lambda: self.daemon.summary.metrics_url, 60, "the daemon's metrics server")
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(15)

    def scrape(self) -> dict[tuple[str, tuple], float]:
        """GET /metrics and parse it with prometheus_client's parser."""
        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(self.daemon.summary.metrics_url, timeout=5).read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def value(self, name: str, **labels: str) -> float:
        return self.scrape().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_for(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        """`wait_until`, showing the camera metrics when it times out."""
        wait_until(predicate, timeout, what, interval=0.2,
                   describe=lambda: {k: v for k, v in self.scrape().items() if "camera" in str(k)})


class DaemonProcess:
    """`har-monitor run --cameras SITE` in a subprocess (`python -m monitor`): its log lines, SIGTERM, SIGKILL."""

    def __init__(self, site_path: Path, *args: str):
        import subprocess
        import sys

        from support.writer_process import checkout_env

        self.process = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--cameras", str(site_path), *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=checkout_env())
        self.log: list[str] = []
        self._reader = threading.Thread(target=lambda: self.log.extend(self.process.stdout), daemon=True)
        self._reader.start()

    def logged(self, needle: str) -> int:
        return sum(needle in line for line in list(self.log))

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = 120) -> None:
        def enough() -> bool:
            if self.logged(needle) < count and self.process.poll() is not None:
                raise AssertionError(f"the daemon exited ({self.process.returncode}) before logging {needle!r} x{count}: "
                                     + "".join(self.log[-20:]))
            return self.logged(needle) >= count

        wait_until(enough, timeout, f"{needle!r} x{count} in the daemon's log", interval=0.1,
                   describe=lambda: "".join(self.log[-20:]))

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, as systemd or Kubernetes stop it; its exit status."""
        self.process.terminate()
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code
