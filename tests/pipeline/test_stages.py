"""Each stage alone, with plain inputs: sampling, queues, windows, rules."""

from __future__ import annotations

import numpy as np

from monitor.backoff import Backoff
from monitor.messages import Embedding, Prediction, SampledFrame
from monitor.model.frames import FrameSampler
from monitor.model.windowing import sliding_windows
from monitor.pipeline.framequeue import FrameQueues
from monitor.pipeline.windows import WindowBuffers
from monitor.rules import RuleConfig, RuleEngine, RuleSet, parse_rule


def test_sampler_follows_timestamps_not_frame_counts():
    sampler = FrameSampler(5.0)
    taken_25 = [t for t in np.arange(0, 10, 1 / 25) if sampler.take(float(t))]
    sampler = FrameSampler(5.0)
    taken_30 = [t for t in np.arange(0, 10, 1 / 30) if sampler.take(float(t))]
    assert len(taken_25) == 50 and len(taken_30) == 50
    assert np.allclose(np.diff(taken_25), 0.2)
    sampler = FrameSampler(5.0)
    assert sum(sampler.take(t) for t in np.arange(0, 2, 1 / 3)) == 6, "a 3 fps stream gives all its frames"


def test_sampler_restarts_after_timestamps_go_back():
    sampler = FrameSampler(2.0)
    assert [sampler.take(t) for t in (100.0, 100.5, 101.0)] == [True, True, True]
    assert sampler.take(0.0), "a restarted stream (timestamps from zero) is sampled again at once"
    assert not sampler.take(0.1) and sampler.take(0.5)


def test_backoff_doubles_to_the_cap_with_jitter():
    import random

    backoff = Backoff(1.0, 60.0, rng=random.Random(1))
    values = [backoff.next() for _ in range(10)]
    assert 0.75 <= values[0] <= 1.0 and 1.5 <= values[1] <= 2.0
    assert all(v <= 60.0 for v in values) and values[-1] >= 45
    assert len(set(values)) == len(values), "jittered"
    backoff.reset()
    assert backoff.next() <= 1.0, "a success starts again at the initial delay"


def frame(camera: str, i: int) -> SampledFrame:
    return SampledFrame(camera, float(i), float(i), np.full((2, 2, 3), i % 256, np.uint8))


def test_queues_drop_oldest_and_count_and_batch_fairly():
    dropped: list[str] = []
    q = FrameQueues(["a", "b"], 3, on_drop=dropped.append)
    for i in range(5):
        q.put(frame("a", i))
    q.put(frame("b", 100))
    assert dropped == ["a", "a"]
    batch = q.get_batch(max_batch=3, max_wait=0)
    assert [(f.camera, f.ts) for f in batch] == [("a", 2.0), ("b", 100.0), ("a", 3.0)], "oldest kept frames, round robin"
    assert len(q) == 1
    assert q.get_batch(8, 0.0)[0].ts == 4.0
    assert q.get_batch(8, 0.0, timeout=0.05) == []


def emb(camera: str, i: int, dim: int = 3, ts: float | None = None) -> Embedding:
    return Embedding(camera, float(i) if ts is None else ts, float(i), np.full(dim, i, np.float32))


def test_live_windows_equal_training_windows():
    features = np.stack([np.full(3, i, np.float32) for i in range(20)])
    offline = sliding_windows(features, frames=6, stride=4)
    buffers = WindowBuffers(frames=6, stride=4)
    live = [w for w in (buffers.push(emb("c", i)) for i in range(20)) if w is not None]
    assert len(live) == len(offline) == 4
    for w, o in zip(live, offline, strict=True):
        assert np.array_equal(w.features, o)
    assert (live[0].t0, live[0].t1) == (0.0, 5.0)


def test_windows_are_per_camera_and_restart_after_a_gap():
    buffers = WindowBuffers(frames=3, stride=1, max_gap=2.0)
    out = [buffers.push(emb(cam, i)) for i in range(3) for cam in ("a", "b")]
    assert [w.camera for w in out if w] == ["a", "b"]
    assert buffers.push(emb("a", 10)) is None, "after an outage the history starts again"
    assert buffers.push(emb("a", 11)) is None
    assert buffers.push(emb("a", 12)).t0 == 10.0


def rule(**overrides) -> RuleConfig:
    data = {"id": "no-falls", "severity": "critical", "action": "fall", "min_confidence": 0.8, "for_windows": 2,
            "cooldown": "10s"} | overrides
    return parse_rule(data)


def engine(*rules: RuleConfig, zones=None) -> RuleEngine:
    labels = ["idle", "fall", "slip"]
    groups = {label: (label,) for label in labels} | {"person_down": ("fall", "slip")}
    return RuleEngine(RuleSet(tuple(rules), groups, "h"), zones or {"cam": "gmp-1"})


def pred(t: float, fall: float, camera: str = "cam", slip: float = 0.0) -> Prediction:
    return Prediction(camera, t - 2, t, t, {"idle": 1 - fall - slip, "fall": fall, "slip": slip})


def run(e: RuleEngine, confidences: list[float], start: float = 0.0):
    return [ev for i, c in enumerate(confidences) for ev in e.observe(pred(start + i, c))]


def test_episode_opens_after_for_windows_updates_and_closes_once():
    events = run(engine(rule()), [0.9, 0.3, 0.9, 0.85, 0.95, 0.2, 0.1])
    assert [e.kind for e in events] == ["opened", "updated", "closed"]
    opened, updated, closed = events
    assert opened.started_at == 2.0 and opened.confidence == 0.9  # the streak's first window (its end), its peak
    assert updated.confidence == 0.95 and updated.episode_id == opened.episode_id
    assert closed.ended_at == 5.0 and closed.confidence == 0.95


def test_cooldown_keeps_a_new_episode_from_opening_too_soon():
    e = engine(rule())
    events = run(e, [0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.1])  # closes at t=2, returns at t=4..5
    assert [x.kind for x in events] == ["opened", "closed"]
    events = run(e, [0.9, 0.9], start=13)  # after the 10 s cooldown
    assert [x.kind for x in events] == ["opened"]


def test_groups_sum_their_members_and_scope_by_zone():
    e = engine(rule(action="person_down", min_confidence=0.8, for_windows=1, applies_to={"zones": ["gmp-*"]}),
               zones={"cam": "gmp-1", "office": "office"})
    assert [x.kind for x in e.observe(pred(1, 0.5, slip=0.4))] == ["opened"]
    assert e.observe(pred(1, 0.5, camera="office", slip=0.4)) == []
    closing = e.close_all(now=99.0, mono=99.0)
    assert [(x.kind, x.ended_at) for x in closing] == [("closed", 99.0)]
    assert e.open_count() == 0
