#!/usr/bin/python3
"""Standalone RTSP test server (GStreamer + gst-rtsp-server via PyGObject).

Run with Debian's ``/usr/bin/python3`` (``gi`` is not importable from the
project venv).  Test code should use ``tests/support/rtsp.py`` which wraps
this script in a context manager.

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554 --pattern ball
    /usr/bin/python3 tests/support/rtsp_server.py --port 8554 --file clip.mp4 --loop

Protocol with the parent process:

* exactly one line ``READY rtsp://127.0.0.1:PORT/MOUNT`` on stdout once the
  listening socket is bound (``--port 0`` lets the kernel pick a port; the
  READY line carries the real one);
* diagnostics go to stderr only;
* exit status 0 on SIGTERM/SIGINT, 2 on bad arguments / unusable source,
  3 when the port cannot be bound (``server.attach()`` returned 0),
  4 on a runtime pipeline error of the file decoder.

Sources:

* ``--pattern NAME`` (default ``ball``): live ``videotestsrc`` at
  ``--width``x``--height`` / ``--fps`` (default 640x360 @ 25).
* ``--file PATH``: any file GStreamer can decode (``decodebin``), re-encoded
  to H.264.  The file is decoded by a separate *producer* pipeline paced by
  the clock and handed over to a live ``appsrc`` inside the RTSP media, so
  the stream looks like a live camera: ``--loop`` restarts the file with a
  flushing seek at EOS (no RTSP-level discontinuity because ``appsrc``
  re-timestamps every buffer).  Without ``--loop`` the file plays once,
  starting when the first client connects, then the stream sends EOS; a
  later client (after everyone disconnected) gets the file from the start
  again.  ``--width/--height/--fps`` optionally rescale / resample the file.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

ENCODER = (
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 "
    "! rtph264pay name=pay0 pt=96 config-interval=1"
)

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_PORT = 3
EXIT_PIPELINE = 4


def log(msg: str) -> None:
    print(f"rtsp_server[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def raw_caps(width, height, fps) -> str:
    parts = ["video/x-raw"]
    if width:
        parts.append(f"width={int(width)}")
    if height:
        parts.append(f"height={int(height)}")
    if fps:
        parts.append(f"framerate={int(fps)}/1")
    return ",".join(parts)


class FileProducer:
    """Decodes a file in its own pipeline and feeds live appsrc elements."""

    def __init__(self, path: str, loop: bool, width, height, fps, on_fatal):
        self.path = path
        self.loop = loop
        self.on_fatal = on_fatal
        self._lock = threading.Lock()
        self._appsrcs: list[Gst.Element] = []
        self.caps: Gst.Caps | None = None
        self.playing = False
        self.finished = False
        self.loops = 0

        convert = "videoconvert"
        if width or height:
            convert += " ! videoscale"
        if fps:
            convert += " ! videorate"
        caps = raw_caps(width, height, fps) + ",format=I420"
        desc = (
            "filesrc name=file ! decodebin name=dec ! video/x-raw ! queue ! "
            f"{convert} ! {caps} ! "
            "appsink name=sink sync=true emit-signals=true max-buffers=2 drop=false"
        )
        self.pipeline = Gst.parse_launch(desc)
        self.pipeline.get_by_name("file").set_property("location", path)
        sink = self.pipeline.get_by_name("sink")
        sink.connect("new-sample", self._on_sample)
        sink.connect("new-preroll", self._on_preroll)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_message)

    # -- startup -----------------------------------------------------------
    def preroll(self, timeout_s: float = 10.0) -> None:
        """PAUSE the producer so caps are known before READY is printed."""
        ret = self.pipeline.set_state(Gst.State.PAUSED)
        if ret == Gst.StateChangeReturn.FAILURE:
            raise RuntimeError(self._drain_error() or "cannot pause file pipeline")
        ret, _state, _pending = self.pipeline.get_state(int(timeout_s * Gst.SECOND))
        if ret == Gst.StateChangeReturn.FAILURE:
            raise RuntimeError(self._drain_error() or "cannot preroll file")
        if ret == Gst.StateChangeReturn.ASYNC:
            raise RuntimeError(f"file did not preroll within {timeout_s}s")
        if self.caps is None:
            sample = self.pipeline.get_by_name("sink").emit("pull-preroll")
            if sample is None:
                raise RuntimeError("file has no decodable video frames")
            self.caps = sample.get_caps()

    def _drain_error(self) -> str | None:
        # the ERROR message can trail the failed state change a little
        msg = self.pipeline.get_bus().timed_pop_filtered(
            Gst.SECOND // 2, Gst.MessageType.ERROR
        )
        if msg is None:
            return None
        err, dbg = msg.parse_error()
        return f"{err.message} ({dbg})"

    # -- appsrc management -------------------------------------------------
    def attach(self, appsrc: Gst.Element) -> None:
        appsrc.set_property("caps", self.caps)
        with self._lock:
            self._appsrcs.append(appsrc)
        if self.finished:
            # Play-once file already done: a new media starts it over.
            self.finished = False
            self.pipeline.seek_simple(
                Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0
            )
        if not self.playing:
            self.playing = True
            self.pipeline.set_state(Gst.State.PLAYING)

    def detach(self, appsrc: Gst.Element) -> None:
        with self._lock:
            if appsrc in self._appsrcs:
                self._appsrcs.remove(appsrc)

    # -- streaming thread ----------------------------------------------------
    def _on_preroll(self, sink):
        sample = sink.emit("pull-preroll")
        if sample is not None and self.caps is None:
            self.caps = sample.get_caps()
        return Gst.FlowReturn.OK

    def _on_sample(self, sink):
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        buf = sample.get_buffer()
        with self._lock:
            targets = list(self._appsrcs)
        for src in targets:
            # A live source only produces in PLAYING, and appsrc stamps with
            # do-timestamp at push time: frames pushed while the media is
            # still PAUSED would get bogus timestamps (GStreamer warns).
            if src.current_state != Gst.State.PLAYING:
                continue
            out = buf.copy()  # shares memory; metadata is ours to change
            # appsrc do-timestamp only stamps buffers without timestamps
            out.pts = Gst.CLOCK_TIME_NONE
            out.dts = Gst.CLOCK_TIME_NONE
            out.duration = Gst.CLOCK_TIME_NONE
            src.emit("push-buffer", out)
        return Gst.FlowReturn.OK

    # -- main loop -----------------------------------------------------------
    def _on_message(self, _bus, msg):
        if msg.type == Gst.MessageType.EOS:
            if self.loop:
                self.loops += 1
                ok = self.pipeline.seek_simple(
                    Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0
                )
                if not ok:
                    log("loop seek failed; stopping file source")
                    self._send_eos()
            else:
                self.finished = True
                self._send_eos()
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            log(f"file pipeline error: {err.message} ({dbg})")
            self.on_fatal(EXIT_PIPELINE)
        return True

    def _send_eos(self):
        with self._lock:
            targets = list(self._appsrcs)
        for src in targets:
            src.emit("end-of-stream")

    def shutdown(self):
        self.pipeline.set_state(Gst.State.NULL)


def build_launch(args) -> str:
    if args.file:
        src = (
            "appsrc name=src is-live=true format=time do-timestamp=true "
            "max-buffers=2 leaky-type=downstream ! videoconvert"
        )
    else:
        src = (
            f"videotestsrc is-live=true pattern={args.pattern} ! "
            f"{raw_caps(args.width, args.height, args.fps)} ! videoconvert"
        )
    return f"( {src} ! {ENCODER} )"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 (0 = any)")
    p.add_argument("--mount", default="/cam", help="mount point (default /cam)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pattern", default=None, help="videotestsrc pattern (default ball)")
    src.add_argument("--file", default=None, help="video file to serve (re-encoded)")
    p.add_argument("--loop", action="store_true", help="loop --file forever")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--fps", type=int, default=None)
    args = p.parse_args(argv)
    if not args.mount.startswith("/"):
        args.mount = "/" + args.mount
    if args.file is None:
        args.pattern = args.pattern or "ball"
        args.width = args.width or 640
        args.height = args.height or 360
        args.fps = args.fps or 25
    elif not os.path.isfile(args.file):
        p.error(f"--file {args.file!r}: no such file")
    if not 0 <= args.port <= 65535:
        p.error("--port must be in 0..65535")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    loop = GLib.MainLoop()
    status = {"code": EXIT_OK}

    def fatal(code):
        status["code"] = code
        loop.quit()

    # Installed early: a SIGTERM during startup is held until the loop runs,
    # then handled as a clean exit instead of the default kill.
    def on_signal(signame):
        log(f"{signame}: shutting down")
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, on_signal, "SIGTERM")
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, on_signal, "SIGINT")

    producer = None
    if args.file:
        try:
            producer = FileProducer(
                os.path.abspath(args.file), args.loop, args.width, args.height, args.fps, fatal
            )
        except GLib.Error as exc:
            log(f"cannot build file pipeline: {exc.message}")
            return EXIT_USAGE
        try:
            producer.preroll()
        except RuntimeError as exc:
            log(f"cannot use {args.file}: {exc}")
            producer.shutdown()
            return EXIT_USAGE

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(build_launch(args))
    factory.set_shared(True)

    def on_media_configure(_factory, media):
        if producer is None:
            return
        appsrc = media.get_element().get_by_name("src")
        producer.attach(appsrc)
        media.connect("unprepared", lambda _m: producer.detach(appsrc))

    factory.connect("media-configure", on_media_configure)
    server.get_mount_points().add_factory(args.mount, factory)

    # Pitfall: attach() returns 0 (and only logs a GLib warning) when the
    # port is already in use.
    if server.attach(None) == 0:
        log(f"cannot listen on 127.0.0.1:{args.port} (port in use?)")
        if producer:
            producer.shutdown()
        return EXIT_PORT

    port = server.get_bound_port()
    print(f"READY rtsp://127.0.0.1:{port}{args.mount}", flush=True)

    try:
        loop.run()
    finally:
        # Drop RTSP sessions so clients see the TCP connection close.
        server.client_filter(lambda _s, _c, *_a: GstRtspServer.RTSPFilterResult.REMOVE)
        if producer:
            producer.shutdown()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
