"""Test helper: run ``rtsp_server.py`` (GStreamer RTSP server) in a subprocess.

Importable from the project venv: it never imports ``gi`` itself, the server
runs under Debian's ``/usr/bin/python3`` which has python3-gi and the
gst-rtsp-server typelib.

    from support.rtsp import RtspServer, rtsp_available

    reason = rtsp_available()
    if reason:
        pytest.skip(reason)
    with RtspServer(width=320, height=240) as srv:
        container = av.open(srv.url, options={"rtsp_transport": "tcp"}, timeout=(5, 5))
        ...
        srv.kill()      # camera dies (SIGKILL)
        srv.restart()   # camera comes back on the same port/url
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")

# Exit statuses of rtsp_server.py
EXIT_USAGE = 2
EXIT_PORT_IN_USE = 3

_PROBE = r"""
import sys
try:
    import gi
    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import Gst, GstRtspServer
except Exception as exc:
    print("%s: %s" % (type(exc).__name__, exc)); sys.exit(1)
Gst.init(None)
missing = [n for n in ("videotestsrc", "videoconvert", "decodebin", "appsrc",
                       "appsink", "x264enc", "rtph264pay")
           if Gst.ElementFactory.find(n) is None]
if missing:
    print("missing GStreamer elements: " + ", ".join(missing)); sys.exit(1)
"""


class RtspServerError(RuntimeError):
    """The server process failed to start (message includes its stderr)."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = ""):
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


