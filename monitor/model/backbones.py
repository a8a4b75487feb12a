"""Frame backbones: uint8 RGB frames [N, H, W, 3] -> float32 embeddings [N, D].

One builder per backbone with the same signature, each with its own preprocessing next to
it (as Keras applications do), registered by name in BACKBONES (as mmaction2's registries do):
adding a backbone is one decorated function here. Keras backbones run as one compiled `tf.function` with a
batch-agnostic input signature: eager Keras calls cost ~200 ms each and a fixed signature
never retraces. TensorFlow places them on a GPU when there is one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitor.errors import UserError
from monitor.ops.logs import kv

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backbone:
    name: str
    input_size: tuple[int, int]  # (height, width)
    dim: int
    embed: Callable[[np.ndarray], np.ndarray]


Builder = Callable[[str, tuple[int, int], int, str], Backbone]  # (weights, input size, seed, where) -> Backbone
KerasApp = tuple[Callable[..., Any], Callable[[Any], Any]]  # (application constructor, its preprocess_input)


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: its builder and what the rest of the code needs to know about it."""

    name: str
    build: Builder
    default_size: tuple[int, int]  # (height, width) when a bundle gives none
    min_side: int = 1  # the smallest input side the network accepts
    needs_weights_file: bool = False  # weights: PATH only (no imagenet, no random init)
    size_from_model: bool = False  # the model file fixes the input size (input_size is not used)
    keras_app: Callable[[], KerasApp] | None = None  # a Keras application: other engines can convert its graph
    dim: int = 0  # a Keras application's embedding size (its pooled features), known before it is built


BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(name: str, default_size: tuple[int, int], *, min_side: int = 1,
                      needs_weights_file: bool = False, size_from_model: bool = False) -> Callable[[Builder], Builder]:
    """Register a builder `(weights, input_size, seed, where) -> Backbone` under `name`: adding a backbone is
    one decorated function here; bundles, `train --backbone`, its help and the config schema read this registry."""
    def register(build: Builder) -> Builder:
        BACKBONES[name] = BackboneEntry(name, build, default_size, min_side, needs_weights_file, size_from_model)
        return build
    return register


def backbone_choices() -> str:
    """The registered names as `--backbone` takes them (a backbone that needs a file as NAME:PATH)."""
    return " | ".join(f"{name}:PATH" if entry.needs_weights_file else name for name, entry in BACKBONES.items())


def build_backbone(name: str, weights: str, input_size: tuple[int, int] | None = None, seed: int = 0,
                   where: str = "backbone", deferred: bool = False) -> Backbone:
    """Build a registered backbone. `weights`: 'imagenet', 'none' (seeded random init: tests and demos) or a file path.

    `deferred`: a Keras network is built when it first embeds frames, for extraction behind a feature cache: a run
    whose features all come from the cache (another head on the same clips, `evaluate`, `models compare`) never
    spends the seconds of building it. Its name, size and weights file are checked now, its weights when it is built.

    >>> bb = build_backbone("inception_v3", "none", (75, 75))
    >>> bb.embed(np.zeros((2, 75, 75, 3), np.uint8)).shape
    (2, 2048)
    """
    entry = BACKBONES.get(name)
    if entry is None:
        raise UserError(f"{where}.name: unknown backbone '{name}' (expected one of {', '.join(BACKBONES)})")
    size = input_size or entry.default_size
    if min(size) < entry.min_side:
        raise UserError(f"{where}.input_size: {name} needs at least {entry.min_side}x{entry.min_side}, got {size[0]}x{size[1]}")
    if deferred and entry.keras_app is not None:
        return _deferred(entry, weights, size, seed, where)
    return entry.build(weights, size, seed, where)


