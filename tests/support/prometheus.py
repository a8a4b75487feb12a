"""Test helper: a real Prometheus server (Debian's `prometheus` 2.x) on 127.0.0.1, and its HTTP API.

    from support.prometheus import PrometheusServer, binary

    if binary("prometheus") is None:
        pytest.skip("prometheus is not installed")
    with PrometheusServer(config_dict, tmp_path) as prom:
        prom.wait_for(lambda: prom.query("up") or None, 30, "a first scrape")

The server listens on a free loopback port, keeps its TSDB under the given directory, logs to a
file there (shown in errors), and is terminated (then killed) on exit.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from support.waiting import wait_until


def binary(name: str) -> str | None:
    """The path of a tool on PATH or beside this Python (a venv's bin/), or None."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusError(RuntimeError):
    pass


class PrometheusServer:
    def __init__(self, config: dict, workdir: Path, start_timeout: float = 30.0):
        self.config = config
        self.workdir = Path(workdir)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path = self.workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusServer:
        exe = binary("prometheus")
        if exe is None:
            raise PrometheusError("prometheus is not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        for _attempt in range(3):  # a free port can be taken between finding it and binding it
            self.port = free_port()
            log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(
                [exe, f"--config.file={config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir)
            log.close()
            if self._wait_ready():
                return self
            self._stop()
        raise PrometheusError(f"prometheus did not become ready; its log:\n{self.log()}")

    def __exit__(self, *exc) -> None:
        self._stop()

    def _wait_ready(self) -> bool:
        """True once /-/ready answers; False if the process ended (e.g. its port was taken) or never got ready."""
        def ready_or_gone() -> bool:
            if self.proc.poll() is not None:
                return True
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200

        try:
            wait_until(ready_or_gone, self.start_timeout, "prometheus ready", interval=0.2, retry_on=(OSError,))
        except AssertionError:
            return False
        return self.proc.poll() is None

    def _stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self, tail: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return "(no log)"

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a success, PrometheusError with the error otherwise."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as err:  # 400/422: a bad query, with Prometheus' reason
            body = json.load(err)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector (or scalar/string as a one-item list)."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def wait_for(self, probe: Callable[[], Any], timeout: float, what: str) -> Any:
        """`wait_until` the probe's first truthy value, retrying Prometheus' errors, showing its log on failure."""
        return wait_until(probe, timeout, what, interval=0.5, retry_on=(PrometheusError,),
                          describe=lambda: f"prometheus log:\n{self.log()}")
