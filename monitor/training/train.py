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
from monitor.model.heads import CONVEX_HEADS, FRAME_HEADS, HEADS, summary
from monitor.model.windowing import clip_windows
from monitor.ops.logs import kv
from monitor.training.crossval import CrossValidation, cross_validate
from monitor.training.dataset import (
    Dataset,
    Sample,
    check_trainable,
    grouped_folds,
    grouped_split,
    image_csv,
    log_split,
    video_folder,
)
from monitor.training.features import VARIANTS, ExtractStats, FeatureCache, Sampling, backbone_key, extract
from monitor.training.fit import balance, clip_probabilities, ensemble, fit_head, predict_outputs, windows_dataset
from monitor.training.progress import epoch_bar, progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    data: Path
    out: Path
    backbone: str | None = None  # default: inception_v3 (raw for conv3d); or tflite:PATH
    weights: str = "imagenet"
    head: str = "linear"  # convex: the same head whatever the seed (bench/small_datasets.py spread)
    frames: int = 16
    sample_fps: float | None = None
    stride: int | None = None
    input_size: tuple[int, int] | None = None
    epochs: int = 40  # every fit of a neural head runs them all and keeps its last weights
    folds: int = 5  # grouped cross-validation folds that measure the recipe; 1: none
    members: int = 10  # heads trained on all training clips with different seeds, averaged in the head file
    batch_size: int = 32
    units: int = 32  # per member: ten small heads vary less across seeds than one large one
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
    cv: CrossValidation | None
    members: int  # models averaged in the head
    epochs: int | None  # None: a convex head, solved to convergence


def backbone_spec(opts: TrainOptions) -> BackboneSpec:
    name = opts.backbone or ("raw" if opts.head in FRAME_HEADS else "inception_v3")
    weights = "none" if name == "raw" else opts.weights
    if name.split(":", 1)[0] in BACKBONES and ":" in name:  # NAME:PATH, e.g. tflite:model.tflite
        name, weights = name.split(":", 1)
    if (opts.head in FRAME_HEADS) != (name == "raw"):
        raise UserError(f"--backbone: the {' and '.join(FRAME_HEADS)} heads, and only they, learn from raw frames "
                        "(--head conv3d --backbone raw)")
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


def load_data(opts: TrainOptions) -> tuple[Dataset, list[Sample], list[Sample]]:
    """The dataset, its training clips and its test clips (--test, or a grouped, stratified 15%)."""
    if opts.head == "image":
        data = image_csv(opts.data, group_regex=opts.group_regex)
    else:
        data = video_folder(opts.data, opts.group_regex)
    if opts.test is None:
        check_trainable(data, opts.data, 3)
        parts = grouped_split(data.samples, (0.85, 0.15), opts.seed)
    else:
        check_trainable(data, opts.data, 2)
        test = (image_csv(opts.test, data.labels, data.labels2, opts.group_regex) if opts.head == "image"
                else video_folder(opts.test, opts.group_regex))
        if test.labels != data.labels:
            raise UserError(f"{opts.test}: classes {list(test.labels)} differ from the training data's {list(data.labels)}")
        parts = [list(data.samples), list(test.samples)]
    log_split(["train", "test"], parts)
    for name, part in zip(("train", "test"), parts, strict=True):
        if not part:
            raise UserError(f"{opts.data}: too few clips (or groups) for a {name} split; add clips or give --test")
    return data, parts[0], parts[1]


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


@dataclass(frozen=True)
class ClipFeatures:
    """Features of clips, per augmentation variant, in the order of `samples` (None: an unreadable clip)."""

    samples: tuple[Sample, ...]
    variants: dict[str, list[np.ndarray | None]]

    def windows(self, indices: list[int], variants: tuple[str, ...], window: WindowSpec, two: bool):
        pairs = [(self.variants[v][i], self.samples[i]) for v in variants for i in indices]
        kept = [(f, s) for f, s in pairs if f is not None]
        labels = [(s.label, s.label2) if two else s.label for _, s in kept]
        return windows_dataset([f for f, _ in kept], labels, window.frames, window.stride)


