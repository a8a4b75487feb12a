"""`har-monitor models optimize`: convert a bundle's backbone to a faster engine, once, and check it.

The Keras backbone (its uint8 -> embedding graph, preprocessing included) goes through OpenVINO's converter;
int8 adds NNCF's post-training quantization, calibrated on frames of the site's own clips. The result is
checked against the fp32 TensorFlow reference on held-out windows, sampled and windowed as the daemon does:
cosine similarity of the embeddings and top-1 agreement of the bundle's head. Under the threshold it is
refused (nothing stored) unless forced, which the record and every violation it decides then say.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from monitor.errors import UserError
from monitor.fileio import atomic_write, sha256_file
from monitor.model.backbones import BACKBONES, keras_graph
from monitor.model.bundle import MANIFEST, Bundle, load_bundle
from monitor.model.engines import (
    BUILT,
    MIN_AGREEMENT,
    AccuracyCheck,
    EngineRecord,
    Speed,
    engines_dir,
    openvino_compile,
    openvino_embed,
    source_hash,
    stem,
)
from monitor.model.frames import read_frames
from monitor.model.windowing import clip_windows
from monitor.ops.logs import kv
from monitor.training.dataset import VIDEO_SUFFIXES
from monitor.training.fit import predict_outputs

log = logging.getLogger(__name__)
CALIBRATION_FRAMES = 300  # NNCF's own default subset: more barely moves the ranges
CHECK_FRAMES = 480  # held-out frames embedded by both engines (a minute or two of InceptionV3 at 299 on 2 cores)
BATCH = 8


@dataclass(frozen=True)
class OptimizeOptions:
    model_dir: Path
    engine: str = "openvino"
    precision: str = "int8"
    calibration: Path | None = None  # a folder of the site's clips (default: the bundle's data.csv)
    force: bool = False
    min_agreement: float = MIN_AGREEMENT
    calibration_frames: int = CALIBRATION_FRAMES
    check_frames: int = CHECK_FRAMES


@dataclass(frozen=True)
class Optimized:
    record: EngineRecord
    path: Path  # the record's path (stored or, when refused, where it would have been)
    stored: bool


@dataclass(frozen=True)
class Frames:
    calibration: np.ndarray  # uint8 [N, H, W, 3]
    check: list[np.ndarray]  # held-out frames, one array per clip (windows never span two clips)
    data: str  # where they came from


def optimize(opts: OptimizeOptions) -> Optimized:
    """Convert, check, measure, and store unless refused."""
    bundle = load_bundle(opts.model_dir)
    spec = bundle.manifest.backbone
    _check_request(bundle, opts)
    size = spec.input_size or BACKBONES[spec.name].default_size
    graph = keras_graph(spec.name, bundle.weights_location(), size, spec.seed, f"{bundle.path / MANIFEST}: backbone")
    frames = gather_frames(bundle, opts, size)
    model = convert(graph.function, opts.precision, frames.calibration)
    compiled = openvino_compile(model, opts.precision)
    check = accuracy_check(bundle, graph.function, openvino_embed(compiled), frames, opts)
    speed = measure(graph.function, openvino_embed(compiled), np.concatenate(frames.check))
    source = source_hash(bundle)
    path = engines_dir(bundle) / f"{stem(opts.engine, opts.precision, source)}.yaml"
    record = EngineRecord(engine="openvino", precision=opts.precision,  # type: ignore[arg-type]
                          backbone=spec.name, source=source, bundle=bundle.hash, files={}, check=check, speed=speed,
                          created_at=datetime.now(timezone.utc), versions=_versions(opts.precision))
    log.info(kv(event="engine_checked", engine=opts.engine, precision=opts.precision, passed=check.passed,
                top1_agreement=check.top1_agreement, cosine_mean=check.cosine_mean, cosine_min=check.cosine_min,
                fps=speed.fps, tensorflow_fps=speed.tensorflow_fps))
    if not check.passed and not opts.force:
        return Optimized(record, path, stored=False)
    return Optimized(store(model, path, record), path, stored=True)


def _check_request(bundle: Bundle, opts: OptimizeOptions) -> None:
    name = bundle.manifest.backbone.name
    if opts.engine == "tensorflow":
        raise UserError("--engine: tensorflow is the reference engine: there is nothing to convert")
    if opts.engine not in BUILT:
        raise UserError(f"--engine: {opts.engine} is not built in this version (use openvino)")
    if BACKBONES[name].keras_app is None:
        raise UserError(f"{bundle.path / MANIFEST}: backbone.name: {name} is not a Keras network: only those convert")
    needed = ["openvino"] + (["nncf"] if opts.precision == "int8" else [])
    import importlib.util

    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"--engine: {' and '.join(missing)} not installed (pip install 'har-monitor[openvino]')")
    if not 0.0 <= opts.min_agreement <= 1.0:
        raise UserError(f"--min-agreement: {opts.min_agreement} is not between 0 and 1")


# -- frames ---------------------------------------------------------------------------------------

def gather_frames(bundle: Bundle, opts: OptimizeOptions, size: tuple[int, int]) -> Frames:
    """Calibration frames and held-out clips, sampled and resized as a live camera's.

    From `--calibration`: int8 calibrates on every other clip and checks on the rest (one clip: its first half
    calibrates); fp32 and bf16 need no calibration and check on all. Without it: the bundle's data.csv, whose
    training clips calibrate and whose test clips check.
    """
    calibrate, check, data = _clip_split(bundle, opts)
    fps = bundle.manifest.window.sample_fps
    per_check = max(bundle.manifest.window.frames, opts.check_frames // max(1, len(check)))
    check_frames = [f for f in (_read(p, size, fps, per_check) for p in check) if len(f)]
    calib = [f for f in (_read(p, size, fps, None) for p in calibrate) if len(f)]
    if opts.precision == "int8" and len(calibrate) == 0 and check_frames:  # one clip: its first half calibrates
        whole = check_frames[0]
        calib, check_frames = [whole[: len(whole) // 2]], [whole[len(whole) // 2:]]
    if not check_frames or not sum(len(f) for f in check_frames):
        raise UserError(f"{data}: no readable frames to check the conversion on")
    calibration = np.concatenate(calib) if calib else np.empty((0, *size, 3), np.uint8)
    if opts.precision == "int8" and not len(calibration):
        raise UserError(f"{data}: no readable frames to calibrate int8 on")
    if len(calibration) > opts.calibration_frames:  # spread over every clip, not the first ones
        calibration = calibration[np.linspace(0, len(calibration) - 1, opts.calibration_frames).round().astype(int)]
    return Frames(calibration, check_frames, data)


def _clip_split(bundle: Bundle, opts: OptimizeOptions) -> tuple[list[Path], list[Path], str]:
    if opts.calibration is not None:
        root = opts.calibration
        if not root.is_dir():
            raise UserError(f"--calibration: {root} is not a folder of clips")
        clips = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if not clips:
            raise UserError(f"--calibration: {root} has no videos ({', '.join(sorted(VIDEO_SUFFIXES))})")
        if opts.precision != "int8" or len(clips) == 1:  # one int8 clip: gather_frames halves it
            return [], clips, str(root)
        return clips[0::2], clips[1::2], str(root)
    table = bundle.path / "data.csv"
    if not table.is_file():
        raise UserError(f"--calibration: {bundle.path} has no data.csv (written by `train`): give a folder of the "
                        "site's clips")
    with open(table, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if Path(r.get("path") or "").is_file()]
    train = [Path(r["path"]) for r in rows if r.get("part") == "train"]
    test = [Path(r["path"]) for r in rows if r.get("part") == "test"]
    if not test:
        raise UserError(f"--calibration: the test clips {table} names are not found here: give a folder of the "
                        "site's clips")
    return train if opts.precision == "int8" else [], test, f"{table} (training clips calibrate, test clips check)"


def _read(path: Path, size: tuple[int, int], fps: float, limit: int | None) -> np.ndarray:
    try:
        frames = read_frames(str(path), size, fps)
    except Exception as exc:  # an unreadable clip is skipped, as training skips it
        log.warning(kv(event="clip_unreadable", path=str(path), error=str(exc)[:200]))
        return np.empty((0, *size, 3), np.uint8)
    return frames[:limit] if limit else frames


# -- conversion, check, speed, store --------------------------------------------------------------

def convert(function: Any, precision: str, calibration: np.ndarray) -> Any:
    """OpenVINO's model of the Keras graph; int8 quantized by NNCF on `calibration` (one frame per sample)."""
    import openvino as ov

    model = ov.convert_model(function)
    if precision != "int8":
        return model  # bf16 is a compile-time choice: the same model, weights kept in fp32
    import nncf

    dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
    return nncf.quantize(model, dataset, subset_size=len(calibration))


