"""Tests for the real RTSP test-server harness (tests/support/rtsp*.py).

The server runs under Debian's /usr/bin/python3 (GStreamer + gst-rtsp-server
via python3-gi); the client side is PyAV from the project venv, exactly as
the monitor reads cameras.
"""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import av
import pytest

from support.assets import ASSETS
from support.rtsp import RtspServer, RtspServerError, rtsp_available

VIDEOS = ASSETS / "videos"
CLIP = VIDEOS / "intel_worker-zone-detection.mp4"  # h264 480x270 @ 15, 4.7 s
AVI_CLIP = VIDEOS / "kinetics400_R6llTwEh07w.avi"  # mpeg4 340x256 @ 30

_reason = rtsp_available()
pytestmark = [pytest.mark.rtsp, pytest.mark.skipif(_reason is not None, reason=_reason or "")]

OPEN_OPTS = {"rtsp_transport": "tcp"}


def open_stream(url: str, timeout=(5, 5)):
    return av.open(url, options=OPEN_OPTS, timeout=timeout)


def read_frames(container, n: int) -> list:
    """Decode ``n`` video frames from an open container (its read timeout fails a stalled stream)."""
    return list(itertools.islice(container.decode(video=0), n))


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"test clip not found: {path}")
    return path


def test_pattern_stream_delivers_frames_with_requested_size():
    with RtspServer(pattern="ball", width=320, height=240, fps=25) as srv:
        assert srv.url == f"rtsp://127.0.0.1:{srv.port}/cam"
        with open_stream(srv.url) as c:
            frames = read_frames(c, 10)
        assert len(frames) == 10
        assert {(f.width, f.height) for f in frames} == {(320, 240)}
        # moving ball: the picture changes between frames
        a, b = frames[0].to_ndarray(format="gray"), frames[-1].to_ndarray(format="gray")
        assert (a != b).any()


def test_default_pattern_and_shared_factory_serves_two_clients():
    with RtspServer() as srv, open_stream(srv.url) as c1, open_stream(srv.url) as c2:
        it1, it2 = c1.decode(video=0), c2.decode(video=0)
        for _ in range(10):
            f1, f2 = next(it1), next(it2)
        assert (f1.width, f1.height) == (640, 360)
        assert (f2.width, f2.height) == (640, 360)


def test_real_clip_is_served():
    clip = need(CLIP)
    with RtspServer(file=clip, loop=True) as srv:
        with open_stream(srv.url) as c:
            frames = read_frames(c, 10)
        assert {(f.width, f.height) for f in frames} == {(480, 270)}


def test_avi_mpeg4_clip_is_reencoded():
    clip = need(AVI_CLIP)
    with RtspServer(file=clip, loop=True) as srv:
        with open_stream(srv.url) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            frames = read_frames(c, 10)
        assert {(f.width, f.height) for f in frames} == {(340, 256)}


def test_clip_without_loop_plays_once_then_ends():
    clip = need(CLIP)  # 71 frames, 4.7 s
    with RtspServer(file=clip) as srv, open_stream(srv.url) as c:
        n = sum(1 for _ in itertools.islice(c.decode(video=0), 300))  # a looping stream would reach 300
    assert 40 <= n <= 71, n


def test_kill_ends_client_and_restart_serves_new_client():
    with RtspServer(width=320, height=240) as srv:
        url, port = srv.url, srv.port
        c = open_stream(url)
        try:
            it = c.decode(video=0)
            for _ in range(5):
                next(it)
            srv.kill()
            assert not srv.running
            after_kill = 0
            try:
                for _ in itertools.islice(it, 300):  # drains buffered frames, then EOF or error
                    after_kill += 1
            except (av.error.FFmpegError, OSError):
                pass
        finally:
            c.close()
        assert after_kill < 300, "the stream ended after kill()"

        srv.restart()
        assert srv.running and srv.port == port and srv.url == url
        with open_stream(url) as c2:
            frames = read_frames(c2, 10)
        assert {(f.width, f.height) for f in frames} == {(320, 240)}


def test_pause_freezes_server_and_resume_recovers():
    with RtspServer(width=160, height=120) as srv:
        srv.pause()
        assert srv.paused
        with pytest.raises((av.error.FFmpegError, OSError)):
            # kernel accepts the TCP connection, but nobody answers DESCRIBE: the client's timeout ends it
            open_stream(srv.url, timeout=(1.5, 1.5))
        srv.resume()
        with open_stream(srv.url) as c:
            assert len(read_frames(c, 10)) == 10


def test_port_in_use_is_reported():
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        with pytest.raises(RtspServerError) as exc_info:
            RtspServer(port=port).start()
    assert exc_info.value.returncode == 3
    assert "port" in str(exc_info.value)


def test_stop_is_clean_and_idempotent():
    srv = RtspServer(width=160, height=120).start()
    assert srv.startup_seconds is not None, "start() returns once the server answers (its own ceiling bounds the wait)"
    assert srv.stop() == 0
    assert not srv.running
    assert srv.stop() == 0
