"""Train, evaluate, predict: real clips through the real backbones, bundles the daemon loads."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from monitor.cli import main
from monitor.demo import synthetic
from monitor.training.dataset import Sample, group_of, grouped_split
from monitor.training.train import TrainOptions, TrainResult, train
from support.assets import asset
from support.clips import write_clip
from support.sites import write_site

pytestmark = [pytest.mark.tf, pytest.mark.slow]

ORDER_CLASSES = ("idle", "walk", "fall", "get_up")  # fall and get_up: the same frames in opposite order


def make_clips(root: Path, actions=ORDER_CLASSES, per_class: int = 6, looks: int = 3, frames: int = 25,
               size=(120, 160)) -> Path:
    """Clips of a few recurring 'cameras' (looks); clip pairs share a group (session); get_up reverses fall.

    An odd frame count keeps fall and get_up the same frame set when every other frame is sampled.
    """
    for action in actions:
        for k in range(per_class):
            motion = 10 * k + synthetic.ACTIONS.index("fall" if action == "get_up" else action) * 100_000
            write_clip(root / action / f"{action}_g{k // 2:02d}_c{k % 2:02d}.mp4", action, frames, size, motion,
                       look_seed=1000 + k % looks)
    return root


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    return make_clips(tmp_path_factory.mktemp("data"), ("idle", "walk", "fall"), per_class=6, frames=16, size=(64, 80))


@pytest.fixture(scope="module")
def inception(small_data, tmp_path_factory) -> tuple[TrainOptions, TrainResult]:
    """One InceptionV3 + GRU training (75x75, random weights) that several tests read: its options (the
    bundle and the feature cache it filled from empty) and its result."""
    root = tmp_path_factory.mktemp("inception")
    opts = TrainOptions(data=small_data, out=root / "bundle", backbone="inception_v3", weights="none", input_size=(75, 75),
                        frames=4, epochs=2, units=8, augment=False, cache_dir=root / "cache")
    return opts, train(opts)


@pytest.fixture(scope="module")
def image_csv_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rows = []
    for action, action_class in (("idle", "upright"), ("wave", "upright"), ("fall", "down")):
        for k in range(8):
            frame = synthetic.render_clip(action, 12, (64, 80), k, fps=12.0)[-1]
            cv2.imwrite(str(root / f"{action}_{k}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            rows.append({"path": f"{action}_{k}.png", "action": action, "action_class": action_class})
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "action", "action_class"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "labels.csv"


def test_gru_learns_order_that_frame_averaging_cannot(tmp_path):
    """>= 90% on held-out clips with a real pretrained backbone; the order-only pair defeats a frame average."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    weights = asset("weights", "mobilenet_v2_1.0_224_imagenet_notop.weights.h5")
    data = make_clips(tmp_path / "data", per_class=24)
    opts = TrainOptions(data=data, out=tmp_path / "model", backbone="mobilenet_v2", weights=str(weights),
                        input_size=(96, 96), frames=8, sample_fps=6.0, stride=1, epochs=60, units=64,
                        cache_dir=tmp_path / "cache")
    result = train(opts)
    assert result.report["accuracy"] >= 0.9, result.report
    assert result.report["n_clips"] >= 12

    # The baseline: mean frame features per window, a linear classifier, on fall vs get_up.
    from monitor.model.backbones import build_backbone
    from monitor.training.features import FeatureCache, Sampling, backbone_key, extract

    backbone = build_backbone("mobilenet_v2", str(weights), (96, 96))
    pair = sorted((data / "fall").glob("*.mp4")) + sorted((data / "get_up").glob("*.mp4"))
    cache = FeatureCache(tmp_path / "cache", backbone_key("mobilenet_v2", str(weights), (96, 96), 0))
    feats = extract(backbone, pair, Sampling(8, 6.0), cache)
    x = np.stack([f.mean(0) for f in feats])
    y = np.array([p.parent.name == "fall" for p in pair])
    chance = cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=StratifiedKFold(4, shuffle=True, random_state=0))
    assert chance.mean() <= 0.65, f"frame averaging cannot tell a fall from getting up: {chance}"
    per_class = result.report["per_class"]
    assert per_class["fall"]["recall"] >= 0.75 and per_class["get_up"]["recall"] >= 0.75, "the GRU can"