@functools.cache
def rtsp_available(python: str = SYSTEM_PYTHON) -> str | None:
    """Return why the RTSP test server cannot run here, or None if it can."""
    if not os.access(python, os.X_OK):
        return f"{python} not found (needed for python3-gi / GStreamer RTSP server)"
    if not SERVER_SCRIPT.is_file():
        return f"{SERVER_SCRIPT} is missing"
    try:
        res = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot probe {python} for GStreamer: {exc}"
    if res.returncode != 0:
        detail = (res.stdout.strip() or res.stderr.strip().splitlines()[-1:] or ["?"])
        if isinstance(detail, list):
            detail = detail[0]
        return f"{python} cannot run the GStreamer RTSP server ({detail})"
    return None


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """A real RTSP server (H.264 over RTP) in a child process.

    Source: ``pattern`` (videotestsrc pattern, live, ``width``x``height`` @
    ``fps``; default ball 640x360@25) or ``file`` (any decodable video,
    re-encoded; ``loop=True`` to repeat forever, else it plays once from the
    first client connection).  ``port=None`` picks a free port; pass a fixed
    port to control it.  The factory is shared, several clients may connect.
    """

    def __init__(
        self,
        *,
        pattern: str | None = None,
        file: str | os.PathLike | None = None,
        loop: bool = False,
        width: int | None = None,
        height: int | None = None,
        fps: int | None = None,
        port: int | None = None,
        mount: str = "/cam",
        python: str = SYSTEM_PYTHON,
        ready_timeout: float = 15.0,
        env: dict | None = None,
    ):
        if pattern is not None and file is not None:
            raise ValueError("give either pattern or file, not both")
        self.pattern = pattern
        self.file = os.fspath(file) if file is not None else None
        self.loop = loop
        self.width, self.height, self.fps = width, height, fps
        self.mount = mount if mount.startswith("/") else "/" + mount
        self.python = python
        self.ready_timeout = ready_timeout
        self.env = env
        self._fixed_port = port is not None
        self.port: int | None = port
        self.url: str | None = None
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None  # spawn -> READY, last start
        self._stderr_file = None
        self._paused = False

    # -- lifecycle ---------------------------------------------------------
    def _argv(self, port: int) -> list[str]:
        argv = [self.python, "-u", str(SERVER_SCRIPT), "--port", str(port), "--mount", self.mount]
        if self.file is not None:
            argv += ["--file", self.file]
            if self.loop:
                argv.append("--loop")
        else:
            argv += ["--pattern", self.pattern or "ball"]
        for flag, value in (("--width", self.width), ("--height", self.height), ("--fps", self.fps)):
            if value is not None:
                argv += [flag, str(value)]
        return argv

    def start(self, *, port_retries: int = 3) -> RtspServer:
        """Spawn the server and wait for READY. Returns self."""
        if self.running:
            raise RuntimeError("server already running")
        attempts = 1 if self._fixed_port else max(1, port_retries)
        for attempt in range(attempts):
            port = self.port if self._fixed_port else free_port()
            try:
                self._spawn(port)
                return self
            except RtspServerError as exc:
                # Auto-picked port stolen between probe and bind: pick again.
                if exc.returncode == EXIT_PORT_IN_USE and attempt + 1 < attempts:
                    continue
                raise
        raise AssertionError("unreachable")

    def _spawn(self, port: int) -> None:
        self._close_stderr()
        self._stderr_file = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 (kept open for the server's life)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            self._argv(port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            env=self.env,
            start_new_session=True,  # ^C in the terminal doesn't hit it twice
        )
        self.proc = proc
        self._paused = False
        lines: list[str] = []
        got_line = threading.Event()

        def pump():
            # Drain stdout for the whole life of the process (never blocks it).
            with proc.stdout:
                for raw in proc.stdout:
                    lines.append(raw.decode(errors="replace").rstrip("\n"))
                    got_line.set()

        pump_thread = threading.Thread(target=pump, name=f"rtsp-stdout-{proc.pid}", daemon=True)
        pump_thread.start()

        deadline = t0 + self.ready_timeout
        ready = None
        while ready is None:
            ready = next((ln for ln in list(lines) if ln.startswith("READY ")), None)
            if ready is not None:
                break
            if proc.poll() is not None:
                pump_thread.join(1.0)  # collect anything printed before exit
                ready = next((ln for ln in list(lines) if ln.startswith("READY ")), None)
                if ready is not None:
                    break
                rc = proc.returncode
                err = self.stderr_text()
                self.proc = None
                raise RtspServerError(
                    f"RTSP server exited with status {rc} before READY "
                    f"(port {port}):\n{err}",
                    returncode=rc,
                    stderr=err,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._terminate(proc)
                err = self.stderr_text()
                self.proc = None
                raise RtspServerError(
                    f"RTSP server not READY within {self.ready_timeout}s "
                    f"(port {port}):\n{err}",
                    stderr=err,
                )
            got_line.wait(min(remaining, 0.05))
            got_line.clear()

        self.startup_seconds = time.monotonic() - t0
        self.url = ready.split(None, 1)[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
        self._fixed_port = True  # restart() reuses it

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, SIGKILL as a fallback. Returns exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                # a SIGSTOPped process would sit on SIGTERM until continued
                proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._paused = False
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL (simulates a camera/power failure) and reap."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._paused = False
        return proc.returncode

    def pause(self) -> None:
        """SIGSTOP: the stream freezes, TCP connections stay open."""
        self._require_running().send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after pause()."""
        self._require_running().send_signal(signal.SIGCONT)
        self._paused = False

    def restart(self, *, retries: int = 10, delay: float = 0.2) -> RtspServer:
        """Stop if running, then start again on the same port (same url)."""
        if self.running:
            self.stop()
        if self.port is not None:
            self._fixed_port = True
        last: RtspServerError | None = None
        for _ in range(max(1, retries)):
            try:
                self._spawn(self.port) if self.port is not None else self.start()
                return self
            except RtspServerError as exc:
                if exc.returncode != EXIT_PORT_IN_USE:
                    raise
                last = exc
                time.sleep(delay)
        assert last is not None
        raise last

    # -- introspection -------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused and self.running

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def stderr_text(self) -> str:
        """Everything the current/last server process wrote to stderr."""
        f = self._stderr_file
        if f is None or f.closed:
            return ""
        f.flush()
        f.seek(0)
        return f.read().decode(errors="replace")

    def _require_running(self) -> subprocess.Popen:
        if not self.running:
            raise RuntimeError("RTSP server is not running")
        return self.proc  # type: ignore[return-value]

    @staticmethod
    def _terminate(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _close_stderr(self) -> None:
        if self._stderr_file is not None and not self._stderr_file.closed:
            self._stderr_file.close()
        self._stderr_file = None

    # -- context manager -------------------------------------------------------
    def __enter__(self) -> RtspServer:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._close_stderr()

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.running else "stopped")
        return f"<RtspServer {self.url or self.port} pid={self.pid} {state}>"