def train(opts: TrainOptions) -> TrainResult:
    start = time.monotonic()
    for name in ("folds", "members", "epochs"):
        if getattr(opts, name) < 1:
            raise UserError(f"--{name}: must be at least 1")
    spec = backbone_spec(opts)
    data, train_set, test_set = load_data(opts)
    window = window_spec(opts, train_set)
    backbone = build_backbone(spec.name, spec.weights, spec.input_size, spec.seed, where="--backbone", deferred=True)
    # speed jitter means nothing for a still image: it would only repeat the original
    variants = (VARIANTS if data.kind == "video" else VARIANTS[:2]) if opts.augment else VARIANTS[:1]
    stats = ExtractStats()
    clips, test = _features(opts, spec, backbone, window, train_set, test_set, variants, stats)
    log.info(kv(event="features_ready", clips=len(train_set) * len(variants) + len(test_set),
                backbone_frames=stats.backbone_frames, cache_hits=stats.cache_hits,
                skipped=len(set(stats.skipped)), seconds=round(time.monotonic() - start, 1)))
    head = fit_final_head(opts, clips, variants, window, data, backbone.input_size if opts.head in FRAME_HEADS else None)
    test_kept = [(f, s) for f, s in zip(test.variants["orig"], test.samples, strict=True) if f is not None]
    reports = clip_reports(clip_outputs(head.model, [f for f, _ in test_kept], window), [s for _, s in test_kept], data)
    two = bool(data.labels2)
    manifest = ModelManifest(
        name=opts.out.name, backbone=spec, window=window, labels=list(data.labels), groups=_groups(data),
        action_classes=list(data.labels2), head=HeadSpec(kind=opts.head, parameters=head.parameters, members=head.members),
        training={"epochs": head.epochs, "kept_epoch": head.epochs, "members": head.members, "seed": opts.seed,
                  "cross_validation": head.cv.record() if head.cv else None, "augmentation": list(variants[1:]),
                  "member_layers": head.layers},
        evaluation={"test": _summary(reports[0]), **({"test_action_class": _summary(reports[1])} if two else {}),
                    "splits": {"train": len(train_set), "test": len(test_set)},
                    "skipped_clips": len(set(stats.skipped)), "augment": opts.augment, "seed": opts.seed})
    _write_bundle(opts.out, manifest, head, reports, train_set, test_set)
    log.info(kv(event="bundle_written", bundle=str(opts.out), accuracy=reports[0]["accuracy"],
                seconds=round(time.monotonic() - start, 1)))
    return TrainResult(opts.out, reports[0], reports[1] if two else None, stats, head.cv, head.members, head.epochs)


def _features(opts: TrainOptions, spec: BackboneSpec, backbone, window: WindowSpec, train_set: list[Sample],
              test_set: list[Sample], variants: tuple[str, ...], stats: ExtractStats) -> tuple[ClipFeatures, ClipFeatures]:
    cache = FeatureCache(opts.cache_dir, backbone_key(spec.name, spec.weights, backbone.input_size, spec.seed))
    sampling = sampling_of(window)
    with progress_bar("features", len(train_set) * len(variants) + len(test_set)) as advance:
        def features(samples: list[Sample], variant: str = "orig", seed: int = 0):
            return extract(backbone, [s.path for s in samples], sampling, cache, variant, seed, stats=stats, progress=advance)
        clips = ClipFeatures(tuple(train_set), {v: features(train_set, v, opts.seed * 7919) for v in variants})
        test = ClipFeatures(tuple(test_set), {"orig": features(test_set)})
    return clips, test


@dataclass(frozen=True)
class FittedHead:
    model: object  # a Keras model: the members averaged
    history: dict  # the members' mean training curves; val_*: the folds' mean validation curves
    cv: CrossValidation | None
    members: int
    parameters: int
    layers: str  # one member's layers and their parameters
    epochs: int | None  # None: a convex head, solved to convergence