def _embed_all(embed: Any, frames: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(embed(frames[i:i + BATCH]), np.float32) for i in range(0, len(frames), BATCH)])


def accuracy_check(bundle: Bundle, reference: Any, candidate: Any, frames: Frames,
                   opts: OptimizeOptions) -> AccuracyCheck:
    """Embeddings of both engines on the held-out frames, and the bundle's head on every window of them.

    Windows are taken at every frame (stride 1), not the daemon's stride: every alignment a camera may
    have is compared.
    """
    import keras

    head = keras.models.load_model(bundle.head_file, compile=False)
    window = bundle.manifest.window
    cosines, agree = [], []
    for clip in frames.check:
        ref = _embed_all(lambda x: reference(x).numpy(), clip)
        got = _embed_all(candidate, clip)
        cosines.append(_cosine(ref, got))
        top_ref = predict_outputs(head, clip_windows(ref, window.frames, 1))[0].argmax(-1)
        top_got = predict_outputs(head, clip_windows(got, window.frames, 1))[0].argmax(-1)
        agree.append(top_ref == top_got)
    cos, same = np.concatenate(cosines), np.concatenate(agree)
    agreement = float(same.mean())
    passed = agreement >= opts.min_agreement
    return AccuracyCheck(data=frames.data, frames=len(cos), windows=len(same), cosine_mean=round(float(cos.mean()), 6),
                         cosine_min=round(float(cos.min()), 6), top1_agreement=round(agreement, 6),
                         threshold=opts.min_agreement, passed=passed, forced=opts.force and not passed)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray((a * b).sum(1) / np.maximum(norms, 1e-12), np.float64)


