"""Evaluation reports: metrics against hand-computed values, text table, PNGs, metrics.json."""

from __future__ import annotations

import json
import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from monitor.training.evaluation import (
    bootstrap_ci,
    classification_report,
    format_report,
    mcnemar,
    plot_confusion_matrix,
    plot_training_curves,
    write_metrics,
)

# Rows = true, columns = predicted. Column sums a=5, b=3, c=2; row sums (support) 4, 3, 3.
CM = [[3, 1, 0],
      [2, 1, 0],
      [0, 1, 2]]
LABELS = ["a", "b", "c"]
KERAS_HISTORY = {"loss": [1.1, 0.8, 0.6, 0.5], "val_loss": [1.2, 0.9, 0.8, 0.85],
                 "accuracy": [0.4, 0.6, 0.7, 0.8], "val_accuracy": [0.35, 0.55, 0.6, 0.6],
                 "learning_rate": [1e-3, 1e-3, 5e-4, 5e-4]}


def from_matrix(cm: list[list[int]]) -> tuple[list[int], list[int]]:
    """y_true, y_pred realising a confusion matrix, in a scrambled order (order must not matter)."""
    pairs = [(t, p) for t, row in enumerate(cm) for p, n in enumerate(row) for _ in range(n)]
    pairs = [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))]
    return [t for t, _ in pairs], [p for _, p in pairs]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def assert_png(path: Path, min_px: int = 200) -> None:
    import matplotlib.image

    width, height = png_size(path)
    assert width > min_px and height > min_px
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.01  # not a blank canvas


def test_report_matches_hand_computed_metrics():
    y_true, y_pred = from_matrix(CM)
    r = classification_report(y_true, y_pred, LABELS)

    assert r["confusion_matrix"] == CM
    assert r["labels"] == LABELS and r["n_clips"] == 10
    assert r["accuracy"] == 0.6  # (3 + 1 + 2) / 10
    # precision = diagonal / column sum, recall = diagonal / row sum, f1 = 2pr / (p + r)
    expected = {"a": (3 / 5, 3 / 4, 2 / 3, 4),   # f1 = 2 * .6 * .75 / 1.35
                "b": (1 / 3, 1 / 3, 1 / 3, 3),
                "c": (2 / 2, 2 / 3, 0.8, 3)}     # f1 = (4/3) / (5/3)
    for label, (p, rec, f1, support) in expected.items():
        got = r["per_class"][label]
        assert got == {"precision": round(p, 4), "recall": round(rec, 4), "f1": round(f1, 4), "support": support}
    assert r["precision_macro"] == round((3 / 5 + 1 / 3 + 1) / 3, 4) == 0.6444
    assert r["recall_macro"] == round((3 / 4 + 1 / 3 + 2 / 3) / 3, 4) == 0.5833
    assert r["f1_macro"] == round((2 / 3 + 1 / 3 + 0.8) / 3, 4) == 0.6
    json.dumps(r, allow_nan=False)  # plain Python types only


def test_numpy_inputs_give_plain_python_types():
    y_true, y_pred = from_matrix(CM)
    r = classification_report(np.array(y_true, np.int32), np.array(y_pred, np.int64), LABELS)
    assert r == classification_report(y_true, y_pred, LABELS)
    assert type(r["accuracy"]) is float and type(r["confusion_matrix"][0][0]) is int
    assert type(r["per_class"]["a"]["support"]) is int