def fit_final_head(opts: TrainOptions, clips: ClipFeatures, variants: tuple[str, ...], window: WindowSpec,
                   data: Dataset, frame_size: tuple[int, int] | None) -> FittedHead:
    """Grouped cross-validation measures the recipe; `opts.members` heads trained on every training clip are averaged.

    Every fit runs the whole schedule and keeps its last weights: no epoch is picked on a few validation clips.
    """
    two = bool(data.labels2)
    convex = opts.head in CONVEX_HEADS  # one fit to convergence: no epochs, and members would all be the same
    epochs, n_members = (1, 1) if convex else (opts.epochs, opts.members)
    everything = list(range(len(clips.samples)))
    folds = grouped_folds(clips.samples, opts.folds, opts.seed) if opts.folds > 1 else []
    with epoch_bar() as bar:
        def fit(train_idx: list[int], seed: int, what: str, held_out: list[int] | None = None):
            x, y = clips.windows(train_idx, variants, window, two)
            if opts.balance:
                x, y = balance(x, y, seed)
            x_val, y_val = clips.windows(held_out, ("orig",), window, two) if held_out else (None, None)
            bar.add(epochs)
            return fit_head(x, y, len(data.labels), opts.head, opts.units, epochs, opts.batch_size, seed, x_val, y_val,
                            n_groups=len(data.labels2), weighted=not opts.balance, frame_size=frame_size,
                            on_epoch=bar.epoch_reporter(what, epochs), name=f"{opts.head}_{what.replace('/', '_of_')}")

        cv = None
        if len(folds) >= 2:
            _warn_unvalidated(clips.samples, folds, data)
            cv = cross_validate(lambda n, held_out: fit([i for i in everything if i not in set(held_out)], opts.seed * 1000 + n,
                                                        f"fold{n}/{len(folds)}", held_out)[1], folds, epochs)
        members = [fit(everything, opts.seed * 1000 + 100 + m, f"member{m + 1}/{n_members}") for m in range(n_members)]
    model = ensemble([m for m, _ in members], name=f"{opts.head}_head")
    parameters, layers = summary(model)[0], summary(members[0][0])[1]
    kept = None if convex else opts.epochs
    log.info(kv(event="head_trained", kind=opts.head, members=len(members), epochs=kept, kept_epoch=kept, parameters=parameters))
    log.info(kv(event="head_summary", member_layers=layers))
    return FittedHead(model, _history([h for _, h in members], cv), cv, len(members), parameters, layers, kept)


def _history(members: list[dict], cv: CrossValidation | None) -> dict:
    """The members' mean training curves, with the folds' mean validation curves when there were folds."""
    mean = {k: [float(v) for v in np.mean([h[k] for h in members], axis=0)] for k in members[0]}
    mean.update({k: v for k, v in (cv.mean_history if cv else {}).items() if k.startswith("val_")})
    return mean


def _warn_unvalidated(samples: tuple[Sample, ...], folds: list[list[int]], data: Dataset) -> None:
    validated = {samples[i].label for fold in folds for i in fold}
    for label in sorted(set(range(len(data.labels))) - validated):
        log.warning(kv(event="class_not_validated", label=data.labels[label],
                       reason="one group (source) only: it is trained on in every fold, never held out"))


def clip_outputs(model, features: list[np.ndarray], window: WindowSpec) -> list[np.ndarray]:
    """Per head output, [clips, classes]: each clip's windows' probabilities averaged (as evaluate and predict do)."""
    xs, _ = windows_dataset(features, [0] * len(features), window.frames, window.stride)
    per_clip = [len(clip_windows(f, window.frames, window.stride)) for f in features]
    return [clip_probabilities(out, per_clip) for out in predict_outputs(model, xs)]


def clip_reports(probs: list[np.ndarray] | tuple[np.ndarray, ...], samples: list[Sample], data: Dataset) -> list[dict]:
    """Clip-level reports, with 95% bootstrap intervals: action, then action_class if the head has that output."""
    from monitor.training.evaluation import bootstrap_ci, classification_report

    truths: list[list[int]] = [[s.label for s in samples], [s.label2 for s in samples if s.label2 is not None]]
    names = [list(data.labels), list(data.labels2)]
    reports = []
    for truth, p, labels in zip(truths, probs, names, strict=False):  # one or two outputs
        predicted = p.argmax(1).tolist()
        report = classification_report(truth, predicted, labels)
        report["ci95"] = bootstrap_ci(truth, predicted, len(labels), [s.group for s in samples])
        reports.append(report)
    return reports


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
    return {**{k: report[k] for k in ("accuracy", "f1_macro", "n_clips")},
            "ci95": {k: report["ci95"][k] for k in ("accuracy", "f1_macro", "unit")}}


def _write_bundle(out: Path, manifest: ModelManifest, head: FittedHead, reports: list[dict], train_set: list[Sample],
                  test_set: list[Sample]) -> None:
    from monitor.training.evaluation import write_metrics

    write_bundle(out, manifest, head.model)
    atomic_write(out / "history.json", json.dumps(head.history, indent=1))
    _write_data(out / "data.csv", manifest, train_set, test_set)
    write_metrics(reports[0], out / "evaluation", head.history)
    if len(reports) > 1:
        write_metrics(reports[1], out / "evaluation" / "action_class")
    log.info(kv(event="bundle_hash", bundle=str(out), hash=bundle_hash(out, manifest)))


def _write_data(path: Path, manifest: ModelManifest, train_set: list[Sample], test_set: list[Sample]) -> None:
    """Which clips trained the head and which tested it (with their groups): what a reviewer asks first."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "action", "group", "part"])
        for part, samples in (("train", train_set), ("test", test_set)):
            writer.writerows([str(s.path), manifest.labels[s.label], s.group, part] for s in samples)
