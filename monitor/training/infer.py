"""`har-monitor evaluate` and `har-monitor predict`: a bundle applied to clips, offline.

Clips are sampled and windowed as in training (and as the daemon does live), and a clip's
prediction is the mean of its windows' probabilities.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.errors import UserError
from monitor.model.bundle import MANIFEST, Bundle, load_bundle
from monitor.model.windowing import clip_windows
from monitor.training.dataset import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Dataset, Sample, image_csv, video_folder
from monitor.training.features import ExtractStats, FeatureCache, backbone_key, extract
from monitor.training.fit import clip_probabilities, predict_outputs
from monitor.training.progress import progress_bar
from monitor.training.train import clip_outputs, clip_reports, sampling_of


def _load(model_dir: Path):
    import keras

    bundle = load_bundle(model_dir)
    backbone = bundle.build_backbone(deferred=True)  # evaluate and compare may find every feature in the cache
    model = keras.models.load_model(bundle.head_file, compile=False)
    return bundle, backbone, model


def _cache(bundle: Bundle, backbone, cache_dir: Path | None) -> FeatureCache | None:
    if cache_dir is None:
        return None
    spec = bundle.manifest.backbone
    return FeatureCache(cache_dir, backbone_key(spec.name, bundle.weights_location(), backbone.input_size, spec.seed))


@dataclass(frozen=True)
class Scored:
    """A bundle's clip-level probabilities on labelled clips: one array [clips, classes] per head output."""

    bundle: Bundle
    data: Dataset  # the bundle's labels in its order, then (score(..., unknown_ok=True)) DATA's classes it lacks
    samples: tuple[Sample, ...]  # the readable clips, in the order of the rows of `probs`
    probs: tuple[np.ndarray, ...]
    skipped: int  # unreadable clips

    def reports(self) -> list[dict]:
        return clip_reports(self.probs, list(self.samples), self.data)


def score(model_dir: Path, data_path: Path, cache_dir: Path | None = None, unknown_ok: bool = False) -> Scored:
    """Run a bundle over labelled clips (sampled and windowed as in training and live).

    `unknown_ok` keeps a class folder the bundle has no label for (its clips can only be called wrong)
    instead of refusing it: `models compare` scores a candidate's new class against the old model.
    """
    bundle, backbone, model = _load(model_dir)
    classes = action_classes(bundle, model)
    if bundle.manifest.head.kind == "image":
        data = image_csv(data_path, tuple(bundle.labels), tuple(classes) or None)
    else:
        data = _relabel(video_folder(data_path), bundle, data_path, unknown_ok)
    stats = ExtractStats()
    with progress_bar("features", len(data.samples)) as advance:
        feats = extract(backbone, [s.path for s in data.samples], sampling_of(bundle.manifest.window),
                        _cache(bundle, backbone, cache_dir), stats=stats, progress=advance)
    kept = [(f, s) for f, s in zip(feats, data.samples, strict=True) if f is not None]
    if not kept:
        raise UserError(f"{data_path}: no readable clip")
    probs = clip_outputs(model, [f for f, _ in kept], bundle.manifest.window)
    return Scored(bundle, data, tuple(s for _, s in kept), tuple(probs), len(set(stats.skipped)))


def evaluate(model_dir: Path, data_path: Path, out: Path | None = None, cache_dir: Path | None = None) -> dict:
    """Score a bundle on labelled clips; write metrics.json and PNGs to `out`.

    The default, MODEL_DIR/evaluations/<DATA name>, keeps the test report that training wrote (MODEL_DIR/evaluation).
    """
    from monitor.training.evaluation import format_report, write_metrics

    scored = score(model_dir, data_path, cache_dir)
    reports = scored.reports()
    out = out or default_report_dir(model_dir, data_path)
    history_file = model_dir / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else None
    write_metrics(reports[0], out, history)
    skipped = f", {scored.skipped} unreadable skipped" if scored.skipped else ""
    print(format_report(reports[0], title=f"{model_dir.name} on {data_path} ({len(scored.samples)} clips{skipped})"))
    if len(reports) > 1:
        write_metrics(reports[1], out / "action_class")
        print(format_report(reports[1], title="action class"))
    print(f"report: {out}")
    return reports[0]


