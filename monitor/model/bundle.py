"""Model bundles: a directory with model.yaml, the head file and nothing large.

The bundle's hash (model.yaml + head file) is its version: every violation row records it.
Backbone weights are referenced (imagenet | path | none), never stored in the bundle.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from monitor.errors import UserError
from monitor.fileio import sha256_file
from monitor.model.backbones import BACKBONES, Backbone, build_backbone
from monitor.yamlfile import StrictModel, load_model

MANIFEST = "model.yaml"


class BackboneSpec(StrictModel):
    name: Literal[BACKBONES]  # type: ignore[valid-type]
    weights: str = "imagenet"  # imagenet | none | a file path (relative to the bundle)
    sha256: str | None = None  # of the weights file, checked at load
    input_size: tuple[int, int] | None = None  # (height, width); tflite reads it from the model
    seed: int = 0  # for weights: none

    @model_validator(mode="after")
    def _tflite_needs_file(self) -> BackboneSpec:
        if self.name == "tflite" and self.weights in ("imagenet", "none"):
            raise ValueError("a tflite backbone needs weights: PATH to a .tflite file")
        return self


class WindowSpec(StrictModel):
    frames: int = Field(default=16, ge=1, le=512)  # T
    sample_fps: float = Field(default=4.0, gt=0, le=60)
    stride: int = Field(default=4, ge=1)  # S: classify every S new embeddings
    # offline only (evaluate, predict): how the training clips were sampled; live cameras always use sample_fps
    clip_sampling: Literal["fps", "uniform"] = "fps"


class HeadSpec(StrictModel):
    kind: str = "gru"
    file: str = "head.keras"
    parameters: int | None = None  # weights in the head (all members of an ensemble), from its summary
    members: int = Field(default=1, ge=1)  # an ensemble's models, averaged inside the head file


class ModelManifest(StrictModel):
    format: Literal[1] = 1
    name: str = "model"
    backbone: BackboneSpec
    window: WindowSpec = WindowSpec()
    labels: list[str] = Field(min_length=2)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    # the names of a two-output head's second output (action_class), in the output's order
    action_classes: list[str] = Field(default_factory=list)
    head: HeadSpec = HeadSpec()
    training: dict = Field(default_factory=dict)  # how the head was trained: schedule, folds, augmentation
    evaluation: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if any(not label or len(label) > 64 for label in self.labels):
            raise ValueError("labels must be 1 to 64 characters long")
        if len(set(self.action_classes)) != len(self.action_classes):
            raise ValueError("action_classes must be unique")
        for group, members in self.groups.items():
            unknown = sorted(set(members) - set(self.labels))
            if unknown:
                raise ValueError(f"group '{group}' names unknown labels: {', '.join(unknown)}")
        return self


class Bundle:
    def __init__(self, path: Path, manifest: ModelManifest):
        self.path = path
        self.manifest = manifest
        self.hash = bundle_hash(path, manifest)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def head_file(self) -> Path:
        return self.path / self.manifest.head.file

    def weights_location(self) -> str:
        w = self.manifest.backbone.weights
        if w in ("imagenet", "none"):
            return w
        p = Path(w).expanduser()
        return str(p if p.is_absolute() else self.path / p)

    def build_backbone(self) -> Backbone:
        spec = self.manifest.backbone
        where = f"{self.path / MANIFEST}: backbone"
        weights = self.weights_location()
        if spec.sha256 and weights not in ("imagenet", "none"):
            if Path(weights).is_file() and sha256_file(Path(weights)) != spec.sha256:
                raise UserError(f"{where}.sha256: {weights} does not match the recorded sha256 (wrong or altered weights file)")
        return build_backbone(spec.name, weights, spec.input_size, spec.seed, where)


def bundle_hash(path: Path, manifest: ModelManifest) -> str:
    digest = hashlib.sha256()
    for name in (MANIFEST, manifest.head.file):
        f = path / name
        digest.update(name.encode() + b"\0")
        if f.is_file():
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def load_bundle(path: str | Path) -> Bundle:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: model bundle not found (expected a directory with {MANIFEST})")
    manifest = load_model(ModelManifest, path / MANIFEST)
    if not (path / manifest.head.file).is_file():
        raise UserError(f"{path / MANIFEST}: head.file: {manifest.head.file} not found in the bundle")
    return Bundle(path, manifest)


def write_manifest(path: Path, manifest: ModelManifest) -> None:
    path.mkdir(parents=True, exist_ok=True)
    data = manifest.model_dump(mode="json", exclude_none=True)
    (path / MANIFEST).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