def _deferred(entry: BackboneEntry, weights: str, size: tuple[int, int], seed: int, where: str) -> Backbone:
    if weights not in ("none", "imagenet") and not Path(weights).is_file():
        raise UserError(f"{where}.weights: file not found: {weights}")
    built: list[Backbone] = []

    def embed(frames: np.ndarray) -> np.ndarray:
        if not built:
            backbone = entry.build(weights, size, seed, where)
            if backbone.dim != entry.dim:
                raise RuntimeError(f"{entry.name}: registered with dim {entry.dim}, built with {backbone.dim}")
            built.append(backbone)
        return built[0].embed(frames)

    return Backbone(entry.name, size, entry.dim, embed)


# -- Keras applications: one function each, with its own preprocessing ---------------------------

def register_keras(name: str, default_size: tuple[int, int], min_side: int,
                   dim: int) -> Callable[[Callable[[], KerasApp]], Callable[[], KerasApp]]:
    """Register a Keras application: `app()` returns its constructor and preprocessing, `dim` its embedding size.
    Its graph (uint8 frames in, embeddings out: `keras_graph`) is what TensorFlow runs and other engines convert."""
    def register(app: Callable[[], KerasApp]) -> Callable[[], KerasApp]:
        def build(weights: str, size: tuple[int, int], seed: int, where: str) -> Backbone:
            return _keras(name, weights, size, seed, where)
        BACKBONES[name] = BackboneEntry(name, build, default_size, min_side, keras_app=app, dim=dim)
        return app
    return register


@register_keras("inception_v3", (299, 299), min_side=75, dim=2048)
def inception_v3() -> KerasApp:
    from keras.applications import inception_v3 as app

    return app.InceptionV3, app.preprocess_input


@register_keras("mobilenet_v2", (224, 224), min_side=32, dim=1280)
def mobilenet_v2() -> KerasApp:
    from keras.applications import mobilenet_v2 as app

    return app.MobileNetV2, app.preprocess_input


@register_keras("resnet50", (224, 224), min_side=32, dim=2048)
def resnet50() -> KerasApp:
    from keras.applications import resnet50 as app

    return app.ResNet50, app.preprocess_input


@register_keras("vgg16", (224, 224), min_side=32, dim=512)
def vgg16() -> KerasApp:
    from keras.applications import vgg16 as app

    return app.VGG16, app.preprocess_input


@dataclass(frozen=True)
class KerasGraph:
    """A Keras backbone as one compiled function: uint8 frames [N, H, W, 3] -> float32 [N, D], preprocessing inside."""

    function: Any  # a tf.function with a batch-agnostic uint8 input signature
    dim: int


def keras_graph(name: str, weights: str, size: tuple[int, int], seed: int = 0, where: str = "backbone") -> KerasGraph:
    """The graph of a registered Keras backbone (TensorFlow runs it; `models optimize` converts it)."""
    import keras
    import tensorflow as tf

    entry = BACKBONES[name]
    if entry.keras_app is None:
        raise UserError(f"{where}.name: {name} is not a Keras network")
    app, preprocess = entry.keras_app()
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # already initialized by an earlier model in this process
            tf.config.experimental.set_memory_growth(gpu, True)  # share the GPU instead of grabbing all of it
    shape = (*size, 3)
    if weights == "none":
        keras.utils.set_random_seed(seed)  # the same random backbone in training and at run time
        model = app(include_top=False, weights=None, input_shape=shape, pooling="avg")
    elif weights == "imagenet":
        try:
            model = app(include_top=False, weights="imagenet", input_shape=shape, pooling="avg")
        except Exception as exc:  # no internet on an air-gapped site
            raise UserError(f"{where}.weights: cannot get ImageNet weights for {name} ({exc}); "
                            "copy the weights file to the site and give its path") from None
    else:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"{where}.weights: file not found: {path}")
        model = app(include_top=False, weights=None, input_shape=shape, pooling="avg")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # Keras only warns when some layers found no weights
            try:
                model.load_weights(str(path))
                error = next((str(w.message) for w in caught if "freshly-initialized" in str(w.message)), None)
            except Exception as exc:
                error = str(exc)
        if error:
            raise UserError(f"{where}.weights: {path} is not {name} weights: {error.splitlines()[0]}")

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.uint8)], jit_compile=False)  # type: ignore[untyped-decorator]
    def embed_graph(frames: tf.Tensor) -> tf.Tensor:
        return model(preprocess(tf.cast(frames, tf.float32)), training=False)

    return KerasGraph(embed_graph, int(model.output_shape[-1]))


