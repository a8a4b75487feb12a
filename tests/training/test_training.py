"""Train, evaluate, predict: real clips through the real backbones, bundles the daemon loads."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
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
    """One InceptionV3 + linear head (the default) training (75x75, random weights) that several tests read: its options (the
    bundle and the feature cache it filled from empty) and its result."""
    root = tmp_path_factory.mktemp("inception")
    opts = TrainOptions(data=small_data, out=root / "bundle", backbone="inception_v3", weights="none", input_size=(75, 75),
                        frames=4, epochs=2, folds=1, members=1, units=8, augment=False,
                        cache_dir=root / "cache")
    return opts, train(opts)


@pytest.fixture(scope="module")
def small_model(inception) -> Path:
    """The shared InceptionV3 + linear head bundle (its feature cache beside it), for the evaluate tests."""
    return inception[0].out


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
                        input_size=(96, 96), frames=8, sample_fps=6.0, stride=1, epochs=30, folds=1, members=1, units=64,
                        cache_dir=tmp_path / "cache", head="gru")
    result = train(opts)
    assert result.report["accuracy"] >= 0.9, result.report
    # the default linear head sees order through each feature's trend (the same features: from the cache)
    linear = train(dataclasses.replace(opts, out=tmp_path / "linear", head="linear")).report
    assert linear["per_class"]["fall"]["recall"] >= 0.75 and linear["per_class"]["get_up"]["recall"] >= 0.75, linear
    assert result.report["n_clips"] >= 12

    # The baseline: mean frame features per window, a linear classifier, on fall vs get_up. The same features the
    # heads learned from (every clip's, test clips' included, are in the cache: the backbone is not run again).
    from monitor.model.backbones import Backbone
    from monitor.training.features import FeatureCache, Sampling, backbone_key, extract

    def not_cached(frames: np.ndarray) -> np.ndarray:
        raise AssertionError("a clip's features are not in the training's cache")

    pair = sorted((data / "fall").glob("*.mp4")) + sorted((data / "get_up").glob("*.mp4"))
    cache = FeatureCache(tmp_path / "cache", backbone_key("mobilenet_v2", str(weights), (96, 96), 0))
    feats = extract(Backbone("mobilenet_v2", (96, 96), 1280, not_cached), pair, Sampling(8, 6.0), cache)
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
    ("tflite", "linear", {}),
])
def test_each_backbone_and_head_gives_a_bundle_run_and_predict_load(small_data, tmp_path, backbone, head, extra, capsys):
    if backbone == "tflite":
        backbone = "tflite:" + str(asset("weights", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"))
    out = tmp_path / "bundle"
    opts = TrainOptions(data=small_data, out=out, backbone=backbone, weights="none", head=head, frames=4, epochs=1,
                        folds=1, members=1, units=8, augment=False, cache_dir=tmp_path / "cache", **extra)
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
                 "--weights", "none", "--input-size", "32", "--epochs", "3", "--folds", "1", "--members", "1", "--cache-dir", str(tmp_path / "c")])
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


def test_second_training_reuses_the_feature_cache(inception, small_data, tmp_path, caplog):
    opts, first = inception
    caplog.set_level(logging.INFO, "monitor.model.backbones")
    second = train(dataclasses.replace(opts, out=tmp_path / "b", head="lstm", epochs=1))
    assert first.stats.backbone_frames > 0 and first.stats.cache_hits == 0
    assert second.stats.backbone_frames == 0, "the backbone is not run again"
    assert "event=backbone_built" not in caplog.text, "nor built"
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


def test_cross_validation_reports_the_folds_and_every_epoch(small_data, tmp_path, capsys):
    """Each fold and each member reports every epoch; the folds' spread and the weights kept are named."""
    out = tmp_path / "m"
    assert main(["--log-level", "debug", "train", str(small_data), "--out", str(out), "--head", "gru", "--backbone", "inception_v3",
                 "--weights", "none", "--input-size", "75", "--frames", "4", "--epochs", "3", "--folds", "2",
                 "--members", "2", "--units", "8", "--no-augment", "--cache-dir", str(tmp_path / "cache")]) == 0
    captured = capsys.readouterr()
    epochs = [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in captured.err.splitlines() if "event=epoch " in line]
    assert [(e["fit"], e["epoch"]) for e in epochs] == [(f"{fit}/2", f"{n}/3") for fit in ("fold1", "fold2", "member1", "member2")
                                                        for n in (1, 2, 3)]
    assert all("val_accuracy" in e for e in epochs if e["fit"].startswith("fold"))
    assert not any("val_accuracy" in e for e in epochs if e["fit"].startswith("member"))
    training = yaml.safe_load((out / "model.yaml").read_text())["training"]
    assert training["epochs"] == training["kept_epoch"] == 3 and training["members"] == 2
    cv = training["cross_validation"]
    assert cv["folds"] == 2 and len(cv["per_fold"]) == 2 and cv["accuracy_min"] <= cv["accuracy_mean"] <= cv["accuracy_max"]
    # 12 training clips (3 classes x 2 sessions of 2 clips): each fold validates one session per class
    assert cv["validation_clips"] == [6, 6]
    assert (f"cross-validation over 2 folds (each validated on sources its model never saw): accuracy "
            f"{cv['accuracy_mean']:.2f} ± {cv['accuracy_std']:.2f}") in captured.out
    assert "head: 2 model(s) trained on all training clips for 3 epochs (the last epoch's weights kept), averaged" in captured.out

    # the model summary: parameters in the log and in model.yaml
    import keras

    head = keras.models.load_model(out / "head.keras", compile=False)
    manifest = yaml.safe_load((out / "model.yaml").read_text())
    assert manifest["head"]["parameters"] == head.count_params() > 0
    # each member: GRU(8) over 2048 standardized features, 3 * (8 * (2048 + 8) + 2 * 8) weights, Dense(3)
    assert ":GRU=49392" in training["member_layers"] and "action:Dense=27" in training["member_layers"]
    assert head.count_params() == 2 * (49392 + 27)
    assert f"event=head_trained kind=gru members=2 epochs=3 kept_epoch=3 parameters={head.count_params()}" in captured.err
    assert f'event=head_summary member_layers="{training["member_layers"]}"' in captured.err

    # the averaged members are one head file: the daemon's classifier loads it as it is
    from monitor.pipeline.classifier import Classifier

    classifier = Classifier(out / "head.keras", manifest["labels"], 4, 2048)
    probs = classifier.probabilities(np.zeros((3, 4, 2048), np.float32))
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert manifest["head"]["members"] == 2


