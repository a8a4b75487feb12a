"""Labelled data for training: class folders of videos, or a CSV of images; grouped splits.

Clips cut from the same source video (UCF101's `_gNN_`, HMDB51's source name) are near
duplicates: a split that puts one group on both sides inflates every score, so splits are
made by group, stratified by class.
"""

from __future__ import annotations

import csv
import logging
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from monitor.errors import UserError
from monitor.ops.logs import kv

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
UCF_GROUP = re.compile(r"_g(\d+)_")
TRAILING_CLIP_NUMBER = re.compile(r"_\d+$")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    group: str
    label2: int | None = None  # the coarse class (action_class) in two-output image mode


@dataclass(frozen=True)
class Dataset:
    samples: tuple[Sample, ...]
    labels: tuple[str, ...]
    labels2: tuple[str, ...] = ()  # action classes, image mode
    kind: str = "video"  # video | image


def group_of(path: Path, group_regex: re.Pattern | None = None) -> str:
    """Which source a clip comes from: --group-regex, UCF101's gNN, else the name less its clip number (HMDB51)."""
    stem = path.stem
    if group_regex is not None:
        match = group_regex.search(stem)
        if match:
            return match.group(1) if match.groups() else match.group(0)
        return stem
    match = UCF_GROUP.search(stem)
    if match:
        return f"{path.parent.name}/g{match.group(1)}"
    return f"{path.parent.name}/{TRAILING_CLIP_NUMBER.sub('', stem)}"


def video_folder(root: Path, group_regex: str | None = None) -> Dataset:
    """One subfolder per class holding its videos."""
    if not root.is_dir():
        raise UserError(f"{root}: not a folder (expected one subfolder of videos per class)")
    regex = _compile(group_regex)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    problems, samples = [], []
    for i, folder in enumerate(classes):
        videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            problems.append(f"{folder}: class '{folder.name}' has no videos ({', '.join(sorted(VIDEO_SUFFIXES))})")
        samples += [Sample(v, i, group_of(v, regex)) for v in videos]
    if len(classes) < 2:
        problems.append(f"{root}: found {len(classes)} class folders, need at least 2")
    if problems:
        raise UserError(problems)
    return Dataset(tuple(samples), tuple(c.name for c in classes))


def image_csv(path: Path, labels: tuple[str, ...] | None = None, labels2: tuple[str, ...] | None = None,
              group_regex: str | None = None) -> Dataset:
    """`path,action[,action_class]` rows; paths relative to the CSV. Label order: given (a model's), or sorted.

    An image is its own group unless `group_regex` names its source (frames of one video or camera).
    """
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    regex = _compile(group_regex)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [(reader.line_num, row) for row in reader]
    columns = list(reader.fieldnames or [])
    if columns[:2] != ["path", "action"] or len(columns) > 3 or (len(columns) == 3 and columns[2] != "action_class"):
        raise UserError(f"{path}: line 1: columns are {columns or 'missing'}; expected path,action[,action_class]")
    missing = [f"{path}:{line}: {next(c for c in columns if not row.get(c))}: missing"
               for line, row in rows if not all(row.get(c) for c in columns)]
    if missing:
        raise UserError(missing)
    two = len(columns) == 3
    labels = labels or tuple(sorted({r["action"] for _, r in rows}))
    labels2 = (labels2 or tuple(sorted({r["action_class"] for _, r in rows}))) if two else ()
    problems, samples = [], []
    for line, row in rows:
        image = (path.parent / row["path"]).resolve()
        if not image.is_file():
            problems.append(f"{path}:{line}: path: image not found: {row['path']}")
        elif row["action"] not in labels:
            problems.append(f"{path}:{line}: action: '{row['action']}' is not one of the model's labels")
        elif two and row["action_class"] not in labels2:  # only when the model's classes are given
            problems.append(f"{path}:{line}: action_class: '{row['action_class']}' is not one of the model's "
                            f"action classes ({', '.join(labels2)})")
        else:
            label2 = labels2.index(row["action_class"]) if two else None
            group = group_of(image, regex) if regex else image.stem
            samples.append(Sample(image, labels.index(row["action"]), group, label2))
    if problems:
        raise UserError(problems)
    return Dataset(tuple(samples), labels, labels2, kind="image")


def check_trainable(data: Dataset, source: Path, min_per_class: int) -> None:
    counts: defaultdict[int, int] = defaultdict(int)
    for s in data.samples:
        counts[s.label] += 1
    problems = [f"{source}: class '{name}' has {counts[i]} clip(s); at least {min_per_class} are needed to train and test"
                for i, name in enumerate(data.labels) if counts[i] < min_per_class]
    if problems:
        raise UserError(problems)


def grouped_split(samples: tuple[Sample, ...], fractions: tuple[float, ...], seed: int) -> list[list[Sample]]:
    """Split into len(fractions) parts; every group lands in exactly one part; stratified by class.

    Each class's groups are shuffled and dealt to the parts in proportion to their clip
    counts; every part gets at least one group of a class that has enough groups.
    """
    by_group: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_group[s.group].append(s)
    by_class: dict[int, list[str]] = defaultdict(list)
    for group, members in sorted(by_group.items()):
        by_class[members[0].label].append(group)
    rng = random.Random(seed)  # nosec B311  # a reproducible split of the data, no secret
    parts: list[list[Sample]] = [[] for _ in fractions]
    for label in sorted(by_class):
        groups = by_class[label]
        rng.shuffle(groups)
        total = sum(len(by_group[g]) for g in groups)
        filled = [0] * len(fractions)
        # smaller parts first, so test and validation get their share before training takes the rest
        order = sorted(range(len(fractions)), key=lambda i: fractions[i])
        for g in groups:
            target = next((i for i in order if filled[i] == 0), None) if len(groups) >= len(fractions) else None
            if target is None:
                target = min(order, key=lambda i: filled[i] / total - fractions[i])
            filled[target] += len(by_group[g])
            parts[target] += by_group[g]
    return parts


def grouped_folds(samples: tuple[Sample, ...] | list[Sample], k: int, seed: int) -> list[list[int]]:
    """Indices of the validation clips of up to k folds: every group in one fold, each class's groups dealt in turn.

    A class with a single group is never held out (a fold without it could not learn it): it is trained
    on in every fold and its clips are not validated. Folds that receive no group are dropped.
    """
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_group[s.group].append(i)
    by_class: dict[int, list[str]] = defaultdict(list)
    for group, members in sorted(by_group.items()):
        by_class[samples[members[0]].label].append(group)
    rng = random.Random(seed)  # nosec B311  # a reproducible shuffle of folds, no secret
    folds: list[list[int]] = [[] for _ in range(k)]
    turn = 0  # carried across classes, so that the folds stay the same size
    for label in sorted(by_class):
        groups = by_class[label]
        if len(groups) < 2:
            continue
        rng.shuffle(groups)
        for group in groups:
            folds[turn % k] += by_group[group]
            turn += 1
    return [sorted(f) for f in folds if f]


def _compile(pattern: str | None) -> re.Pattern | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UserError(f"--group-regex: not a regular expression: {exc}") from None


def log_split(names: list[str], parts: list[list[Sample]]) -> None:
    log.info(kv(event="split", **{n: len(p) for n, p in zip(names, parts, strict=True)},
                groups="/".join(str(len({s.group for s in p})) for p in parts)))
