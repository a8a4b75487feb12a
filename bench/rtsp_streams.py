#!/usr/bin/python3
"""N live RTSP cameras from H.264 files, passed through WITHOUT re-encoding (for bench/cameras.py).

Run with Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good/bad):

    /usr/bin/python3 bench/rtsp_streams.py --port 0 --count 8 --offset 7 clip.mp4 [clip2.mp4 ...]

serves rtsp://127.0.0.1:PORT/cam0 .. /cam{count-1}; camera i plays clip i % len(clips), starting
(i // len(clips)) * offset seconds in (modulo its length; at the keyframe before), looping forever. Prints one line
`READY rtsp://127.0.0.1:PORT` once listening; exit 3 if the port cannot be bound.

Each camera has a producer pipeline `filesrc ! qtdemux ! h264parse ! appsink sync=true` (paced by the
clock: a live camera's 25 fps) whose access units (avc, SPS/PPS in the caps) go to a live
`appsrc ! rtph264pay config-interval=-1` in the RTSP media (SPS/PPS in the SDP and before every IDR): a flushing seek at end of file loops it without any RTSP-level discontinuity (appsrc
re-timestamps every buffer), and nothing is decoded or encoded, so the server costs little per camera
(the existing tests/support/rtsp_server.py re-encodes, which would cost as much CPU as the daemon).
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

EXIT_PORT = 3


def log(msg: str) -> None:
    print(f"rtsp_streams[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


class Producer:
    """One camera: demuxes its file in real time and hands every access unit to the media's appsrc(s)."""

    def __init__(self, path: str, start_seconds: float):
        self.start_seconds = start_seconds
        self.lock = threading.Lock()
        self.appsrcs: list = []
        self.playing = False
        # avc: the caps carry SPS/PPS (codec_data), so the SDP has them before the first keyframe arrives
        # (else a client that probes little, as the daemon does, can fail its first open)
        self.pipeline = Gst.parse_launch(
            "filesrc name=file ! qtdemux ! h264parse ! video/x-h264,stream-format=avc,alignment=au ! "
            "appsink name=sink sync=true emit-signals=true max-buffers=4 drop=false")
        self.pipeline.get_by_name("file").set_property("location", path)
        sink = self.pipeline.get_by_name("sink")
        sink.connect("new-sample", self._on_sample)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_message)
        self.pipeline.set_state(Gst.State.PAUSED)
        self.pipeline.get_state(10 * Gst.SECOND)
        sample = sink.emit("pull-preroll")
        if sample is None:
            raise RuntimeError(f"{path}: no H.264 access unit")
        self.caps = sample.get_caps()
        ok, duration = self.pipeline.query_duration(Gst.Format.TIME)
        start = int(start_seconds * Gst.SECOND) % duration if ok and duration > 0 else 0
        if start > 0:
            self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, start)
            self.pipeline.get_state(10 * Gst.SECOND)

    def attach(self, appsrc) -> None:
        appsrc.set_property("caps", self.caps)
        with self.lock:
            self.appsrcs.append(appsrc)
        if not self.playing:
            self.playing = True
            self.pipeline.set_state(Gst.State.PLAYING)

    def detach(self, appsrc) -> None:
        with self.lock:
            if appsrc in self.appsrcs:
                self.appsrcs.remove(appsrc)

    def _on_sample(self, sink):
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        buf = sample.get_buffer()
        with self.lock:
            targets = list(self.appsrcs)
        for src in targets:
            if src.current_state != Gst.State.PLAYING:
                continue  # do-timestamp would stamp a paused media's buffers wrongly
            out = buf.copy()  # shares the memory; the timestamps are appsrc's to set
            out.pts = out.dts = out.duration = Gst.CLOCK_TIME_NONE
            src.emit("push-buffer", out)
        return Gst.FlowReturn.OK

    def _on_message(self, _bus, msg):
        if msg.type == Gst.MessageType.EOS:
            self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            log(f"producer error: {err.message} ({dbg})")
        return True


def serve(args: argparse.Namespace) -> int:
    Gst.init(None)
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, lambda *_: (loop.quit(), GLib.SOURCE_REMOVE)[1])
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    producers = []
    for i in range(args.count):
        clip = args.clips[i % len(args.clips)]
        producer = Producer(os.path.abspath(clip), (i // len(args.clips)) * args.offset)
        producers.append(producer)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch("( appsrc name=src is-live=true format=time do-timestamp=true max-buffers=8 "
                           "leaky-type=downstream ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
        factory.set_shared(True)

        def configure(_factory, media, producer=producer):
            appsrc = media.get_element().get_by_name("src")
            producer.attach(appsrc)
            media.connect("unprepared", lambda _m: producer.detach(appsrc))

        factory.connect("media-configure", configure)
        server.get_mount_points().add_factory(f"/cam{i}", factory)
    if server.attach(None) == 0:  # returns 0 (a GLib warning only) when the port is taken
        log(f"cannot listen on 127.0.0.1:{args.port}")
        return EXIT_PORT
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}", flush=True)
    try:
        loop.run()
    finally:
        server.client_filter(lambda *_a: GstRtspServer.RTSPFilterResult.REMOVE)
        for p in producers:
            p.pipeline.set_state(Gst.State.NULL)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--count", type=int, required=True, help="cameras to serve")
    ap.add_argument("--offset", type=float, default=7.0, help="seconds between the start points of cameras sharing a clip")
    ap.add_argument("clips", nargs="+", help="H.264 mp4 files")
    return serve(ap.parse_args())


if __name__ == "__main__":
    sys.exit(main())
