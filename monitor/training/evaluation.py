"""Evaluation reports for action classifiers: metrics dict, terminal table, PNG plots, metrics.json.

Labels are class indices into `labels`. Metrics come from scikit-learn (zero_division=0), so
a class never predicted gets precision 0 instead of a warning or NaN. Macro averages follow
scikit-learn's default and cover the classes present in `y_true` or `y_pred`: a class with no
test clips and no predictions is listed with zeros and support 0 but does not drag the macro
averages down, since its scores are undefined rather than bad. The confusion matrix always
has every label.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monitor.fileio import atomic_write
from monitor.ops.logs import kv

log = logging.getLogger(__name__)

DIGITS = 4


def _r(x: float) -> float:
    return round(float(x), DIGITS)


def _as_labels(y: Sequence[int], name: str, n_classes: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {arr.shape} (argmax the probabilities first)")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    bad = sorted(set(arr[(arr < 0) | (arr >= n_classes)].tolist())) if arr.size else []
    if bad:
        raise ValueError(f"{name} has class indices outside 0..{n_classes - 1}: {bad}")
    return arr.astype(np.int64)


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: list[str]) -> dict:
    """JSON-serializable metrics; floats rounded to 4 decimals, confusion rows = true, columns = predicted."""
    from sklearn import metrics

    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be non-empty and unique, got {labels!r}")
    n = len(labels)
    t, p = _as_labels(y_true, "y_true", n), _as_labels(y_pred, "y_pred", n)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} entries but y_pred has {len(p)}")
    if not len(t):
        raise ValueError("no clips to evaluate")
    every = list(range(n))
    prec, rec, f1, support = metrics.precision_recall_fscore_support(t, p, labels=every, zero_division=0)
    # labels=None: macro over classes seen in y_true or y_pred (see module docstring).
    macro_p, macro_r, macro_f1, _ = metrics.precision_recall_fscore_support(t, p, average="macro", zero_division=0)
    cm = metrics.confusion_matrix(t, p, labels=every)
    return {
        "n_clips": len(t),
        "labels": list(labels),
        "accuracy": _r(metrics.accuracy_score(t, p)),
        "f1_macro": _r(macro_f1),
        "precision_macro": _r(macro_p),
        "recall_macro": _r(macro_r),
        "per_class": {
            label: {"precision": _r(prec[i]), "recall": _r(rec[i]), "f1": _r(f1[i]), "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": cm.astype(int).tolist(),
    }


def _macro_f1(cm: np.ndarray) -> float:
    """Macro F1 from a confusion matrix, over the classes seen in truth or prediction (as classification_report)."""
    tp = np.diag(cm).astype(float)
    seen = (cm.sum(0) + cm.sum(1)) > 0
    denominator = cm.sum(0) + cm.sum(1)  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(f1[seen].mean()) if seen.any() else 0.0


def bootstrap_ci(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int, groups: Sequence[str] | None = None,
                 resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap intervals of accuracy and macro F1.

    With `groups` that hold more than one clip, whole groups are resampled: clips cut from one source
    are not independent, and resampling them one by one would make the interval too narrow.
    Seeded, so a report is reproducible.
    """
    t, p = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    names = list(groups) if groups is not None else []
    by_group = len(set(names)) < len(names)
    units = [np.flatnonzero(np.array(names) == g) for g in dict.fromkeys(names)] if by_group else \
        [np.array([i]) for i in range(len(t))]
    rng = np.random.default_rng(seed)
    accuracy, f1 = np.empty(resamples), np.empty(resamples)
    for b in range(resamples):
        drawn = rng.integers(0, len(units), len(units))
        idx = np.concatenate([units[u] for u in drawn]) if by_group else drawn  # a clip's unit is its own index
        cm = np.bincount(t[idx] * n_classes + p[idx], minlength=n_classes * n_classes).reshape(n_classes, n_classes)
        accuracy[b], f1[b] = np.trace(cm) / len(idx), _macro_f1(cm)
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return {"accuracy": [_r(v) for v in np.percentile(accuracy, tails)],
            "f1_macro": [_r(v) for v in np.percentile(f1, tails)],
            "level": level, "unit": "group" if by_group else "clip", "units": len(units), "resamples": resamples}


def mcnemar(old_right: Sequence[bool], new_right: Sequence[bool]) -> dict:
    """McNemar's test on paired decisions: do two models err on the same clips as often as chance allows?

    Only the discordant clips count: `old_only` (the old model right, the new wrong) and `new_only`.
    Under "no difference" each is Binomial(n, 1/2): exact two-sided p below 25 discordant clips,
    else the chi-square approximation with continuity correction.
    """
    old, new = np.asarray(old_right, bool), np.asarray(new_right, bool)
    if old.shape != new.shape:
        raise ValueError(f"paired decisions needed: {old.shape} vs {new.shape}")
    b, c = int((old & ~new).sum()), int((~old & new).sum())
    n = b + c
    if n == 0:
        p, test = 1.0, "exact"
    elif n < 25:
        p, test = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n), "exact"
    else:
        chi2 = (abs(b - c) - 1) ** 2 / n
        p, test = math.erfc(math.sqrt(chi2 / 2)), "chi2"
    return {"old_only": b, "new_only": c, "p_value": float(f"{p:.4g}"), "test": test}


def _abbreviations(labels: list[str], width: int) -> tuple[list[str], bool]:
    """Column headers cut to `width`; falls back to indices when the cut makes two alike."""
    cut = [label[:width] for label in labels]
    if len(set(cut)) == len(cut):
        return cut, False
    return [str(i) for i in range(len(labels))], True