def test_class_never_predicted_scores_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's UndefinedMetricWarning would mean zero_division is not set
        r = classification_report([0, 0, 1, 1, 2], [0, 0, 1, 1, 0], LABELS)
    assert r["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [1, 0, 0]]  # column c present, all zeros
    assert r["per_class"]["a"] == {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2}
    assert r["precision_macro"] == round((2 / 3 + 1 + 0) / 3, 4)
    assert r["recall_macro"] == round((1 + 1 + 0) / 3, 4)
    assert r["f1_macro"] == 0.6  # (0.8 + 1 + 0) / 3
    assert r["accuracy"] == 0.8


def test_class_absent_from_data_is_listed_but_not_averaged():
    y_true, y_pred = from_matrix(CM)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = classification_report(y_true, y_pred, [*LABELS, "d"])
    assert r["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["confusion_matrix"] == [[*row, 0] for row in CM] + [[0, 0, 0, 0]]
    three = classification_report(y_true, y_pred, LABELS)
    # No clip and no prediction: d's scores are undefined, so macro averages stay over a, b, c.
    assert [r[k] for k in ("f1_macro", "precision_macro", "recall_macro", "accuracy")] == \
           [three[k] for k in ("f1_macro", "precision_macro", "recall_macro", "accuracy")]


def test_perfect_and_single_class():
    r = classification_report([1, 1, 1], [1, 1, 1], LABELS)
    assert r["accuracy"] == r["f1_macro"] == 1.0
    assert r["confusion_matrix"] == [[0, 0, 0], [0, 3, 0], [0, 0, 0]]


@pytest.mark.parametrize("y_true, y_pred, labels, match", [
    ([0, 1], [0], LABELS, "2 entries"),
    ([], [], LABELS, "no clips"),
    ([0, 3], [0, 1], LABELS, r"outside 0\.\.2: \[3\]"),
    ([0, -1], [0, 1], LABELS, "outside"),
    ([0, 1], [[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]], LABELS, "argmax"),
    ([0.0, 1.0], [0, 1], LABELS, "integer"),
    ([0, 1], [0, 1], ["a", "a"], "unique"),
    ([0], [0], [], "non-empty"),
])
def test_bad_inputs_are_refused(y_true, y_pred, labels, match):
    with pytest.raises(ValueError, match=match):
        classification_report(y_true, y_pred, labels)


def test_format_report_has_every_label_accuracy_and_matrix():
    labels = ["idle", "wave", "walk", "fall", "get_up_from_floor"]
    r = classification_report([0, 0, 1, 2, 3, 4, 4], [0, 1, 1, 2, 3, 4, 2], labels)
    text = format_report(r, title="test set")
    assert text.startswith("test set\n")
    for label in labels:
        assert label in text
    assert r["accuracy"] == 0.7143  # 5 / 7
    assert "accuracy" in text and "0.7143" in text
    assert "macro avg" in text and f"{r['f1_macro']:.4f}" in text
    matrix = text.split("confusion matrix")[1].splitlines()
    assert "get_u" in matrix[1] and "get_up_from_floor" not in matrix[1]  # abbreviated header
    assert matrix[-1].split()[-5:] == ["0", "0", "1", "0", "1"]  # get_up row


def test_format_report_numbers_columns_when_abbreviations_collide():
    labels = ["walk_left", "walk_right", "idle"]
    text = format_report(classification_report([0, 1, 2], [0, 1, 1], labels))
    header, *rows = text.split("confusion matrix")[1].splitlines()[1:]
    assert header.split()[-3:] == ["0", "1", "2"]
    assert rows[1].split()[:2] == ["1", "walk_right"]


def test_plot_confusion_matrix_is_a_real_png(tmp_path):
    y_true, y_pred = from_matrix(CM)
    path = plot_confusion_matrix(classification_report(y_true, y_pred, LABELS), tmp_path / "cm.png")
    assert path == tmp_path / "cm.png"
    assert_png(path)


def test_confusion_matrix_figure_grows_with_classes(tmp_path):
    labels = [f"long_action_name_{i}" for i in range(12)]
    rng = np.random.default_rng(1)
    y = rng.integers(0, 12, 200)
    r = classification_report(y, np.where(rng.random(200) < 0.7, y, rng.integers(0, 12, 200)), labels)
    small = png_size(plot_confusion_matrix(classification_report([0, 1], [0, 1], ["a", "b"]), tmp_path / "s.png"))
    big = png_size(plot_confusion_matrix(r, tmp_path / "b.png"))
    assert big[0] > 1.5 * small[0] and big[1] > 1.5 * small[1]
    assert_png(tmp_path / "b.png")


def test_plots_leave_no_open_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_confusion_matrix(classification_report([0, 1], [0, 1], ["a", "b"]), tmp_path / "cm.png")
    plot_training_curves(KERAS_HISTORY, tmp_path / "tc.png")
    assert plt.get_fignums() == before


@pytest.mark.parametrize("history", [
    KERAS_HISTORY,
    {"loss": [1.0, 0.7, 0.5]},                                                   # no validation, no accuracy
    {"accuracy": [0.5]},                                                         # one epoch, accuracy only
    {"loss": [2.0, 1.5], "action_loss": [1.0, 0.8], "action_class_loss": [1.0, 0.7],
     "action_accuracy": [0.3, 0.5], "action_class_accuracy": [0.4, 0.6],
     "val_action_accuracy": [0.3, 0.4], "val_loss": [2.1, 1.7]},                 # two-output model
], ids=["keras", "loss-only", "accuracy-only", "multi-output"])
def test_plot_training_curves_is_a_real_png(tmp_path, history):
    path = plot_training_curves(history, tmp_path / "curves.png")
    assert_png(path)


def test_training_curves_need_a_loss_or_accuracy(tmp_path):
    with pytest.raises(ValueError, match="no loss or accuracy"):
        plot_training_curves({"learning_rate": [1e-3]}, tmp_path / "x.png")


def test_write_metrics_round_trips(tmp_path):
    y_true, y_pred = from_matrix(CM)
    report = classification_report(y_true, y_pred, LABELS)
    out = tmp_path / "nested" / "evaluation"
    history = {**KERAS_HISTORY, "val_loss": [np.float32(1.2), 0.9, float("nan"), float("inf")]}

    paths = write_metrics(report, out, history)

    assert paths == [out / "metrics.json", out / "confusion_matrix.png", out / "training_curves.png"]
    data = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "f1_macro", "precision_macro", "recall_macro", "per_class", "confusion_matrix",
                "labels", "n_clips"):
        assert data[key] == report[key]
    assert data["history"]["loss"] == KERAS_HISTORY["loss"]
    assert data["history"]["val_loss"][2:] == [None, None]  # NaN/inf are not JSON
    assert math.isclose(data["history"]["val_loss"][0], 1.2, rel_tol=1e-6)
    assert "history" not in report  # the caller's dict is left alone
    for png in paths[1:]:
        assert_png(png)


def test_write_metrics_without_history(tmp_path):
    report = classification_report([0, 1, 2], [0, 1, 1], LABELS)
    paths = write_metrics(report, tmp_path)
    assert [p.name for p in paths] == ["metrics.json", "confusion_matrix.png"]
    assert "history" not in json.loads(paths[0].read_text())
    assert not (tmp_path / "training_curves.png").exists()


def test_write_metrics_skips_curves_for_a_history_without_them(tmp_path):
    report = classification_report([0, 1], [0, 1], ["a", "b"])
    paths = write_metrics(report, tmp_path, {"learning_rate": [1e-3, 5e-4]})
    assert [p.name for p in paths] == ["metrics.json", "confusion_matrix.png"]
    assert json.loads(paths[0].read_text())["history"] == {"learning_rate": [1e-3, 5e-4]}


# -- how sure: bootstrap intervals, paired comparisons -----------------------------------------

def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_clips():
    rng = np.random.default_rng(3)
    widths = []
    for n in (12, 480):
        y = rng.integers(0, 3, n)
        pred = np.where(rng.random(n) < 0.8, y, (y + 1) % 3)
        ci = bootstrap_ci(y, pred, 3)
        r = classification_report(y, pred, LABELS)
        assert ci["accuracy"][0] <= r["accuracy"] <= ci["accuracy"][1]
        assert ci["f1_macro"][0] <= r["f1_macro"] <= ci["f1_macro"][1]
        assert ci["unit"] == "clip" and ci["units"] == n and ci["level"] == 0.95
        widths.append(ci["accuracy"][1] - ci["accuracy"][0])
    assert widths[1] < widths[0] / 2, "12 clips say much less than 480"
    assert bootstrap_ci([0, 1, 2], [0, 1, 2], 3)["accuracy"] == [1.0, 1.0]
    assert bootstrap_ci(y, pred, 3) == bootstrap_ci(y, pred, 3), "seeded: the same report twice"


def test_bootstrap_resamples_whole_groups_when_clips_share_a_source():
    """All the errors in one source: resampling clips one by one would claim a far narrower interval."""
    y = np.repeat([0, 1], 20)
    pred = y.copy()
    pred[:5] = 1  # source s0's five clips all wrong
    groups = [f"s{i // 5}" for i in range(40)]
    by_clip = bootstrap_ci(y, pred, 2)
    by_group = bootstrap_ci(y, pred, 2, groups)
    assert by_group["unit"] == "group" and by_group["units"] == 8
    assert by_group["accuracy"][1] - by_group["accuracy"][0] > by_clip["accuracy"][1] - by_clip["accuracy"][0]
    assert bootstrap_ci(y, pred, 2, [str(i) for i in range(40)])["unit"] == "clip"  # one clip per group: clips


def test_format_report_shows_the_interval():
    r = classification_report([0, 0, 1, 2, 2], [0, 1, 1, 2, 2], LABELS)
    r["ci95"] = bootstrap_ci([0, 0, 1, 2, 2], [0, 1, 1, 2, 2], 3)
    text = format_report(r)
    lo, hi = r["ci95"]["accuracy"]
    assert f"0.8000  {5:>7d}  95% CI {lo:.2f}-{hi:.2f}" in text
    assert "bootstrap over 5 clips, 2000 resamples" in text


@pytest.mark.parametrize("old_only, new_only, p", [
    (0, 0, 1.0),
    (1, 6, 2 * (1 + 7) / 2 ** 7),       # exact: 2 * P(X <= 1), X ~ Binomial(7, 1/2)
    (0, 5, 2 / 2 ** 5),
    (4, 4, 1.0),                        # 2 * P(X <= 4) > 1 is capped
    (10, 30, 0.002663),                 # 40 discordant clips: chi-square, (|10 - 30| - 1)^2 / 40 = 9.025
])
def test_mcnemar_counts_only_the_clips_where_the_models_disagree(old_only, new_only, p):
    both_right, both_wrong = 7, 3
    old = [True] * old_only + [False] * new_only + [True] * both_right + [False] * both_wrong
    new = [False] * old_only + [True] * new_only + [True] * both_right + [False] * both_wrong
    result = mcnemar(old, new)
    assert (result["old_only"], result["new_only"]) == (old_only, new_only)
    assert result["test"] == ("exact" if old_only + new_only < 25 else "chi2")
    assert math.isclose(result["p_value"], p, rel_tol=1e-3)


def test_mcnemar_exact_agrees_with_scipy():
    from scipy.stats import binomtest

    for b, c in [(2, 9), (7, 3), (0, 12), (11, 13)]:
        old, new = [True] * b + [False] * c, [False] * b + [True] * c
        assert math.isclose(mcnemar(old, new)["p_value"], binomtest(b, b + c, 0.5).pvalue, rel_tol=1e-3)
    with pytest.raises(ValueError, match="paired"):
        mcnemar([True, False], [True])
