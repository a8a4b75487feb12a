"""`har-monitor train`: labelled clips -> a model bundle that `har-monitor run` loads unchanged."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from monitor.errors import UserError
from monitor.fileio import atomic_write, sha256_file
from monitor.model.backbones import BACKBONES, backbone_choices, build_backbone
from monitor.model.bundle import BackboneSpec, HeadSpec, ModelManifest, WindowSpec, bundle_hash, write_bundle
from monitor.model.heads import HEADS
from monitor.ops.logs import kv
from monitor.training.dataset import Dataset, Sample, check_trainable, grouped_split, image_csv, log_split, video_folder
from monitor.training.features import VARIANTS, ExtractStats, FeatureCache, Sampling, backbone_key, extract
from monitor.training.fit import balance, clip_probabilities, fit_head, predict_outputs, windows_dataset
from monitor.training.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    data: Path
    out: Path
    backbone: str | None = None  # default: inception_v3 (raw for conv3d); or tflite:PATH
    weights: str = "imagenet"
    head: str = "gru"
    frames: int = 16
    sample_fps: float | None = None
    stride: int | None = None
    input_size: tuple[int, int] | None = None
    epochs: int = 40
    batch_size: int = 32
    units: int = 128
    augment: bool = True
    balance: bool = False
    seed: int = 0
    test: Path | None = None
    group_regex: str | None = None
    cache_dir: Path = Path.home() / ".cache" / "har-monitor" / "features"


@dataclass(frozen=True)
class TrainResult:
    bundle: Path
    report: dict  # test-set evaluation (clip level)
    report2: dict | None  # action_class, two-output image mode
    stats: ExtractStats


def backbone_spec(opts: TrainOptions) -> BackboneSpec:
    name = opts.backbone or ("raw" if opts.head == "conv3d" else "inception_v3")
    weights = "none" if name == "raw" else opts.weights
    if name.split(":", 1)[0] in BACKBONES and ":" in name:  # NAME:PATH, e.g. tflite:model.tflite
        name, weights = name.split(":", 1)
    if (opts.head == "conv3d") != (name == "raw"):
        raise UserError("--backbone: the conv3d head, and only it, learns from raw frames (--head conv3d --backbone raw)")
    if name not in BACKBONES:
        raise UserError(f"--backbone: unknown backbone '{name}' (expected one of {backbone_choices()})")
    if opts.head not in HEADS:
        raise UserError(f"--head: unknown head '{opts.head}' (expected one of {', '.join(HEADS)})")
    if weights not in ("imagenet", "none"):
        weights = str(Path(weights).resolve())
        if not Path(weights).is_file():
            raise UserError(f"--weights: file not found: {weights}")
    size = None if BACKBONES[name].size_from_model else (opts.input_size or BACKBONES[name].default_size)
    digest = sha256_file(Path(weights)) if weights not in ("imagenet", "none") else None
    return BackboneSpec(name=name, weights=weights, sha256=digest, input_size=size, seed=opts.seed)


def load_data(opts: TrainOptions) -> tuple[Dataset, list[list[Sample]], list[str]]:
    """The dataset and its train / validation / test parts (grouped, stratified)."""
    if opts.head == "image":
        data = image_csv(opts.data)
    else:
        data = video_folder(opts.data, opts.group_regex)
    if opts.test is None:
        check_trainable(data, opts.data, 3)
        names = ["train", "validation", "test"]
        parts = grouped_split(data.samples, (0.70, 0.15, 0.15), opts.seed)
    else:
        check_trainable(data, opts.data, 2)
        test = image_csv(opts.test, data.labels, data.labels2) if opts.head == "image" else video_folder(opts.test, opts.group_regex)
        if test.labels != data.labels:
            raise UserError(f"{opts.test}: classes {list(test.labels)} differ from the training data's {list(data.labels)}")
        names = ["train", "validation", "test"]
        parts = [*grouped_split(data.samples, (0.85, 0.15), opts.seed), list(test.samples)]
    log_split(names, parts)
    for name, part in zip(names, parts, strict=True):
        if not part:
            raise UserError(f"{opts.data}: too few clips (or groups) for a {name} split; add clips or give --test")
    return data, parts, names


def clip_duration(path: Path) -> float | None:
    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return float(c.duration / av.time_base) if c.duration else None
    except (av.FFmpegError, IndexError):
        return None


def window_spec(opts: TrainOptions, train: list[Sample]) -> WindowSpec:
    if opts.head == "image":
        return WindowSpec(frames=1, sample_fps=opts.sample_fps or 2.0, stride=1)
    if opts.sample_fps:
        return WindowSpec(frames=opts.frames, sample_fps=opts.sample_fps, stride=opts.stride or max(1, opts.frames // 4))
    # Uniform sampling: one window per clip; live, a window then spans a typical clip.
    durations = [d for d in (clip_duration(s.path) for s in train[:200]) if d]
    fps = opts.frames / float(np.median(durations)) if durations else 4.0
    return WindowSpec(frames=opts.frames, sample_fps=round(min(60.0, fps), 3), stride=opts.stride or max(1, opts.frames // 4),
                      clip_sampling="uniform")


def sampling_of(window: WindowSpec) -> Sampling:
    return Sampling(window.frames, window.sample_fps if window.clip_sampling == "fps" else None)


def train(opts: TrainOptions) -> TrainResult:
    start = time.monotonic()
    spec = backbone_spec(opts)
    data, (train_set, val_set, test_set), _ = load_data(opts)
    window = window_spec(opts, train_set)
    backbone = build_backbone(spec.name, spec.weights, spec.input_size, spec.seed, where="--backbone")
    cache = FeatureCache(opts.cache_dir, backbone_key(spec.name, spec.weights, backbone.input_size, spec.seed))
    sampling, stats = sampling_of(window), ExtractStats()
    variants = VARIANTS if opts.augment else VARIANTS[:1]
    total = len(train_set) * len(variants) + len(val_set) + len(test_set)
    with progress_bar("features", total) as advance:
        def features(samples: list[Sample], variant: str = "orig", seed: int = 0):
            return extract(backbone, [s.path for s in samples], sampling, cache, variant, seed, stats=stats, progress=advance)
        train_f = [(f, s) for v in variants for f, s in zip(features(train_set, v, opts.seed * 7919), train_set, strict=True)]
        val_f = list(zip(features(val_set), val_set, strict=True))
        test_f = list(zip(features(test_set), test_set, strict=True))
    log.info(kv(event="features_ready", clips=total, backbone_frames=stats.backbone_frames, cache_hits=stats.cache_hits,
                skipped=len(set(stats.skipped)), seconds=round(time.monotonic() - start, 1)))
    two = bool(data.labels2)
    x, y = _windows(train_f, window, two)
    x_val, y_val = _windows(val_f, window, two)
    if opts.balance:
        x, y = balance(x, y, opts.seed)
    model, history = fit_head(x, y, len(data.labels), opts.head, opts.units, opts.epochs, opts.batch_size, opts.seed,
                              x_val, y_val, n_groups=len(data.labels2), weighted=not opts.balance,
                              frame_size=backbone.input_size if opts.head == "conv3d" else None)
    reports = evaluate_clips(model, [f for f, _ in test_f if f is not None], [s for f, s in test_f if f is not None],
                             window, data)
    manifest = ModelManifest(
        name=opts.out.name, backbone=spec, window=window, labels=list(data.labels), groups=_groups(data),
        head=HeadSpec(kind=opts.head),
        evaluation={"test": _summary(reports[0]), **({"test_action_class": _summary(reports[1])} if two else {}),
                    "splits": {"train": len(train_set), "validation": len(val_set), "test": len(test_set)},
                    "skipped_clips": len(set(stats.skipped)), "augment": opts.augment, "seed": opts.seed})
    _write_bundle(opts.out, manifest, model, history, reports)
    log.info(kv(event="bundle_written", bundle=str(opts.out), accuracy=reports[0]["accuracy"],
                seconds=round(time.monotonic() - start, 1)))
    return TrainResult(opts.out, reports[0], reports[1] if two else None, stats)


def _windows(pairs: list, window: WindowSpec, two: bool) -> tuple[np.ndarray, np.ndarray]:
    kept = [(f, s) for f, s in pairs if f is not None]
    labels = [(s.label, s.label2) if two else s.label for _, s in kept]
    return windows_dataset([f for f, _ in kept], labels, window.frames, window.stride)


def evaluate_clips(model, features: list[np.ndarray], samples: list[Sample], window: WindowSpec, data: Dataset) -> list[dict]:
    """Clip-level reports (mean of each clip's window probabilities): action, then action_class if any."""
    from monitor.training.evaluation import classification_report

    xs, _ = windows_dataset(features, [0] * len(features), window.frames, window.stride)
    per_clip = [max(1, (max(len(f), window.frames) - window.frames) // window.stride + 1) for f in features]
    outputs = predict_outputs(model, xs)
    truths = [[s.label for s in samples], [s.label2 for s in samples if s.label2 is not None]]  # label2: two outputs only
    names = [list(data.labels), list(data.labels2)]
    return [classification_report(truths[i], clip_probabilities(out, per_clip).argmax(1).tolist(), names[i])
            for i, out in enumerate(outputs)]


def _groups(data: Dataset) -> dict[str, list[str]]:
    """Image mode: each action class is a group of the fine actions seen with it, so rules can name it."""
    if not data.labels2:
        return {}
    seen: dict[int, Counter] = {}
    for s in data.samples:
        seen.setdefault(s.label, Counter())[s.label2] += 1
    groups: dict[str, list[str]] = {}
    for label, counts in sorted(seen.items()):
        groups.setdefault(data.labels2[counts.most_common(1)[0][0]], []).append(data.labels[label])
    return {g: members for g, members in groups.items() if g not in data.labels}


def _summary(report: dict) -> dict:
    return {k: report[k] for k in ("accuracy", "f1_macro", "n_clips")}


def _write_bundle(out: Path, manifest: ModelManifest, model, history: dict, reports: list[dict]) -> None:
    from monitor.training.evaluation import write_metrics

    write_bundle(out, manifest, model)
    atomic_write(out / "history.json", json.dumps(history, indent=1))
    write_metrics(reports[0], out / "evaluation", history)
    if len(reports) > 1:
        write_metrics(reports[1], out / "evaluation" / "action_class")
    log.info(kv(event="bundle_hash", bundle=str(out), hash=bundle_hash(out, manifest)))