def format_report(report: dict, title: str = "") -> str:
    """Plain-text table: per-class scores, accuracy and macro averages, then the confusion matrix."""
    labels: list[str] = report["labels"]
    name_w = max(len("macro avg"), *(len(label) for label in labels))
    lines = [title, "=" * len(title)] if title else []
    lines.append(f"{'':<{name_w}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>7}")
    for label in labels:
        c = report["per_class"][label]
        lines.append(f"{label:<{name_w}}  {c['precision']:>9.4f}  {c['recall']:>9.4f}  {c['f1']:>9.4f}  {c['support']:>7d}")
    lines.append("")
    ci = report.get("ci95")
    lines.append(f"{'accuracy':<{name_w}}  {'':>9}  {'':>9}  {report['accuracy']:>9.4f}  {report['n_clips']:>7d}"
                 + (f"  95% CI {ci['accuracy'][0]:.2f}-{ci['accuracy'][1]:.2f}" if ci else ""))
    lines.append(f"{'macro avg':<{name_w}}  {report['precision_macro']:>9.4f}  {report['recall_macro']:>9.4f}  "
                 f"{report['f1_macro']:>9.4f}  {report['n_clips']:>7d}"
                 + (f"  95% CI {ci['f1_macro'][0]:.2f}-{ci['f1_macro'][1]:.2f} (f1)" if ci else ""))
    if ci:
        lines.append(f"(bootstrap over {ci['units']} {ci['unit']}s, {ci['resamples']} resamples)")

    cm: list[list[int]] = report["confusion_matrix"]
    cell_w = max(5, len(str(max((v for row in cm for v in row), default=0))))
    heads, numbered = _abbreviations(labels, cell_w)
    rows = [f"{i} {label}" for i, label in enumerate(labels)] if numbered else list(labels)
    corner = "true \\ pred"
    row_w = max(len(corner), *(len(r) for r in rows))
    lines += ["", "confusion matrix (rows = true, columns = predicted)",
              f"{corner:<{row_w}}  " + " ".join(f"{h:>{cell_w}}" for h in heads)]
    for r, counts in zip(rows, cm, strict=True):
        lines.append(f"{r:<{row_w}}  " + " ".join(f"{v:>{cell_w}d}" for v in counts))
    return "\n".join(lines) + "\n"


def _new_figure(width: float, height: float):
    # A bare Figure on an Agg canvas: no pyplot state, so no global backend switch for the
    # caller (a notebook keeps its own), nothing left open, and safe off the main thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_confusion_matrix(report: dict, path: Path) -> Path:
    """PNG of the confusion matrix: cells shaded by share of their true class, annotated with counts."""
    labels: list[str] = report["labels"]
    cm = np.asarray(report["confusion_matrix"], dtype=float)
    n = len(labels)
    side = min(4.0 + 0.55 * n, 40.0)
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    # Row-normalised shading keeps rare classes readable next to frequent ones; the
    # annotations keep the raw counts.
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    font = max(5.0, min(11.0, 160.0 / n))
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=font,
                    color="white" if share[i, j] > 0.5 else "black")
    rotate = n > 6 or max(len(label) for label in labels) > 6
    ax.set_xticks(range(n), labels, rotation=45 if rotate else 0, ha="right" if rotate else "center",
                  rotation_mode="anchor")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix - accuracy {report['accuracy']:.4f} (n={report['n_clips']})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _curve_groups(history: dict[str, list[float]]) -> list[tuple[str, list[str]]]:
    """(panel title, keys) for the loss and accuracy panels that have data."""
    keys = [k for k, v in history.items() if len(v)]
    groups = [("loss", [k for k in keys if k.endswith("loss")]),
              ("accuracy", [k for k in keys if k.endswith("accuracy")])]
    return [(name, sorted(ks, key=lambda k: (k.removeprefix("val_"), k.startswith("val_")))) for name, ks in groups if ks]


def plot_training_curves(history: dict[str, list[float]], path: Path) -> Path:
    """PNG of loss curves and accuracy curves per epoch (Keras `History.history`); val_ keys dashed."""
    from matplotlib.ticker import MaxNLocator

    groups = _curve_groups(history)
    if not groups:
        raise ValueError(f"history has no loss or accuracy series: {sorted(history)}")
    fig = _new_figure(6.0 * len(groups), 4.5)
    for pos, (name, keys) in enumerate(groups, start=1):
        ax = fig.add_subplot(1, len(groups), pos)
        colours: dict[str, str] = {}
        for key in keys:
            values = [float(v) for v in history[key]]
            base = key.removeprefix("val_")
            # Training and validation of the same quantity share a colour, validation dashed.
            colour = colours.setdefault(base, f"C{len(colours) % 10}")
            ax.plot(range(1, len(values) + 1), values, color=colour, label=key,
                    linestyle="--" if key.startswith("val_") else "-", marker="o" if len(values) <= 30 else None,
                    markersize=3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _json_history(history: dict[str, list[float]]) -> dict[str, list[float | None]]:
    # Keras can log NaN/inf (diverged loss) and numpy floats; strict JSON has neither.
    return {k: [float(v) if math.isfinite(float(v)) else None for v in vs] for k, vs in history.items()}


def write_metrics(report: dict, out_dir: Path, history: dict | None = None) -> list[Path]:
    """Write metrics.json, confusion_matrix.png and (with a history) training_curves.png; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = dict(report)
    if history is not None:
        data["history"] = _json_history(history)
    metrics_path = out_dir / "metrics.json"
    atomic_write(metrics_path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    written = [metrics_path, plot_confusion_matrix(report, out_dir / "confusion_matrix.png")]
    if history is not None:
        if _curve_groups(history):
            written.append(plot_training_curves(history, out_dir / "training_curves.png"))
        else:
            log.warning(kv(event="training_curves_skipped", reason="no loss or accuracy series",
                           keys=",".join(sorted(history))))
    return written
