"""Zones on real clips with real models: each zone's prediction follows its half of the frame; person gating
with MoveNet opens a zone while someone is in it and sends nobody's windows otherwise."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from monitor.messages import NOBODY, Embedding, SampledFrame
from monitor.model.frames import read_frames
from monitor.model.persons import PersonDetector
from monitor.model.zones import Zone
from monitor.pipeline.sources import CameraSource, SourceHooks, SourceSettings
from monitor.pipeline.windows import WindowBuffers
from monitor.pipeline.zones import PersonGate, ZoneSplitter
from support.assets import asset
from support.clips import decode, segments, side_by_side

FPS, FRAMES, STRIDE = 10.0, 4, 2
HALVES = [Zone.from_rect("left", (0.0, 0.0, 0.5, 1.0)), Zone.from_rect("right", (0.5, 0.0, 1.0, 1.0))]
WAVE, JUGGLE = "wave", "juggle"
LEFT_CLIP, RIGHT_CLIP = "hmdb51_SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi", "ucf101_v_SoccerJuggling_g23_c01.avi"


@pytest.fixture(scope="module")
def embedder():
    """The real ImageNet-pretrained MobileNetV1 embedder (TFLite, 1024-d)."""
    from monitor.model.backbones import build_backbone

    return build_backbone("tflite", str(asset("weights", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")))


@pytest.fixture(scope="module")
def head(embedder, tmp_path_factory) -> Path:
    """A small GRU head trained here to tell waving (HMDB51) from soccer juggling (UCF101) on the clips' whole
    frames (through FFmpeg's resize, as training does); the test then sees them as zone crops of a composite.
    (With one or two clips per class it does not generalise to unseen clips: features mean something, but
    the data is tiny.)"""
    from monitor.model.windowing import clip_windows
    from monitor.training.fit import fit_head

    clips = {WAVE: ["hmdb51_RATRACE_wave_f_nm_np1_fr_goo_37.avi", "hmdb51_TrumanShow_wave_f_nm_np1_fr_med_26.avi",
                    LEFT_CLIP],
             JUGGLE: ["ucf101_v_SoccerJuggling_g24_c01.avi", RIGHT_CLIP]}
    xs, ys = [], []
    for label, names in clips.items():
        for name in names:
            frames = read_frames(str(asset("videos", name)), embedder.input_size, FPS)[:40]  # 4 s are plenty
            windows = clip_windows(embedder.embed(frames), FRAMES, STRIDE)
            xs.append(windows)
            ys += [[WAVE, JUGGLE].index(label)] * len(windows)
    model, _ = fit_head(np.concatenate(xs), np.array(ys), 2, units=16, epochs=15)
    path = tmp_path_factory.mktemp("head") / "head.keras"
    model.save(path)
    return path


def play(path: Path, size: tuple[int, int], split=None) -> tuple[list[SampledFrame], int]:
    """A file camera read as fast as possible: the frames sampled for inference, and the frames decoded."""
    sampled: list[SampledFrame] = []
    decoded = []
    hooks = SourceHooks(frame=sampled.append, decoded=lambda cam, ts: decoded.append(ts))
    source = CameraSource(SourceSettings("cam", str(path), False, size, FPS, realtime=False), hooks, split)
    source.start()
    source.join(60)
    return sampled, len(decoded)


@pytest.mark.tf  # trains a Keras head
def test_each_zone_follows_its_half_of_the_frame(embedder, head, tmp_path):
    from monitor.pipeline.classifier import Classifier

    clip = side_by_side(asset("videos", LEFT_CLIP), asset("videos", RIGHT_CLIP), tmp_path / "two-halves.mp4", 30)
    size = embedder.input_size
    sampled, decoded = play(clip, size, ZoneSplitter("cam", HALVES, size, {}))
    whole, decoded_whole = play(clip, size)
    assert decoded == decoded_whole == len(decode(clip)), "zones share the camera's one decode"
    assert len(sampled) == 2 * len(whole) and {f.zone for f in sampled} == {"left", "right"}

    classifier = Classifier(head, [WAVE, JUGGLE], FRAMES, embedder.dim)
    buffers = WindowBuffers(FRAMES, STRIDE)
    vectors = embedder.embed(np.stack([f.rgb for f in sampled]))
    windows = [w for f, v in zip(sampled, vectors, strict=True)
               if (w := buffers.push(Embedding(f.camera, f.ts, f.mono, v, f.zone))) is not None]
    votes = {zone: Counter(p.top[0] for p in classifier.predict(windows) if p.zone == zone) for zone in ("left", "right")}
    assert votes["left"].most_common(1)[0][0] == WAVE, votes
    assert votes["right"].most_common(1)[0][0] == JUGGLE, votes
    assert sum(votes["left"].values()) == sum(votes["right"].values()) >= 5, "each zone is a stream of its own"


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    """Intel's room camera (real, 768x432, 10 fps): 5 s empty, 8 s with a woman standing at the table in the
    right half, 5 s empty again. The left half (a window) never has anyone in it."""
    source = asset("videos", "intel_one-by-one-person-detection.mp4")
    return segments(source, [(0.0, 5.0), (95.0, 103.0), (0.0, 5.0)], tmp_path_factory.mktemp("room") / "room.mp4", 10)


@pytest.mark.slow  # a person detector over real clips: seconds of CPU
def test_person_gating_opens_a_zone_only_while_someone_is_in_it(room):
    detector = PersonDetector(asset("weights", "movenet_single_pose_lightning_ptq.tflite"))
    checks = []
    gates = {z.name: PersonGate(detector, check_hz=2.0, hold=1.0, observe=checks.append) for z in HALVES}
    gated = [Zone(z.name, z.points, gated=True) for z in HALVES]
    splitter = ZoneSplitter("room", gated, (96, 96), gates)
    opened: dict[str, list[tuple[float, bool]]] = {"left": [], "right": []}
    for i, rgb in enumerate(decode(room)):
        if i % 2:
            continue  # sampled at 5 fps; the clip's own time is the clock
        t = i / 10
        for f in splitter.split(rgb, t, t):
            opened[f.zone].append((t, not f.gated))
            assert f.rgb.shape == ((96, 96, 3) if not f.gated else (0, 0, 3)), "a gated frame carries no pixels"
    person = lambda t: 5.0 <= t < 13.0
    right = opened["right"]
    assert not any(o for t, o in right if not person(t) and not 13.0 <= t < 13.0 + 1.5), "empty room: gated"
    assert all(o for t, o in right if 5.6 <= t < 13.0), "open from the first check that saw her, until she leaves"
    assert not any(o for _, o in opened["left"]), "nobody ever stands by the window"
    assert 2 * 18 * 0.8 <= len(checks) <= 2 * 18 * 2 + 2, "about check_hz checks per zone, not one per frame"


def test_gated_frames_become_nobodys_windows_on_the_streams_cadence():
    buffers = WindowBuffers(frames=4, stride=2)
    emb = lambda t, gated: Embedding("cam", t, t, np.zeros(0 if gated else 3, np.float32) + 1, "right", gated)
    out = [buffers.push(emb(t, gated=t < 6 or t >= 14)) for t in range(20)]
    windows = [(w.t1, w.gated) for w in out if w is not None]
    assert windows[:3] == [(1, True), (3, True), (5, True)], "every S gated frames: a window of nobody"
    assert (9, False) in windows and not any(t1 in (6, 7, 8) for t1, _ in windows), \
        "a person arrives: windows again after T real frames (as at a stream's start)"
    assert windows[-3:] == [(15, True), (17, True), (19, True)]


def test_a_gated_window_is_nobody_for_the_rules(tmp_path):
    """`duration` with max and `absence` still see time pass while nobody is there."""
    from monitor.messages import Prediction
    from monitor.rules import RuleEngine, RuleSet, parse_rule

    unattended = parse_rule({"id": "station-unattended", "kind": "duration", "action": NOBODY, "max": "10s",
                             "applies_to": {"zones": ["right"]}})
    clearance = parse_rule({"id": "clearance", "kind": "absence", "action": "wipe", "every": "20s"})
    engine = RuleEngine(RuleSet((unattended, clearance), {"wipe": ("wipe",), NOBODY: (NOBODY,)}, "h"), {})
    nobody = {"wipe": 0.0, "idle": 0.0, NOBODY: 1.0}
    someone = {"wipe": 0.0, "idle": 1.0}
    events = []
    for t in range(0, 60, 2):
        probs = nobody if t < 30 else someone
        events += [(e.rule, e.kind, e.zone) for e in engine.observe(Prediction("cam", t - 1, t, t, probs, "right"))]
    assert events == [("station-unattended", "opened", "right"), ("clearance", "opened", "right"),
                      ("station-unattended", "closed", "right")]
