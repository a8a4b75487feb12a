"""Model bundles: a directory with model.yaml, the head file and nothing large.

The bundle's hash (model.yaml + head file) is its version: every violation row records it.
Backbone weights are referenced (imagenet | path | none), never stored in the bundle.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, JsonValue, field_validator, model_validator

from monitor.errors import UserError
from monitor.fileio import atomic_output, atomic_write, sha256_file
from monitor.model.backbones import BACKBONES, Backbone, build_backbone
from monitor.yamlfile import StrictModel, load_model

MANIFEST = "model.yaml"


Side = Annotated[int, Field(ge=8, le=2048)]


def _enum_of_backbones(schema: dict[str, JsonValue]) -> None:
    """Editors offer the backbones registered when the schema is made (a registry, not a fixed Literal)."""
    schema["enum"] = list[JsonValue](BACKBONES)


class BackboneSpec(StrictModel):
    """The frame backbone: which network, which weights, what input size."""

    name: str = Field(description="A registered backbone.", json_schema_extra=lambda schema: _enum_of_backbones(schema))
    weights: str = Field(default="imagenet", description="`imagenet` (Keras downloads them once), `none` (seeded "
                         "random weights: tests and demos) or a weights file path (relative to the bundle).")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the weights file, "
                               "checked when the bundle loads.")
    input_size: tuple[Side, Side] | None = Field(default=None, description="[height, width] of the frames the "
                                                 "backbone takes (default: the backbone's own; tflite reads it from "
                                                 "the model).")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="The random seed of `weights: none`.")

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone '{name}' (expected one of {', '.join(BACKBONES)})")
        return name

    @model_validator(mode="after")
    def _weights_file_if_needed(self) -> BackboneSpec:
        if BACKBONES[self.name].needs_weights_file and self.weights in ("imagenet", "none"):
            raise ValueError(f"a {self.name} backbone needs weights: PATH to its model file")
        return self


class WindowSpec(StrictModel):
    """How embeddings become windows for the head."""

    frames: int = Field(default=16, ge=1, le=512, description="T: embeddings per window.")
    sample_fps: float = Field(default=4.0, gt=0, le=60, description="Frames per second sampled from cameras (a "
                              "camera's `sample_fps` may override it).")
    stride: int = Field(default=4, ge=1, le=512, description="S: classify every S new embeddings.")
    clip_sampling: Literal["fps", "uniform"] = Field(default="fps", description="Offline only (evaluate, predict): "
                                                     "how the training clips were sampled (`uniform`: `frames` spread "
                                                     "over each clip); live cameras always use `sample_fps`.")


class HeadSpec(StrictModel):
    """The temporal head."""

    kind: str = Field(default="gru", description="The head's kind (`har-monitor train --head`).")
    file: str = Field(default="head.keras", description="The head's Keras file, in the bundle.")
    parameters: int | None = Field(default=None, ge=0, le=10**10, description="Weights in the head (every member "
                                   "of an ensemble), from its summary (information only).")
    members: int = Field(default=1, ge=1, le=100, description="The models of an ensemble, averaged inside the "
                         "head file (`train --members`).")


class ModelManifest(StrictModel):
    """model.yaml: what a model bundle is. Written by `har-monitor train`; read by `run`, `check`, `evaluate`."""

    format: Literal[1] = Field(default=1, description="The manifest's format version.")
    name: str = Field(default="model", description="The model's name.")
    backbone: BackboneSpec = Field(description=BackboneSpec.__doc__)
    window: WindowSpec = Field(default=WindowSpec(), description=WindowSpec.__doc__)
    labels: list[str] = Field(min_length=2, description="The head's output labels, in order (1 to 64 characters).")
    groups: dict[str, list[str]] = Field(default_factory=dict, description="Names for sets of labels that rules "
                                         "may name (a group's confidence is its labels' summed).")
    action_classes: list[str] = Field(default_factory=list, description="A two-output image head's second output "
                                      "(action_class) names, in the output's order.")
    head: HeadSpec = Field(default=HeadSpec(), description=HeadSpec.__doc__)
    training: dict[str, Any] = Field(default_factory=dict, description="How the head was trained: schedule, folds, "
                                     "cross-validation, augmentation (information only).")
    evaluation: dict[str, Any] = Field(default_factory=dict, description="The test-set evaluation `train` wrote "
                             "(information only).")

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

    def build_backbone(self, deferred: bool = False) -> Backbone:
        """The bundle's backbone (`deferred`: built on its first frames, see `backbones.build_backbone`)."""
        spec = self.manifest.backbone
        where = f"{self.path / MANIFEST}: backbone"
        weights = self.weights_location()
        if (spec.sha256 and weights not in ("imagenet", "none") and Path(weights).is_file()
                and sha256_file(Path(weights)) != spec.sha256):
                raise UserError(f"{where}.sha256: {weights} does not match the recorded sha256 (wrong or altered weights file)")
        return build_backbone(spec.name, weights, spec.input_size, spec.seed, where, deferred)


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


def write_bundle(path: Path, manifest: ModelManifest, head: Any) -> None:
    """Write a bundle: the head (a Keras model) and model.yaml, each whole or not at all, model.yaml last."""
    with atomic_output(path / manifest.head.file) as tmp:
        head.save(tmp)
    write_manifest(path, manifest)


def write_manifest(path: Path, manifest: ModelManifest) -> None:
    data = manifest.model_dump(mode="json", exclude_none=True)
    atomic_write(path / MANIFEST, yaml.safe_dump(data, sort_keys=False))