def measure(reference: Any, candidate: Any, frames: np.ndarray, rounds: int = 3) -> Speed:
    """Frames per second of both at BATCH, alternating rounds so that a busy machine slows both alike."""
    batch = np.resize(frames, (BATCH, *frames.shape[1:])) if len(frames) < BATCH else frames[:BATCH]
    runs: dict[str, Callable[[], object]] = {"reference": lambda: reference(batch).numpy(),
                                             "candidate": lambda: candidate(batch)}
    spent = dict.fromkeys(runs, 0.0)
    for run in runs.values():
        run()  # warm up
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            spent[name] += time.perf_counter() - start
    fps = {name: round(BATCH * rounds / max(seconds, 1e-9), 1) for name, seconds in spent.items()}
    return Speed(batch=BATCH, fps=fps["candidate"], tensorflow_fps=fps["reference"])


def store(model: Any, path: Path, record: EngineRecord) -> EngineRecord:
    """The model files, then the record naming their hashes (last: a record is never ahead of its files)."""
    import openvino as ov

    path.parent.mkdir(parents=True, exist_ok=True)
    xml, weights = path.with_suffix(".xml"), path.with_suffix(".bin")
    tmp = path.with_name(f".{path.stem}.tmp.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)  # fp32 weights: bf16 is chosen when compiling
    tmp.with_suffix(".bin").replace(weights)
    tmp.replace(xml)
    # OpenVINO reads the .bin with the .xml's own stem: renamed together, they stay paired
    record = record.model_copy(update={"files": {xml.name: sha256_file(xml), weights.name: sha256_file(weights)}})
    atomic_write(path, yaml.safe_dump(record.model_dump(mode="json"), sort_keys=False))
    log.info(kv(event="engine_stored", path=str(path), forced=record.check.forced))
    return record


def _versions(precision: str) -> dict[str, str]:
    import openvino
    import tensorflow as tf

    versions = {"openvino": openvino.__version__, "tensorflow": tf.__version__}
    if precision == "int8":
        import nncf

        versions["nncf"] = nncf.__version__
    return versions


def format_check(result: Optimized) -> str:
    r = result.record
    c = r.check
    lines = [f"{r.engine} {r.precision} of {r.backbone} (source {r.source[:12]}), checked on {c.data}:",
             f"  embeddings: {c.frames} frames, cosine similarity mean {c.cosine_mean:.4f}, min {c.cosine_min:.4f}",
             f"  head top-1 agreement: {c.top1_agreement:.4f} on {c.windows} windows (needs {c.threshold:.2f}): "
             + ("passed" if c.passed else "FAILED" + (" (stored: forced)" if c.forced else ""))]
    if r.speed:
        ratio = r.speed.fps / r.speed.tensorflow_fps if r.speed.tensorflow_fps else float("nan")
        lines.append(f"  speed at batch {r.speed.batch}: {r.speed.fps:.1f} frames/s, TensorFlow "
                     f"{r.speed.tensorflow_fps:.1f} ({ratio:.2f}x)")
    if result.stored:
        lines.append(f"stored: {result.path}")
    return "\n".join(lines)
