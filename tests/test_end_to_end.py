"""The demo site end to end: real clips, real InceptionV3 + GRU, SQLite, /metrics over HTTP, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from support.assets import REPO
from support.daemon import RunningDaemon
from support.sites import copy_demo
from support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.tf]


@pytest.fixture(scope="module")
def demo_site(demo_build, tmp_path_factory) -> Path:
    return copy_demo(demo_build, tmp_path_factory.mktemp("demo") / "site")  # the demo as it ships: its model sees the wave


def rows(db: Path) -> list[dict]:
    """The record as QA sees it: each violation with its closing audit event applied."""
    from monitor.record.review import query

    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        result = [dict(v.row, status=("closed" if v.ended_at else "open"), ended_at=v.ended_at,
                       confidence=v.peak_confidence, evidence=v.evidence) for v in query(conn)]
    engine.dispose()
    return result


def test_demo_site_finds_falls_and_stores_them(demo_site):
    from monitor.model.bundle import load_bundle

    began = datetime.now(timezone.utc)
    with RunningDaemon(demo_site) as d:
        first = d.scrape()
        d.wait_for(lambda: d.value("har_monitor_violations_total", camera="line-2", rule="person-fell",
                                   severity="critical") >= 1, 60, "a fall on line-2")
        d.wait_for(lambda: d.value("har_monitor_frame_to_violation_seconds_count") >= 1, 10, "the violation stored")
        second = d.scrape()
        d.wait_for(lambda: any(r["evidence"] for r in rows(demo_site.parent / "violations.db")), 30,
                   "evidence clip written after the post-roll")
        d.wait_for(lambda: d.value("har_monitor_violations_total", camera="line-1", rule="waving-in-cleanroom",
                                   severity="minor") >= 1, 60, "the clean room's wave (every rule the demo ships fires)")
    for cam in ("line-1", "line-2"):
        key = ("har_monitor_frames_sampled_total", (("camera", cam),))
        assert second[key] > first[key], "counters move"
        assert second[("har_monitor_camera_up", (("camera", cam),))] == 1
    assert second[("har_monitor_inference_batch_size_count", ())] > 0
    assert second[("har_monitor_frame_to_violation_seconds_count", ())] >= 1
    assert sum(v for (name, _), v in second.items() if name == "har_monitor_predictions_total") > 0

    stored = rows(demo_site.parent / "violations.db")
    falls = [r for r in stored if r["rule"] == "person-fell"]
    assert falls, stored
    fall = falls[0]
    bundle = load_bundle(demo_site.parent / "models" / "demo-actions")
    assert fall["camera"] in ("line-1", "line-2") and fall["severity"] == "critical" and fall["action"] == "fall"
    assert fall["model_hash"] == bundle.hash and fall["confidence"] >= 0.6
    assert all(r["status"] == "closed" and r["ended_at"] is not None for r in stored), "shutdown closes open episodes"
    started = fall["started_at"]
    assert started.tzinfo is not None and began <= started <= datetime.now(timezone.utc), "times are UTC, of this run"
    with_evidence = next(r for r in stored if r["evidence"])
    clip = demo_site.parent / "evidence" / with_evidence["evidence"]["clip"]["path"]
    import av

    with av.open(str(clip)) as container:
        assert sum(1 for _ in container.decode(video=0)) >= 20, "about pre-roll + post-roll at 5 fps"
    from monitor.cli import main

    assert main(["violations", "verify", "--cameras", str(demo_site)]) == 0
    # nothing for waving on line-2: that rule applies to cleanroom zones only
    assert not [r for r in stored if r["rule"] == "waving-in-cleanroom" and r["camera"] == "line-2"]
    waves = [r for r in stored if r["rule"] == "waving-in-cleanroom"]
    assert waves and all(r["action"] == "wave" and r["confidence"] >= 0.6 for r in waves)


def test_motion_gating_still_finds_a_fall_between_still_stretches(demo_site, tmp_path):
    """Gating is on by default. Line-2's camera sees nothing move for 4 s before the person falls and 4 s
    after the scene: those frames reuse embeddings, and the fall is still found."""
    import numpy as np

    from monitor.demo import demo, synthetic
    from monitor.evidence.media import write_video

    _, segments, seed = demo.SCENES["line-2"]
    frames = synthetic.render_scene(segments, demo.CLIP_FPS, demo.CLIP_SIZE, seed)
    fall = round(sum(s for a, s in segments[:segments.index(("fall", 2.5))]) * demo.CLIP_FPS)
    still = lambda frame: np.repeat(frame[None], round(4 * demo.CLIP_FPS), 0)
    clip = tmp_path / "line-2-still.mp4"
    write_video(clip, np.concatenate([frames[:fall], still(frames[fall]), frames[fall:], still(frames[-1])]),
                demo.CLIP_FPS, keyframe_interval=round(demo.CLIP_FPS))
    data = yaml.safe_load(demo_site.read_text())
    assert "motion" not in data, "the demo runs with the defaults"
    data["cameras"] = [dict(c, url=str(clip)) for c in data["cameras"] if c["id"] == "line-2"]
    data["storage"]["url"] = f"sqlite:///{tmp_path / 'v.db'}"
    data["evidence"] = {"enabled": False}
    site = demo_site.parent / "site-still.yaml"
    site.write_text(yaml.safe_dump(data, sort_keys=False))
    with RunningDaemon(site) as d:
        d.wait_for(lambda: d.value("har_monitor_violations_total", camera="line-2", rule="person-fell",
                                   severity="critical") >= 1, 90, "the fall on gated line-2")
        reused = d.value("har_monitor_frames_reused_total", camera="line-2")
        embedded = d.value("har_monitor_embeddings_total", camera="line-2")
    assert reused >= 8, "the still stretches reused embeddings"
    assert embedded > 0


def test_sigterm_drains_and_exits_0_and_no_secret_leaks(demo_site, tmp_path):
    data = yaml.safe_load(demo_site.read_text())
    data["cameras"].append({"id": "dock-door", "url": "rtsp://admin:${DOOR_PASS}@127.0.0.1:1/stream1",
                            "open_timeout_seconds": 1})
    data["storage"]["url"] = f"sqlite:///{tmp_path / 'v.db'}"
    site = demo_site.parent / "site-sigterm.yaml"
    site.write_text(yaml.safe_dump(data, sort_keys=False))
    from monitor.record.db import upgrade

    upgrade(data["storage"]["url"])
    env = dict(os.environ, DOOR_PASS="hunter2-secret")
    stderr, stdout = tmp_path / "stderr.log", tmp_path / "stdout.log"
    with stderr.open("w") as err, stdout.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--cameras", str(site)],
                                stderr=err, stdout=out, text=True, env=env)
    try:
        # Both before SIGTERM: a violation, and the unreachable camera's first failure (on a loaded machine
        # the violation can come first).
        wait_until(lambda: all(e in stderr.read_text() for e in ("event=violation_opened", "event=camera_down camera=dock-door")),
                   120, "a violation and the unreachable camera's camera_down", interval=0.2,
                   describe=lambda: stderr.read_text()[-3000:])
        proc.send_signal(signal.SIGTERM)
        # The drain's speed is bench/'s business (and the deploy files' stop timeouts): here, a generous ceiling.
        assert proc.wait(timeout=60) == 0, stderr.read_text()[-3000:]
    finally:
        proc.kill()
    log, printed = stderr.read_text(), stdout.read_text()
    assert "hunter2-secret" not in log + printed
    assert "rtsp://admin:***@127.0.0.1:1/stream1" in log, "the unreachable camera is logged, redacted"
    assert "event=camera_down camera=dock-door" in log and "event=daemon_stopped" in log
    stored = rows(tmp_path / "v.db")
    assert stored and all(r["status"] == "closed" for r in stored), "the store was flushed on SIGTERM"


def test_a_short_chaos_run_loses_no_episode_and_leaves_a_verified_record(demo_site, tmp_path):
    """bench/chaos.py's short run: every fault once; every logged episode stored once, closed, with its evidence.

    Shorter gaps than the bench's (1-2 s, not 2-6 s) and holds from 3.5 s (over the RTSP camera's 3 s stall
    limit, so a stall is noticed as one): each fault still hits a running daemon with live episodes."""
    faults = "db_hung,camera_stall,sigkill,rules_broken,db_refused,camera_kill,sigterm"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "chaos.py"), "--site", str(demo_site),
                             "--dir", str(tmp_path), "--faults", faults, "--gap", "1-2", "--hold", "3.5-4.5"],
                            capture_output=True, text=True, timeout=900)
    assert result.stdout.splitlines()[-1] == "chaos: ok", result.stdout[-3000:] + result.stderr[-3000:]
    assert "sigkill 1" in result.stdout and "db_hung 1" in result.stdout
    counts = json.loads(result.stdout.splitlines()[-2])
    assert counts["runs"] == 3 and counts["episodes logged"] >= 3, "the faults hit a daemon with episodes to keep"
