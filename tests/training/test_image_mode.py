"""`--head image`: a CSV of images, one or two outputs (action, action_class), grouped splits, the CSV's mistakes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest
import yaml

from monitor.cli import main
from monitor.demo import synthetic
from monitor.training.train import TrainOptions, train
from support.assets import asset

pytestmark = pytest.mark.tf  # they train small Keras models

# The groups of model.yaml list action classes in the order their actions sort (fall first: "lying"),
# the action_class output sorts them by name ("afoot" first): the two orders differ on purpose.
ACTION_CLASS = {"idle": "afoot", "wave": "afoot", "fall": "lying"}


def write_images(root: Path, rows: list[tuple[str, str, str | None]], name: str = "labels.csv", size=(64, 80)) -> Path:
    """A CSV `path,action[,action_class]` over synthetic frames; `rows` are (file stem, action, action_class)."""
    root.mkdir(parents=True, exist_ok=True)
    two = rows[0][2] is not None
    for k, (stem, action, _) in enumerate(rows):
        frame = synthetic.render_clip(action, 12, size, k, fps=12.0, look_seed=k % 5)[-1]
        cv2.imwrite(str(root / f"{stem}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    with open(root / name, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "action", "action_class"] if two else ["path", "action"])
        writer.writerows([f"{stem}.png", action, *([cls] if two else [])] for stem, action, cls in rows)
    return root / name


def images(offset: int, per_action: int, classes: dict[str, str] = ACTION_CLASS) -> list[tuple[str, str, str]]:
    return [(f"{action}_{k}", action, cls) for action, cls in classes.items() for k in range(offset, offset + per_action)]


@pytest.fixture(scope="module")
def two_output_model(tmp_path_factory) -> tuple[Path, Path]:
    """A two-output image model on a real pretrained backbone, and its separate test CSV."""
    weights = asset("weights", "mobilenet_v2_1.0_224_imagenet_notop.weights.h5")
    root = tmp_path_factory.mktemp("two")
    data = write_images(root / "images", images(0, 10))
    test = write_images(root / "images", images(10, 4), name="test.csv")
    out = root / "model"
    assert main(["train", str(data), "--test", str(test), "--out", str(out), "--head", "image", "--backbone", "mobilenet_v2",
                 "--weights", str(weights), "--input-size", "96", "--epochs", "20", "--folds", "1", "--members", "1", "--units", "32",
                 "--cache-dir", str(root / "cache")]) == 0
    return out, test


def test_two_output_model_keeps_its_action_classes_in_order(two_output_model, tmp_path, capsys):
    """evaluate and predict name the action_class output as training did (they used to take the groups' order)."""
    out, test = two_output_model
    trained = json.loads((out / "evaluation" / "action_class" / "metrics.json").read_text())
    assert main(["evaluate", str(out), str(test), "--out", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "action_class" / "metrics.json").read_text())
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"], "same model, same clips, same names"

    assert trained["accuracy"] >= 0.9, "a real backbone tells a lying figure from upright ones"
    assert main(["predict", str(out), *(str(test.parent / f"{stem}.png") for stem, _, _ in images(10, 4)),
                 "--csv", str(tmp_path / "p.csv")]) == 0
    capsys.readouterr()
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    right = sum(row["class_top1"] == ACTION_CLASS[Path(row["path"]).stem.split("_")[0]] for row in rows)
    assert right >= 0.9 * len(rows), rows

    manifest = yaml.safe_load((out / "model.yaml").read_text())
    assert manifest["action_classes"] == ["afoot", "lying"]
    assert manifest["groups"] == {"lying": ["fall"], "afoot": ["idle", "wave"]}  # rules name them; order irrelevant


def test_an_action_class_named_like_an_action_is_evaluated(tmp_path, capsys):
    """'idle' is an action and the action class of idle and wave: no group for it, yet evaluate scores it."""
    classes = {"idle": "idle", "wave": "idle", "fall": "down"}
    data = write_images(tmp_path / "images", images(0, 5, classes))
    out = tmp_path / "model"
    assert main(["train", str(data), "--out", str(out), "--head", "image", "--backbone", "mobilenet_v2", "--weights", "none",
                 "--input-size", "32", "--epochs", "1", "--folds", "1", "--members", "1", "--units", "8", "--cache-dir", str(tmp_path / "c")]) == 0
    assert main(["evaluate", str(out), str(data), "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "action_class" / "metrics.json").read_text())["labels"] == ["down", "idle"]
    manifest = yaml.safe_load((out / "model.yaml").read_text())
    assert manifest["action_classes"] == ["down", "idle"] and manifest["groups"] == {"down": ["fall"]}


def test_evaluate_names_an_unknown_action_class_by_file_and_line(two_output_model, tmp_path, capsys):
    out, test = two_output_model
    rows = test.read_text().splitlines()
    rows[3] = rows[3].rsplit(",", 1)[0] + ",sideways"
    bad = tmp_path / "bad.csv"  # paths made absolute: the images stay where they are
    bad.write_text("\n".join([rows[0], *(f"{test.parent}/{row}" for row in rows[1:])]) + "\n")
    assert main(["evaluate", str(out), str(bad), "--out", str(tmp_path / "eval")]) == 2
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")] == [
        f"error: {bad}:4: action_class: 'sideways' is not one of the model's action classes (afoot, lying)"]


@pytest.mark.parametrize("line, problem", [
    ("idle_0.png,idle", "action_class: missing"),
    ("idle_0.png", "action: missing"),
    ("idle_0.png,,afoot", "action: missing"),
    (",idle,afoot", "path: missing"),
])
def test_a_csv_row_with_a_missing_field_is_named_by_file_and_line(tmp_path, capsys, line, problem):
    data = write_images(tmp_path, images(0, 3))
    rows = data.read_text().splitlines()
    data.write_text("\n".join([*rows[:3], line, *rows[3:]]) + "\n")
    assert main(["train", str(data), "--out", str(tmp_path / "m"), "--head", "image", "--weights", "none",
                 "--epochs", "1", "--cache-dir", str(tmp_path / "c")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {data}:4: {problem}"]


def test_group_regex_keeps_a_cameras_frames_on_one_side(tmp_path, capsys):
    """Frames of one camera are near duplicates: with --group-regex they never straddle train and test."""
    rows = [(f"cam{cam}_{action}_{k}", action, None) for cam in range(6) for action in ("idle", "fall") for k in range(3)]
    data = write_images(tmp_path / "images", rows)
    out = tmp_path / "m"
    assert main(["train", str(data), "--out", str(out), "--head", "image", "--backbone", "mobilenet_v2", "--weights", "none",
                 "--input-size", "32", "--epochs", "1", "--folds", "1", "--members", "1", "--units", "8", "--no-augment",
                 "--group-regex", r"^(cam\d+)", "--cache-dir", str(tmp_path / "c")]) == 0
    split = next(line for line in capsys.readouterr().err.splitlines() if "event=split" in line)
    assert sum(map(int, split.split("groups=")[1].split("/"))) == 6, split  # six cameras, each on one side
    with open(out / "data.csv", newline="") as f:
        used = list(csv.DictReader(f))
    assert len(used) == len(rows)
    sides: dict[str, set[str]] = {}
    for row in used:
        assert row["group"] == Path(row["path"]).stem.split("_")[0]
        sides.setdefault(row["group"], set()).add(row["part"])
    assert all(len(parts) == 1 for parts in sides.values()), sides


def test_images_get_no_speed_copy(tmp_path):
    """Speed jitter means nothing for a still image: augmentation adds one flipped and cropped copy only."""
    data = write_images(tmp_path / "images", [(f"{a}_{k}", a, None) for a in ("idle", "fall") for k in range(6)])
    test = write_images(tmp_path / "images", [(f"t_{a}_{k}", a, None) for a in ("idle", "fall") for k in range(2)], name="t.csv")
    result = train(TrainOptions(data=data, test=test, out=tmp_path / "m", head="image", backbone="mobilenet_v2",
                                weights="none", input_size=(32, 32), epochs=1, folds=1, members=1, units=8, cache_dir=tmp_path / "c"))
    assert result.stats.backbone_frames == 2 * 12 + 4  # training images twice (as they are, flipped+cropped), test once
    assert yaml.safe_load((tmp_path / "m" / "model.yaml").read_text())["training"]["augmentation"] == ["flip_crop"]