@pytest.mark.parametrize("backbone, head, extra", [  # inception_v3 + gru: test_inception_bundle_runs_and_predicts
    ("mobilenet_v2", "lstm", {"input_size": (32, 32)}),
    ("resnet50", "bilstm", {"input_size": (32, 32)}),
    ("vgg16", "gru", {"input_size": (32, 32), "sample_fps": 4.0}),
    ("raw", "conv3d", {"input_size": (32, 32)}),
    ("tflite", "gru", {}),
])
def test_each_backbone_and_head_gives_a_bundle_run_and_predict_load(small_data, tmp_path, backbone, head, extra, capsys):
    if backbone == "tflite":
        backbone = "tflite:" + str(asset("weights", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"))
    out = tmp_path / "bundle"
    opts = TrainOptions(data=small_data, out=out, backbone=backbone, weights="none", head=head, frames=4, epochs=1,
                        units=8, augment=False, cache_dir=tmp_path / "cache", **extra)
    assert_bundle_runs_and_predicts(out, train(opts), small_data, tmp_path, capsys)


def test_inception_bundle_runs_and_predicts(inception, small_data, tmp_path, capsys):
    opts, result = inception
    assert_bundle_runs_and_predicts(opts.out, result, small_data, tmp_path, capsys)


def assert_bundle_runs_and_predicts(out: Path, result: TrainResult, small_data: Path, tmp_path: Path, capsys) -> None:
    assert (out / "model.yaml").is_file() and (out / "head.keras").is_file()
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert {"accuracy", "f1_macro", "per_class", "confusion_matrix", "labels", "n_clips"} <= set(metrics)
    assert (out / "evaluation" / "confusion_matrix.png").is_file() and (out / "evaluation" / "training_curves.png").is_file()
    assert result.report["n_clips"] == metrics["n_clips"] > 0

    # run loads it: the daemon is built exactly as `har-monitor run` builds it
    from support.daemon import RunningDaemon

    clip = next((small_data / "fall").glob("*.mp4"))
    site = write_site(tmp_path / "site", out, [{"id": "cam", "url": str(clip)}], rules={"rules": []})
    daemon = RunningDaemon(site).daemon
    assert daemon.pipeline.analysis.classifier.labels == ["fall", "idle", "walk"]
    # predict loads it
    assert main(["predict", str(out), str(clip), "--top-k", "2"]) == 0
    assert str(clip) in capsys.readouterr().out


def test_image_mode_trains_two_outputs(image_csv_data, tmp_path, capsys):
    out = tmp_path / "img"
    code = main(["train", str(image_csv_data), "--out", str(out), "--head", "image", "--backbone", "mobilenet_v2",
                 "--weights", "none", "--input-size", "32", "--epochs", "3", "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test set" in printed and "action class" in printed
    manifest = yaml.safe_load((out / "model.yaml").read_text())
    assert manifest["groups"] == {"down": ["fall"], "upright": ["idle", "wave"]}
    assert "test_action_class" in manifest["evaluation"]
    assert json.loads((out / "evaluation" / "action_class" / "metrics.json").read_text())["labels"] == ["down", "upright"]
    image = image_csv_data.parent / "fall_0.png"
    assert main(["predict", str(out), str(image), "--csv", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv") as f:
        row = next(csv.DictReader(f))
    assert row["top1"] in ("idle", "wave", "fall") and row["class_top1"] in ("down", "upright")


def test_second_training_reuses_the_feature_cache(inception, small_data, tmp_path):
    opts, first = inception
    second = train(dataclasses.replace(opts, out=tmp_path / "b", head="lstm", epochs=1))
    assert first.stats.backbone_frames > 0 and first.stats.cache_hits == 0
    assert second.stats.backbone_frames == 0, "the backbone is not run again"
    clips = sum(1 for _ in small_data.glob("*/*.mp4"))
    assert second.stats.cache_hits >= clips, "every clip (and its augmented variants) came from the cache"


def test_grouped_split_never_puts_a_group_on_both_sides():
    rng = np.random.default_rng(0)
    samples = tuple(Sample(Path(f"c{label}/v_g{g:02d}_c{c}.avi"), label, f"{label}/g{g}")
                    for label in range(4) for g in range(int(rng.integers(4, 9))) for c in range(int(rng.integers(1, 6))))
    for seed in range(5):
        parts = grouped_split(samples, (0.7, 0.15, 0.15), seed)
        groups = [{s.group for s in p} for p in parts]
        assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
        assert sum(map(len, parts)) == len(samples)
        for part in parts:
            assert {s.label for s in part} == {0, 1, 2, 3}, "stratified: every class on every side"


def test_group_names_from_ucf101_hmdb51_and_a_regex():
    import re

    assert group_of(Path("Juggling/v_SoccerJuggling_g23_c01.avi")) == "Juggling/g23"
    assert group_of(Path("wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi")) == "wave/RATRACE_wave_f_nm_np1_fr_goo"
    assert group_of(Path("x/cam3_2024-01-02_clip7.mp4"), re.compile(r"^(cam\d+)")) == "cam3"


def test_bad_training_input(small_data, tmp_path, capsys):
    import shutil

    def run(*args: str) -> list[str]:
        assert main(["train", *args, "--out", str(tmp_path / "out"), "--epochs", "1", "--cache-dir", str(tmp_path / "c")]) == 2
        return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]

    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    (data / "empty").mkdir()
    assert run(str(data)) == [f"error: {data / 'empty'}: class 'empty' has no videos "
                              "(.avi, .m4v, .mkv, .mov, .mp4, .mpeg, .mpg, .webm)"]
    (data / "empty").rmdir()
    (data / "lonely").mkdir()
    shutil.copy(next((small_data / "fall").glob("*.mp4")), data / "lonely" / "x.mp4")
    assert "class 'lonely' has 1 clip(s)" in run(str(data))[0]
    shutil.rmtree(data / "lonely")
    assert "--backbone: unknown backbone 'alexnet'" in run(str(data), "--backbone", "alexnet")[0]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,label\na.png,idle\n")
    assert run(str(bad_csv), "--head", "image")[0] == (f"error: {bad_csv}: line 1: columns are ['file', 'label']; "
                                                       "expected path,action[,action_class]")


def test_unreadable_clip_is_skipped_and_counted(inception, small_data, tmp_path):
    opts, _ = inception
    data = tmp_path / "data"
    for clip in small_data.glob("*/*.mp4"):  # links: the features of the good clips come from the cache
        (data / clip.parent.name).mkdir(parents=True, exist_ok=True)
        (data / clip.parent.name / clip.name).symlink_to(clip)
    (data / "idle" / "idle_g09_c00.mp4").write_bytes(b"not a video at all")
    result = train(dataclasses.replace(opts, data=data, out=tmp_path / "m", epochs=1))
    assert result.stats.skipped == [str(data / "idle" / "idle_g09_c00.mp4")]
    manifest = yaml.safe_load((tmp_path / "m" / "model.yaml").read_text())
    assert manifest["evaluation"]["skipped_clips"] == 1


def test_evaluate_writes_metrics_and_prints_a_table(inception, small_data, tmp_path, capsys):
    opts, _ = inception
    assert main(["evaluate", str(opts.out), str(small_data), "--out", str(tmp_path / "eval"), "--cache-dir", str(opts.cache_dir)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n_clips"] == 18 and metrics["labels"] == ["fall", "idle", "walk"]
    assert np.array(metrics["confusion_matrix"]).sum() == 18
    assert "fall" in printed and "accuracy" in printed
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "training_curves.png").is_file()


def test_predict_names_each_unreadable_input_and_exits_2(tiny_bundle, tmp_path, capsys):
    """An audio-only file says "no video stream"; when nothing can be read the exit status says so too."""
    from support.videos import write_audio_only

    audio = write_audio_only(tmp_path / "meeting.mp4")
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"not a video at all" * 100)
    assert main(["predict", str(tiny_bundle), str(audio), str(garbage)]) == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors[0] == f"error: {audio}: no video stream"
    assert errors[1].startswith(f"error: {garbage}: ") and "Invalid data" in errors[1]
    assert len(errors) == 2 and "IndexError" not in err and out == ""

    clip = write_clip(tmp_path / "walk.mp4", "walk", 12, (64, 80))
    assert main(["predict", str(tiny_bundle), str(clip), str(audio), "--csv", str(tmp_path / "p.csv")]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(f"{clip}: ") and f"error: {audio}: no video stream" in err, "the readable one is predicted"
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert [r["error"] for r in rows] == ["", "no video stream"]