def default_report_dir(model_dir: Path, data_path: Path) -> Path:
    return model_dir / "evaluations" / (data_path.stem if data_path.is_file() else data_path.name)


def action_classes(bundle: Bundle, model) -> list[str]:
    """The names of a two-output head's action_class output; [] for a one-output head."""
    if len(model.outputs) < 2:
        return []
    # bundles written before action_classes was recorded: training sorted them by name
    names = bundle.manifest.action_classes or sorted(bundle.manifest.groups)
    if len(names) != model.outputs[1].shape[-1]:
        raise UserError(f"{bundle.path / MANIFEST}: action_classes: {len(names)} names for the head's "
                        f"{model.outputs[1].shape[-1]} action classes")
    return list(names)


def _relabel(data: Dataset, bundle: Bundle, source: Path, unknown_ok: bool = False) -> Dataset:
    """Class folders named as the bundle's labels, mapped to the bundle's label order; with `unknown_ok`,
    folders the bundle has no label for follow its labels (indices past the head's outputs)."""
    unknown = sorted(set(data.labels) - set(bundle.labels))
    if unknown and not unknown_ok:
        raise UserError(f"{source}: classes not in the model's labels: {', '.join(unknown)} (model: {', '.join(bundle.labels)})")
    labels = (*bundle.labels, *unknown)
    mapping = {i: labels.index(name) for i, name in enumerate(data.labels)}
    samples = tuple(Sample(s.path, mapping[s.label], s.group) for s in data.samples)
    return Dataset(samples, labels)


def predict(model_dir: Path, paths: list[Path], top_k: int = 3, csv_path: Path | None = None) -> list[dict]:
    """Top-k actions per video or image; optional CSV with one row per input. An input that cannot be
    read is an error (its reason in the CSV's `error` column), raised after the others are printed."""
    bundle, backbone, model = _load(model_dir)
    window = bundle.manifest.window
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UserError([f"{p}: file not found" for p in missing])
    unsupported = [str(p) for p in paths if p.suffix.lower() not in VIDEO_SUFFIXES | IMAGE_SUFFIXES]
    if unsupported:
        raise UserError([f"{p}: not a video or image file" for p in unsupported])
    stats = ExtractStats()
    feats = extract(backbone, paths, sampling_of(window), None, stats=stats)
    names = [bundle.labels, action_classes(bundle, model)]
    rows = []
    for path, f in zip(paths, feats, strict=True):
        row: dict = {"path": str(path)}
        if f is None:
            row["error"] = stats.reasons[str(path)]
        else:
            outputs = predict_outputs(model, clip_windows(f, window.frames, window.stride))
            for out, labels, prefix in zip(outputs, names, ("", "class_"), strict=False):  # one or two outputs
                probs = clip_probabilities(out, [len(out)])[0]
                for rank, i in enumerate(np.argsort(probs)[::-1][:top_k if not prefix else 1], start=1):
                    row[f"{prefix}top{rank}"], row[f"{prefix}p{rank}"] = labels[i], round(float(probs[i]), 4)
            print(_line(row, top_k))
        rows.append(row)
    if csv_path is not None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
    unreadable = [f"{row['path']}: {row['error']}" for row in rows if "error" in row]
    if unreadable:
        raise UserError(unreadable)
    return rows


def _line(row: dict, top_k: int) -> str:
    ranked = ", ".join(f"{row[f'top{r}']} {row[f'p{r}']:.2f}" for r in range(1, top_k + 1) if f"top{r}" in row)
    extra = f"  [class: {row['class_top1']} {row['class_p1']:.2f}]" if "class_top1" in row else ""
    return f"{row['path']}: {ranked}{extra}"


