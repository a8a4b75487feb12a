"""Overload: cameras share the embedder fairly, drops are counted per camera, and the box says it is over capacity."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter

import numpy as np
import pytest

from monitor.messages import SampledFrame
from monitor.pipeline.framequeue import FrameQueues
from support.clips import write_clip
from support.daemon import RunningDaemon
from support.sites import write_site


def sampled(camera: str, i: int) -> SampledFrame:
    return SampledFrame(camera, float(i), float(i), np.zeros((2, 2, 3), np.uint8))


def test_under_overload_every_camera_gets_its_share_and_drops_only_its_own_frames():
    """Four cameras, an embedder that takes 4 frames a round: one camera floods (10 frames a round), one asks
    for 2, two for 1. Max-min fair: the quiet ones, asking less than a quarter, lose nothing; the busy one and
    the flood share the other half equally, however much the flood sends."""
    asks = {"flood": 10, "busy": 2, "quiet-1": 1, "quiet-2": 1}
    dropped: Counter[str] = Counter()
    q = FrameQueues(list(asks), 4, on_drop=lambda cam: dropped.update([cam]))
    got: Counter[str] = Counter()
    put: Counter[str] = Counter()
    for round_ in range(200):
        for cam, n in asks.items():
            for k in range(n):
                q.put(sampled(cam, round_ * 100 + k))
                put[cam] += 1
        got.update(f.camera for f in q.get_batch(4, 0.0))
    assert dropped["quiet-1"] == dropped["quiet-2"] == 0 and got["quiet-1"] == got["quiet-2"] == 200
    assert got["busy"] == got["flood"] == 200, "the flood does not starve the busy camera, nor the reverse"
    assert dropped["flood"] > 0.5 * put["flood"]
    assert q.dropped_within(60.0)
    queued = Counter(f.camera for f in q.get_batch(100, 0.0, 0.0))
    for cam in asks:  # every frame is either embedded, dropped (and counted against its camera) or still queued
        assert got[cam] + dropped[cam] + queued[cam] == put[cam], cam


def test_no_drop_no_over_capacity():
    q = FrameQueues(["a"], 2)
    q.put(sampled("a", 0))
    assert not q.dropped_within(3600.0)


def health(d: RunningDaemon) -> tuple[int, dict]:
    url = d.daemon.summary.metrics_url.removesuffix("/metrics") + "/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.slow
def test_an_overloaded_box_is_not_ready_with_over_capacity_until_the_drops_stop(tmp_path, tiny_bundle, clip):
    """Three files read as fast as they decode (far more frames than inference takes) and one paced camera.
    The floods drop frames (counted per camera), /readyz says over_capacity; the paced camera loses nothing;
    once the floods have ended the box is ready again."""
    long_clip = write_clip(tmp_path / "long.mp4", n_frames=360)  # 30 s: 150 sampled frames, read in a second
    floods = [{"id": f"flood-{i}", "url": str(long_clip), "realtime": False, "queue_size": 2, "motion": {"enabled": False}}
              for i in range(3)]
    paced = {"id": "paced", "url": str(clip), "loop": True, "queue_size": 64}
    site = write_site(tmp_path, tiny_bundle, [*floods, paced], inference={"max_batch": 8, "max_wait_ms": 20,
                                                                         "over_capacity_seconds": 3})
    with RunningDaemon(site) as d:
        def over_capacity() -> bool:  # both at once: the state lasts only `over_capacity_seconds` after a drop
            status, state = health(d)
            return (status == 503 and "over_capacity" in state["not_ready"] and state["over_capacity"] is True
                    and d.value("har_monitor_over_capacity") == 1)

        d.wait_for(over_capacity, 60, "/readyz 503 over_capacity and har_monitor_over_capacity 1")
        d.wait_for(lambda: all(d.value("har_monitor_frames_dropped_total", camera=f["id"]) > 0 for f in floods), 60,
                   "every flood dropping its own frames")
        d.wait_for(lambda: not any(s.running for s in d.daemon.sources if s.camera.startswith("flood")), 120,
                   "the floods' files read to the end")
        d.wait_for(lambda: health(d)[0] == 200, 60, "ready again once nothing drops")
        state = health(d)[1]
        assert state["not_ready"] == [] and state["over_capacity"] is False
        assert d.value("har_monitor_over_capacity") == 0
        assert d.value("har_monitor_frames_dropped_total", camera="paced") == 0, "the paced camera lost nothing"
        assert d.value("har_monitor_embeddings_total", camera="paced") > 0
        assert all(d.value("har_monitor_embeddings_total", camera=f["id"]) > 0 for f in floods), "no flood starves"
