"""The metrics port: where it listens by default, and what a scraper that hangs up leaves in the log."""

from __future__ import annotations

import socket
import struct

import pytest

from monitor.ops.logs import setup_logging
from monitor.ops.metrics import Metrics
from monitor.site.config import load_site
from support.waiting import wait_until


def outside_address() -> str:
    """This machine's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
        except OSError:
            pytest.skip("no network interface besides loopback")
        return s.getsockname()[0]


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except OSError:
        return False


def test_the_metrics_port_listens_on_loopback_unless_the_site_says_otherwise(tmp_path):
    """/metrics has no authentication: by default nothing but this machine reaches it."""
    site = tmp_path / "site.yaml"
    site.write_text("site: x\nmodel: m\ncameras: [{id: a, url: a.mp4}]\nmetrics: {port: 0}\n")
    outside = outside_address()
    metrics = Metrics()
    port = metrics.serve(load_site(site).config.metrics.host, 0)
    try:
        assert reachable("127.0.0.1", port)
        assert not reachable(outside, port), f"the default listens on {outside} too"
    finally:
        metrics.close()

    site.write_text(site.read_text().replace("{port: 0}", "{host: 0.0.0.0, port: 0}"))
    metrics = Metrics()
    port = metrics.serve(load_site(site).config.metrics.host, 0)
    try:
        assert reachable(outside, port), "0.0.0.0 when the site asks for it (Prometheus in Kubernetes)"
    finally:
        metrics.close()


def hang_up_mid_response(port: int) -> None:
    """GET /metrics, read its first byte, then close with a reset while the rest is being written."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the server cannot write it all at once
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        s.recv(1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_scraper_that_hangs_up_mid_response_leaves_one_debug_line_and_no_traceback(capsys):
    setup_logging("debug")
    metrics = Metrics()
    metrics.init_cameras([f"camera-{i:03d}" for i in range(200)])  # a page of a few hundred kB
    port = metrics.serve("127.0.0.1", 0)
    seen: list[str] = []

    def noticed() -> bool:
        hang_up_mid_response(port)
        seen.append(capsys.readouterr().err)
        return "event=metrics_client_gone" in "".join(seen)

    try:
        wait_until(noticed, 30, "the server to notice a scraper hanging up", interval=0.2)
        seen.append(capsys.readouterr().err)
        assert reachable("127.0.0.1", port), "it serves on"
    finally:
        metrics.close()
    log = "".join(seen)
    assert "Traceback" not in log and "Exception occurred" not in log, log[:3000]
    assert all(line.startswith("20") for line in log.splitlines()), "nothing but log lines"
