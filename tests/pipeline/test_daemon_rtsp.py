"""A real RTSP camera that stalls and dies never stops the other cameras, and comes back."""

from __future__ import annotations

import pytest

from support.daemon import RunningDaemon
from support.rtsp import RtspServer, rtsp_available
from support.sites import write_site

pytestmark = [pytest.mark.rtsp, pytest.mark.slow,
              pytest.mark.skipif(rtsp_available() is not None, reason=rtsp_available() or "")]


def test_rtsp_camera_stall_kill_and_recovery(tmp_path, tiny_bundle, clip):
    with RtspServer(pattern="ball", width=320, height=240, fps=25) as server:
        site = write_site(tmp_path, tiny_bundle, [
            {"id": "rtsp-cam", "url": server.url, "stall_seconds": 2, "open_timeout_seconds": 3},
            {"id": "file-cam", "url": str(clip), "loop": True},
        ])
        with RunningDaemon(site) as d:
            up = lambda cam: d.value("har_monitor_camera_up", camera=cam)
            sampled = lambda cam: d.value("har_monitor_frames_sampled_total", camera=cam)
            d.wait_for(lambda: up("rtsp-cam") == 1 and up("file-cam") == 1, 20, "both cameras up")
            d.wait_for(lambda: sampled("rtsp-cam") >= 5, 10, "RTSP frames sampled")

            server.pause()  # SIGSTOP: the stream stalls, PyAV's read would block
            d.wait_for(lambda: up("rtsp-cam") == 0, 30, "stalled camera marked down")
            assert d.value("har_monitor_camera_stalls_total", camera="rtsp-cam") >= 1
            before = sampled("file-cam")
            d.wait_for(lambda: sampled("file-cam") > before + 2, 30, "the file camera going on while the RTSP one is down")
            assert up("rtsp-cam") == 0 and up("file-cam") == 1

            server.resume()
            d.wait_for(lambda: up("rtsp-cam") == 1, 20, "camera back after the stall")

            server.kill()  # SIGKILL: PyAV's iteration just ends
            d.wait_for(lambda: up("rtsp-cam") == 0, 10, "killed camera marked down")
            reconnects = d.value("har_monitor_camera_reconnects_total", camera="rtsp-cam")
            d.wait_for(lambda: d.value("har_monitor_camera_reconnects_total", camera="rtsp-cam") > reconnects,
                       10, "reconnect attempts while the server is gone")
            before = sampled("file-cam")
            d.wait_for(lambda: sampled("file-cam") > before + 2, 30, "the file camera going on")

            server.restart()
            d.wait_for(lambda: up("rtsp-cam") == 1, 20, "camera back after the server restarts")
            count = sampled("rtsp-cam")
            d.wait_for(lambda: sampled("rtsp-cam") > count + 3, 10, "frames flowing again")
            assert d.value("har_monitor_embeddings_total", camera="rtsp-cam") > 0