def test_the_default_head_is_one_convex_fit(inception, capsys):
    """`train` without --head fits the linear head once, to convergence: no epochs, one member."""
    opts, result = inception
    manifest = yaml.safe_load((opts.out / "model.yaml").read_text())
    assert manifest["head"]["kind"] == "linear" and manifest["head"]["members"] == 1
    assert manifest["training"]["epochs"] is None and result.epochs is None
    assert "standardize_moments:Normalization" in manifest["training"]["member_layers"]


def test_the_linear_head_is_the_same_whatever_the_seed_and_tells_a_motion_from_its_reverse(tmp_path):
    """The same frames in opposite order (a fall, getting up) differ in their trend, which a mean cannot see;
    the fit is convex, so the seed changes nothing; the head file loads with stock Keras layers."""
    import keras

    from monitor.training.fit import fit_head

    rng = np.random.default_rng(0)
    motion = rng.normal(size=16)  # a pose that changes the same way in every clip: the reverse undoes it
    frames = (rng.normal(size=(40, 8, 16)) + rng.normal(size=(40, 1, 16)) + np.linspace(0, 2, 8)[None, :, None] * motion).astype(np.float32)
    x, y = np.concatenate([frames, frames[:, ::-1]]), np.array([0] * 40 + [1] * 40)
    fits = [fit_head(x[::2], y[::2], 2, kind="linear", seed=seed, x_val=x[1::2], y_val=y[1::2]) for seed in (0, 7)]
    assert fits[0][1]["val_accuracy"][0] >= 0.9, fits[0][1]
    for a, b in zip(*(m.get_weights() for m, _ in fits), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    model = fits[0][0]
    model.save(tmp_path / "head.keras")
    loaded = keras.models.load_model(tmp_path / "head.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(x[:4], verbose=0), model.predict(x[:4], verbose=0), atol=1e-6)


def test_evaluate_without_out_keeps_the_training_report(small_data, small_model, tmp_path, capsys):
    trained = (small_model / "evaluation" / "metrics.json").read_text()
    other = tmp_path / "other"
    for action in ("fall", "walk"):
        shutil.copytree(small_data / action, other / action)
    assert main(["evaluate", str(small_model), str(other), "--cache-dir", str(small_model.parent / "cache")]) == 0
    assert (small_model / "evaluation" / "metrics.json").read_text() == trained, "train's test report is left alone"
    report = small_model / "evaluations" / "other"
    assert json.loads((report / "metrics.json").read_text())["n_clips"] == 12
    assert f"report: {report}" in capsys.readouterr().out


def test_evaluate_reports_confidence_intervals(small_data, small_model, tmp_path, capsys):
    assert main(["evaluate", str(small_model), str(small_data), "--out", str(tmp_path / "e"),
                 "--cache-dir", str(small_model.parent / "cache")]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    ci = metrics["ci95"]
    assert ci["unit"] == "group" and ci["units"] == 9  # 18 clips, two per session: sessions are resampled
    assert ci["accuracy"][0] <= metrics["accuracy"] <= ci["accuracy"][1]
    assert f"95% CI {ci['accuracy'][0]:.2f}-{ci['accuracy'][1]:.2f}" in capsys.readouterr().out
    assert "ci95" in yaml.safe_load((small_model / "model.yaml").read_text())["evaluation"]["test"]


@pytest.mark.parametrize("head, recurrent", [("conv3d", "GRU"), ("conv3d_lstm", "LSTM")])
def test_conv3d_heads_have_batch_norm_dropout_and_a_recurrent_layer(head, recurrent):
    """The seeds' 3D CNN + LSTM/GRU: 3D convolutions (batch-normalised, dropout), then a recurrent layer over time.

    (Trained end to end on raw frames in test_each_backbone_and_head_gives_a_bundle_run_and_predict_load.)
    """
    from monitor.model.heads import build_head

    model = build_head(head, 8, 16 * 16 * 3, 3, units=8, frame_size=(16, 16))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv3D") == 3 and kinds.count("BatchNormalization") == 3 and kinds.count("Dropout") >= 3
    assert kinds.index(recurrent) > max(i for i, k in enumerate(kinds) if k == "Conv3D"), "recurrent after the convolutions"
    recurrent_layer = next(layer for layer in model.layers if type(layer).__name__ == recurrent)
    assert recurrent_layer.input.shape[1] == 4, "8 frames, pooled once in time: 4 steps for the recurrent layer"