def _keras(name: str, weights: str, size: tuple[int, int], seed: int, where: str) -> Backbone:
    import tensorflow as tf

    graph = keras_graph(name, weights, size, seed, where)

    def embed(frames: np.ndarray) -> np.ndarray:
        return np.asarray(graph.function(frames).numpy())

    devices = [d.device_type for d in tf.config.list_logical_devices()]
    log.info(kv(event="backbone_built", backbone=name, weights=_shown(weights), input=f"{size[0]}x{size[1]}",
                dim=graph.dim, devices=",".join(devices)))
    return Backbone(name, size, graph.dim, embed)


# -- the others ----------------------------------------------------------------------------------

@register_backbone("raw", (64, 64))
def raw(weights: str, size: tuple[int, int], seed: int, where: str) -> Backbone:
    """Pixels scaled to [0, 1] and flattened: [N, H*W*3], for heads that learn from frames end to end
    (conv3d reshapes them back to frames)."""
    dim = size[0] * size[1] * 3

    def embed(frames: np.ndarray) -> np.ndarray:
        return frames.reshape(len(frames), dim).astype(np.float32) / 255.0

    return Backbone("raw", size, dim, embed)


def _shown(weights: str) -> str:
    return weights if weights in ("none", "imagenet") else Path(weights).name


def _interpreter(path: Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # older installs: TensorFlow's own (deprecated) copy
        from tensorflow.lite import Interpreter
    return Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)


@register_backbone("tflite", (224, 224), needs_weights_file=True, size_from_model=True)
def tflite(weights: str, size: tuple[int, int], seed: int, where: str) -> Backbone:
    """Any TFLite feature extractor: input size and dtype are read from the model, output dequantized.

    Such models have a fixed batch of 1, so frames are run one by one (on CPU the batch
    barely changes TFLite's throughput).
    """
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"{where}.weights: file not found: {path}")
    try:
        interp = _interpreter(path)
        interp.allocate_tensors()
    except Exception as exc:
        raise UserError(f"{where}.weights: {path} is not a TFLite model: {exc}") from None
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if len(inp["shape"]) != 4 or inp["shape"][3] != 3:
        raise UserError(f"{where}.weights: {path} takes input {list(inp['shape'])}, expected [1, H, W, 3] images")
    height, width = int(inp["shape"][1]), int(inp["shape"][2])
    in_dtype = inp["dtype"]
    out_scale, out_zero = out.get("quantization", (0.0, 0))
    dim = int(np.prod(out["shape"][1:]))

    def to_input(frame: np.ndarray) -> np.ndarray:
        if in_dtype == np.uint8:
            return frame[None]  # quantized models take raw pixels: their input scale maps them
        if in_dtype == np.int8:
            return (frame.astype(np.int16) - 128).astype(np.int8)[None]
        return (frame.astype(np.float32) / 127.5 - 1.0)[None]

    def embed(frames: np.ndarray) -> np.ndarray:
        vectors = np.empty((len(frames), dim), np.float32)
        for i, frame in enumerate(frames):
            interp.set_tensor(inp["index"], to_input(frame))
            interp.invoke()
            raw = interp.get_tensor(out["index"]).reshape(dim).astype(np.float32)
            vectors[i] = (raw - out_zero) * out_scale if out_scale else raw
        return vectors

    log.info(kv(event="backbone_built", backbone="tflite", weights=path.name, input=f"{height}x{width}", dim=dim))
    return Backbone("tflite", (height, width), dim, embed)
