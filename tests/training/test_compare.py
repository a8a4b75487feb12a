"""`har-monitor models compare OLD NEW DATA` on bundles whose every decision is known in advance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monitor.cli import main
from monitor.demo import synthetic

pytestmark = pytest.mark.tf  # they train small Keras models

COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}
LABELS = sorted(COLOURS)  # blue, green, red


def colour_clips(root: Path, per_colour: dict[str, int]) -> Path:
    """Solid-colour clips, one folder per colour, each clip its own source."""
    for name, count in per_colour.items():
        for k in range(count):
            frames = np.tile(np.array(COLOURS[name], np.uint8), (8, 16, 16, 1))
            synthetic.write_video(root / name / f"{name}_s{k}_0.mp4", frames, 4.0)
    return root


def colour_bundle(out: Path, calls: dict[str, str], labels: list[str] = LABELS) -> Path:
    """A bundle over raw 8x8 pixels whose head calls a clip by its strongest channel: `calls` maps colour -> label."""
    import keras

    from monitor.model.bundle import BackboneSpec, ModelManifest, WindowSpec, write_manifest

    channel = {"red": 0, "green": 1, "blue": 2}
    weights = np.zeros((8 * 8 * 3, len(labels)), np.float32)
    for colour, label in calls.items():
        weights[channel[colour]::3, labels.index(label)] = 1.0  # every pixel's channel votes for its label
    inputs = keras.Input((4, 8 * 8 * 3))
    dense = keras.layers.Dense(len(labels), activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling1D()(inputs)))
    dense.set_weights([weights, np.zeros(len(labels), np.float32)])
    out.mkdir(parents=True)
    model.save(out / "head.keras")
    write_manifest(out, ModelManifest(name=out.name, backbone=BackboneSpec(name="raw", weights="none", input_size=(8, 8)),
                                      window=WindowSpec(frames=4, sample_fps=4.0, stride=4), labels=labels))
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    right = {c: c for c in COLOURS}
    return {"right": colour_bundle(root / "right", right),
            "blue_as_green": colour_bundle(root / "blue_as_green", {**right, "blue": "green"}),
            # a model that never had the class blue (as the model in service never had `other`)
            "without_blue": colour_bundle(root / "without_blue", {**right, "blue": "green"}, ["green", "red"])}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return colour_clips(tmp_path_factory.mktemp("clips"), {"red": 4, "green": 4, "blue": 6})


def test_a_worse_model_is_named_with_its_clips_and_a_significant_test(bundles, clips, tmp_path, capsys):
    assert main(["models", "compare", str(bundles["right"]), str(bundles["blue_as_green"]), str(clips),
                 "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["n_clips"] == 14
    assert result["per_class"]["blue"] == {"clips": 6, "old_recall": 1.0, "new_recall": 0.0, "delta": -1.0}
    assert result["per_class"]["red"]["delta"] == result["per_class"]["green"]["delta"] == 0.0
    assert sorted(Path(d["clip"]).name for d in result["disagreements"]) == [f"blue_s{k}_0.mp4" for k in range(6)]
    assert {(d["truth"], d["old"], d["new"]) for d in result["disagreements"]} == {("blue", "blue", "green")}
    # 6 clips right only with the old model, none only with the new: exact p = 2 / 2^6
    assert result["mcnemar"] == {"old_only": 6, "new_only": 0, "p_value": 0.03125, "test": "exact"}
    assert result["accuracy"]["old"]["value"] == 1.0 and result["accuracy"]["new"]["value"] == round(8 / 14, 4)
    assert result["verdict"].startswith("NEW is worse: keep OLD")
    assert f"verdict: {result['verdict']}" in printed
    assert f"{clips / 'blue' / 'blue_s0_0.mp4'}: truth blue, old blue 1.00, new green" in printed


def test_the_better_model_and_no_difference(bundles, clips, tmp_path, capsys):
    main(["models", "compare", str(bundles["blue_as_green"]), str(bundles["right"]), str(clips), "--cache-dir", str(tmp_path)])
    assert "verdict: NEW is better: accuracy 0.5714 -> 1.0000 (+0.4286)" in capsys.readouterr().out
    main(["models", "compare", str(bundles["right"]), str(bundles["right"]), str(clips), "--cache-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "clips where they disagree (0):" in printed and "verdict: no difference" in printed


def test_a_few_clips_are_not_enough_to_call_a_winner(bundles, tmp_path, capsys):
    few = colour_clips(tmp_path / "few", {"red": 3, "green": 3, "blue": 2})
    main(["models", "compare", str(bundles["right"]), str(bundles["blue_as_green"]), str(few), "--cache-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "p=0.5" in printed  # 2 discordant clips: 2 * (1/2)^2
    assert "verdict: no significant difference at the 5% level on 8 clips" in printed


def test_a_class_one_model_lacks_counts_as_wrong_for_it(bundles, clips, tmp_path, capsys):
    # the candidate learned a class the model in service never had: compared on the same clips
    assert main(["models", "compare", str(bundles["without_blue"]), str(bundles["right"]), str(clips),
                 "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["n_clips"] == 14
    assert result["unknown_classes"] == {"old": {"blue": 6}, "new": {}}
    assert "OLD has no label for blue (6 clips): counted as wrong for OLD" in printed
    assert result["per_class"]["blue"] == {"clips": 6, "old_recall": 0.0, "new_recall": 1.0, "delta": 1.0}
    assert {(d["truth"], d["old"], d["new"]) for d in result["disagreements"]} == {("blue", "green", "blue")}
    assert result["mcnemar"] == {"old_only": 0, "new_only": 6, "p_value": 0.03125, "test": "exact"}
    assert result["verdict"].startswith("NEW is better") and "OLD cannot predict blue (6 clips)" in result["verdict"]
    # and the other way round: the new model is the one that lacks it
    assert main(["models", "compare", str(bundles["right"]), str(bundles["without_blue"]), str(clips),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    assert "NEW has no label for blue (6 clips): counted as wrong for NEW" in printed
    assert "verdict: NEW is worse: keep OLD" in printed


def test_a_class_neither_model_knows_is_refused(bundles, tmp_path, capsys):
    data = colour_clips(tmp_path / "data", {"red": 2, "green": 1})
    (data / "purple").mkdir()
    (data / "red" / "red_s0_0.mp4").rename(data / "purple" / "purple_s0_0.mp4")
    assert main(["models", "compare", str(bundles["without_blue"]), str(bundles["right"]), str(data)]) == 2
    err = capsys.readouterr().err
    assert f"{data / 'purple'}: class 'purple' is not a label of either model" in err
