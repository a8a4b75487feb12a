"""Inference engines for a bundle's backbone: TensorFlow (the reference) or a checked conversion beside the bundle.

`har-monitor models optimize` converts a bundle's Keras backbone once (monitor.training.optimize) and stores
it in MODEL_DIR/engines/ as `<engine>-<precision>-<source12>.xml/.bin` with a record (`.yaml`): which
backbone it came from (the source hash: network, input size, weights), the accuracy check against the fp32
TensorFlow reference on held-out windows, and the throughput measured then. Here the daemon picks the
engine from the site's `inference:` and the records: a record of another backbone, an altered model file or
a failed check is refused; `auto` takes the fastest passing conversion, else TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from monitor.errors import UserError
from monitor.fileio import sha256_file
from monitor.model.backbones import BACKBONES, Backbone
from monitor.model.bundle import Bundle
from monitor.ops.logs import kv
from monitor.yamlfile import StrictModel, load_model

log = logging.getLogger(__name__)

EngineName = Literal["tensorflow", "openvino", "onnxruntime"]
Precision = Literal["fp32", "bf16", "int8"]
ENGINES_DIR = "engines"  # inside the bundle
MIN_AGREEMENT = 0.99  # top-1 agreement with the reference below which a conversion is refused
BUILT = ("tensorflow", "openvino")  # onnxruntime is named in the config but not built yet


class AccuracyCheck(StrictModel):
    """A converted backbone against the fp32 TensorFlow reference, on frames it was not calibrated on."""

    data: str = Field(description="Where the held-out frames came from (a clips folder, or `synthetic`).")
    frames: int = Field(ge=0, description="Frames embedded by both.")
    windows: int = Field(ge=0, description="Windows of the bundle's head compared.")
    cosine_mean: float = Field(description="Mean cosine similarity of the embeddings.")
    cosine_min: float = Field(description="Smallest cosine similarity of the embeddings.")
    top1_agreement: float = Field(ge=0, le=1, description="Share of windows whose top-1 label is the reference's.")
    threshold: float = Field(ge=0, le=1, description="The agreement a conversion needs.")
    passed: bool = Field(description="top1_agreement >= threshold.")
    forced: bool = Field(default=False, description="Stored although it failed (`--force`).")


class Speed(StrictModel):
    """Frames per second of the conversion and of TensorFlow, measured in the same run of `models optimize`."""

    batch: int = Field(ge=1, description="Frames per call.")
    fps: float = Field(ge=0, description="The conversion's frames per second.")
    tensorflow_fps: float = Field(ge=0, description="TensorFlow's frames per second on the same frames.")


class EngineRecord(StrictModel):
    """engines/<engine>-<precision>-<source12>.yaml: what a stored conversion is and how it was checked."""

    format: Literal[1] = 1
    engine: EngineName
    precision: Precision
    backbone: str = Field(description="The bundle's backbone network.")
    source: str = Field(pattern=r"^[0-9a-f]{64}$", description="The source backbone's hash (source_hash).")
    bundle: str = Field(description="The hash of the bundle whose head made the check.")
    files: dict[str, str] = Field(description="The conversion's files in engines/, by name, with their SHA-256.")
    check: AccuracyCheck
    speed: Speed | None = None
    created_at: datetime
    versions: dict[str, str] = Field(default_factory=dict, description="The converter's package versions.")

    @property
    def model_hash(self) -> str:
        """The conversion's identity: a hash of its files' hashes (recorded with every violation it decides)."""
        blob = json.dumps(self.files, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class EngineChoice:
    """The engine a daemon runs the backbone on, and why (a non-Keras backbone: its own name, precision `native`)."""

    engine: str
    precision: str
    why: str
    record: EngineRecord | None = None
    record_path: Path | None = None

    @property
    def forced(self) -> bool:
        return bool(self.record and self.record.check.forced)

    @property
    def model_hash(self) -> str | None:
        return self.record.model_hash if self.record else None

    def describe(self) -> str:
        return f"{self.engine} {self.precision}" + (" (forced)" if self.forced else "")


def stem(engine: str, precision: str, source: str) -> str:
    return f"{engine}-{precision}-{source[:12]}"


def source_hash(bundle: Bundle) -> str:
    """What a conversion was made from: the network, its input size and its weights (a file by its content).

    A conversion is valid for any bundle with this backbone; another input size or weights file needs another.
    """
    spec = bundle.manifest.backbone
    weights = bundle.weights_location()
    if weights not in ("imagenet", "none"):
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"{bundle.path / 'model.yaml'}: backbone.weights: file not found: {path}")
        weights = "sha256:" + sha256_file(path)
    content = {"backbone": spec.name, "input_size": list(spec.input_size or BACKBONES[spec.name].default_size),
               "weights": weights, "seed": spec.seed if weights == "none" else None}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def engines_dir(bundle: Bundle) -> Path:
    return bundle.path / ENGINES_DIR


def load_records(bundle: Bundle) -> list[tuple[Path, EngineRecord]]:
    """The stored conversions of this bundle's folder (any backbone), each with its record's path."""
    found = []
    for path in sorted(engines_dir(bundle).glob("*.yaml")):
        try:
            found.append((path, load_model(EngineRecord, path)))
        except UserError as err:  # one bad record must not hide the others: it is reported when asked for
            log.warning(kv(event="engine_record_unreadable", path=str(path), error=err.problems[0]))
    return found


def installed(engine: str) -> bool:
    if engine == "tensorflow":
        return True
    import importlib.util

    return engine in BUILT and importlib.util.find_spec(engine) is not None


def choose_engine(bundle: Bundle, engine: str = "auto", precision: str | None = None,
                  where: str = "inference") -> EngineChoice:
    """The engine `inference: {engine, precision}` means for this bundle (nothing is built).

    `auto`: the fastest installed conversion of this backbone that passed its check with this bundle's head
    (and has `precision` when given), when it is faster than TensorFlow was in the same measurement; else
    TensorFlow fp32. A named engine must have such a conversion (a forced one counts: the user named it).
    """
    name = bundle.manifest.backbone.name
    if BACKBONES[name].keras_app is None:  # tflite, raw: they run as they are, and say so in the provenance
        if engine not in ("auto", "tensorflow"):
            raise UserError(f"{where}.engine: the bundle's {name} backbone is not a Keras network: it has no "
                            f"{engine} conversion (use auto)")
        return EngineChoice(name, "native", f"{name} runs as it is (only Keras backbones convert)")
    if engine == "tensorflow":
        if precision not in (None, "fp32"):
            raise UserError(f"{where}.precision: tensorflow runs fp32 only: use engine openvino after "
                            f"`har-monitor models optimize {bundle.path} --precision {precision}`")
        return EngineChoice("tensorflow", "fp32", "the reference engine")
    if engine not in ("auto", *BUILT):
        raise UserError(f"{where}.engine: {engine} is not built in this version (use openvino or tensorflow)")
    source = source_hash(bundle)
    records = [(p, r) for p, r in load_records(bundle) if engine in ("auto", r.engine)
               and precision in (None, r.precision)]
    if engine == "auto":
        return _auto(bundle, source, records)
    return _named(bundle, engine, precision, source, records, where)


def _auto(bundle: Bundle, source: str, records: list[tuple[Path, EngineRecord]]) -> EngineChoice:
    usable = [(p, r) for p, r in records if r.source == source and r.bundle == bundle.hash and r.check.passed
              and installed(r.engine) and _files_intact(p, r) is None]
    skipped = len(records) - len(usable)
    if skipped:
        log.info(kv(event="engines_skipped", count=skipped,
                    why="another backbone or head, a failed or forced check, not installed, or altered files"))
    if not usable:
        return EngineChoice("tensorflow", "fp32", "no passing conversion for this bundle (`har-monitor models optimize`)")
    path, best = max(usable, key=lambda pr: pr[1].speed.fps if pr[1].speed else 0.0)
    if best.speed is None or best.speed.fps <= best.speed.tensorflow_fps:
        return EngineChoice("tensorflow", "fp32", f"faster than the conversions ({path.stem}) when they were measured")
    why = (f"the fastest passing conversion: {best.speed.fps:.1f} frames/s against TensorFlow's "
           f"{best.speed.tensorflow_fps:.1f} (top-1 agreement {best.check.top1_agreement:.3f})")
    return EngineChoice(best.engine, best.precision, why, best, path)


def _named(bundle: Bundle, engine: str, precision: str | None, source: str,
           records: list[tuple[Path, EngineRecord]], where: str) -> EngineChoice:
    wanted = f"{engine}" + (f" {precision}" if precision else "")
    command = f"har-monitor models optimize {bundle.path} --engine {engine} --precision {precision or 'int8'}"
    if not installed(engine):
        raise UserError(f"{where}.engine: {engine} is not installed (pip install 'har-monitor[{engine}]')")
    mine = [(p, r) for p, r in records if r.source == source]
    if not mine:
        other = f" ({', '.join(p.name for p, _ in records)} converted another backbone: its source hash differs)" if records else ""
        raise UserError(f"{where}.engine: no {wanted} conversion of this bundle's backbone in {engines_dir(bundle)}"
                        f"{other}; run `{command}`")
    path, record = max(mine, key=lambda pr: pr[1].speed.fps if pr[1].speed else 0.0)
    problem = _files_intact(path, record)
    if problem:
        raise UserError(f"{path}: {problem}; run `{command}` again")
    if not (record.check.passed or record.check.forced):
        raise UserError(f"{path}: check: failed its accuracy check; run `{command}` again")
    if record.bundle != bundle.hash:
        log.warning(kv(event="engine_checked_with_another_head", record=path.name, bundle=bundle.hash,
                       checked_with=record.bundle, advice=f"run `{command}` again to check it with this head"))
    why = "named in the site" + (" (FORCED: it failed its accuracy check)" if record.check.forced else "")
    return EngineChoice(record.engine, record.precision, why, record, path)


def _files_intact(path: Path, record: EngineRecord) -> str | None:
    for name, digest in record.files.items():
        f = path.parent / name
        if not f.is_file():
            return f"files: {name} is missing"
        if sha256_file(f) != digest:
            return f"files: {name} does not match its recorded SHA-256 (altered)"
    return None


def build_engine(bundle: Bundle, choice: EngineChoice) -> Backbone:
    """The backbone on the chosen engine, with the Backbone interface the pipeline uses."""
    if choice.record is None:  # TensorFlow, or a backbone that runs as it is
        backbone = bundle.build_backbone()
    else:
        assert choice.record_path is not None  # choose_engine gives both
        backbone = openvino_backbone(choice.record_path, choice.record)
    log.info(kv(event="engine_chosen", engine=choice.engine, precision=choice.precision, forced=choice.forced,
                model=choice.model_hash or "-", why=choice.why))
    return backbone


# -- OpenVINO -------------------------------------------------------------------------------------

# THROUGHPUT: OpenVINO runs several streams, each on some of the cores; a batch is split over them and run at once
# (embed below). Measured on 2 cores, batches of 8-32 (bench/engines.py --hints): ahead of LATENCY (one stream,
# one request on every core), which wins only at a batch of 1, when a camera or two leave spare capacity anyway.
PERFORMANCE_HINT = "THROUGHPUT"


def openvino_compile(model: Any, precision: str, hint: str = PERFORMANCE_HINT) -> Any:
    """Compile for the CPU as the daemon runs it (the accuracy check compiles the same way).

    The precision hint is explicit: on a CPU with bf16 support OpenVINO would otherwise pick bf16 for fp32.
    """
    import openvino as ov

    precision_hint = "bf16" if precision == "bf16" else "f32"  # int8: the quantized layers run int8, the rest f32
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision_hint, "PERFORMANCE_HINT": hint})


def openvino_embed(compiled: Any) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 [N, H, W, 3] -> float32 [N, D] (the preprocessing is inside the converted graph).

    The batch is split over the compiled model's optimal number of requests (its streams), run at once, and
    each request's output is read after waiting for that request. Not an AsyncInferQueue with a callback: its
    wait_all can return before the last callbacks ran, so under load a batch got another batch's vectors or
    none (seen at 16 cameras). One caller at a time (the embedder thread): the requests are reused.
    """
    requests = [compiled.create_infer_request() for _ in range(int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))]

    def embed(frames: np.ndarray) -> np.ndarray:
        parts = np.array_split(np.ascontiguousarray(frames, np.uint8), min(len(requests), len(frames)))  # none empty
        running = list(zip(requests, parts, strict=False))
        for request, part in running:
            request.start_async({0: part})
        vectors = []
        for request, _ in running:
            request.wait()
            vectors.append(np.array(request.get_output_tensor(0).data, np.float32))  # a copy: the buffer is reused
        return np.concatenate(vectors)

    return embed


def openvino_backbone(record_path: Path, record: EngineRecord) -> Backbone:
    import openvino as ov

    xml = record_path.with_suffix(".xml")
    try:
        model = ov.Core().read_model(str(xml))
        compiled = openvino_compile(model, record.precision)
    except Exception as exc:  # a damaged file the hashes missed, or an OpenVINO that cannot read it
        raise UserError(f"{xml}: cannot load the {record.engine} model: {exc}") from None
    shape = compiled.input(0).get_partial_shape()
    height, width, dim = int(shape[1].get_length()), int(shape[2].get_length()), int(compiled.output(0).get_partial_shape()[1].get_length())
    return Backbone(record.backbone, (height, width), dim, openvino_embed(compiled))
