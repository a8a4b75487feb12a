"""Running several machines: camera shards, health endpoints, shard labels on every metric."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from monitor.errors import UserError
from monitor.ops.logs import setup_logging
from monitor.site.config import parse_shard, shard_of
from support.daemon import RunningDaemon
from support.secrets import MARK, assert_only_redacted
from support.sites import write_site
from support.waiting import wait_until


def test_every_camera_is_in_exactly_one_shard_and_adding_one_moves_no_other():
    cameras = [f"line-{i}-cam-{j}" for i in range(20) for j in range(5)]
    for count in (1, 2, 3, 7):
        shards = {c: shard_of(c, count) for c in cameras}
        assert all(0 <= s < count for s in shards.values())
        assert {c: shard_of(c, count) for c in cameras} == shards, "stable: the same answer every time"
        sizes = [list(shards.values()).count(i) for i in range(count)]
        assert min(sizes) > 0.5 * len(cameras) / count, f"shards are roughly balanced: {sizes}"


def test_shard_argument():
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "x", "1/0", "-1/3"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


def get(url: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode()
            return r.status, json.loads(body) if "json" in r.headers["Content-Type"] else body
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read().decode())


@pytest.mark.slow
def test_a_shard_watches_its_cameras_and_labels_its_metrics(tmp_path, tiny_bundle, clip):
    cameras = [{"id": f"cam-{i}", "url": str(clip), "loop": True} for i in range(6)]
    mine = sorted(c["id"] for c in cameras if shard_of(c["id"], 2) == 1)
    site = write_site(tmp_path, tiny_bundle, cameras)
    with RunningDaemon(site, shard=(1, 2)) as d:
        assert sorted(s.camera for s in d.daemon.sources) == mine
        base = d.daemon.summary.metrics_url.removesuffix("/metrics")
        d.wait_for(lambda: get(base + "/readyz")[0] == 200, 30, "ready")
        status, state = get(base + "/readyz")
        assert status == 200 and state["cameras_up"] == len(mine) and state["threads"]["store"] is True
        assert get(base + "/healthz")[0] == 200
        text = get(base + "/metrics")[1]
        assert f'har_monitor_camera_up{{camera="{mine[0]}",shard="1/2"}} 1.0' in text
        assert all('shard="1/2"' in line for line in text.splitlines() if line.startswith("har_monitor_frames_sampled_total"))


@pytest.mark.slow
def test_not_ready_while_no_camera_is_up(tmp_path, tiny_bundle):
    site = write_site(tmp_path, tiny_bundle, [{"id": "gone", "url": "rtsp://127.0.0.1:1/none", "open_timeout_seconds": 1}])
    with RunningDaemon(site) as d:
        base = d.daemon.summary.metrics_url.removesuffix("/metrics")
        status, state = get(base + "/readyz")
        assert status == 503 and state["cameras_up"] == 0 and state["ready"] is False
        assert get(base + "/healthz")[0] == 200, "alive all the same: restarting would not bring the camera back"


def test_camera_passwords_reach_no_log_line_metric_or_health_page(tmp_path, tiny_bundle, monkeypatch, capsys):
    """Passwords (from the environment) with the characters that end a host or a quoted URL, on
    unreachable cameras: the daemon's camera_down lines, /metrics and /healthz show none of them."""
    passwords = [f"pa/ss'{MARK}#x", f'a b"?{MARK}@c', f"p@ss\\{MARK}\n%2F:"]
    cameras = []
    for i, password in enumerate(passwords):
        monkeypatch.setenv(f"CAM_PASS_{i}", password)
        cameras.append({"id": f"cam-{i}", "url": f"rtsp://viewer:${{CAM_PASS_{i}}}@127.0.0.1:1/stream",
                        "open_timeout_seconds": 1})
    site = write_site(tmp_path, tiny_bundle, cameras)
    setup_logging("info")
    seen: list[str] = []

    def logged() -> str:
        seen.append(capsys.readouterr().err)
        return "".join(seen)

    with RunningDaemon(site) as d:
        wait_until(lambda: all(f"event=camera_down camera=cam-{i} " in logged() for i in range(3)), 60,
                   "a camera_down line from every camera")
        base = d.daemon.summary.metrics_url.removesuffix("/metrics")
        pages = [get(base + path)[1] for path in ("/metrics", "/healthz")]
    assert_only_redacted(logged() + str(pages), "rtsp://viewer:***@127.0.0.1:1/stream")
    assert "rtsp://" not in str(pages), "no URL in a metric label or the health page"
