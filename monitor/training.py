"""Training a temporal head on labelled clips (the demo uses it; `har-monitor train` builds on it).

Clips go through the run-time path: `read_frames` (same sampling and FFmpeg resize as a
camera), the backbone, then `sliding_windows` (same windowing as the daemon).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.backbones import Backbone
from monitor.classifier import build_head
from monitor.logs import kv
from monitor.sources import read_frames
from monitor.windows import sliding_windows

log = logging.getLogger("monitor.training")


@dataclass(frozen=True)
class LabelledClip:
    path: Path
    label: int


def clip_features(backbone: Backbone, path: Path, sample_fps: float, batch: int = 32) -> np.ndarray:
    """[N, D] embeddings of a clip's sampled frames."""
    frames = read_frames(str(path), backbone.input_size, sample_fps)
    if not len(frames):
        return np.empty((0, backbone.dim), np.float32)
    return np.concatenate([backbone.embed(frames[i:i + batch]) for i in range(0, len(frames), batch)])


def windows_dataset(features: list[np.ndarray], labels: list[int], frames: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of every clip, labelled with its clip's label."""
    xs, ys = [], []
    for f, y in zip(features, labels):
        w = sliding_windows(f, frames, stride)
        xs.append(w)
        ys.append(np.full(len(w), y))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def fit_head(x: np.ndarray, y: np.ndarray, n_classes: int, kind: str = "gru", units: int = 64,
             epochs: int = 40, batch_size: int = 32, seed: int = 0, x_val: np.ndarray | None = None,
             y_val: np.ndarray | None = None):
    """Train a head on windows; early stopping on validation loss keeps the best weights."""
    import keras

    keras.utils.set_random_seed(seed)
    flat = x.reshape(-1, x.shape[-1])
    model = build_head(kind, x.shape[1], x.shape[2], n_classes, units, flat.mean(0), flat.var(0) + 1e-12)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    validation = (x_val, y_val) if x_val is not None and len(x_val) else None
    monitor = "val_loss" if validation else "loss"
    callbacks = [keras.callbacks.EarlyStopping(monitor=monitor, patience=6, restore_best_weights=True),
                 keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=3)]
    history = model.fit(x, y, validation_data=validation, epochs=epochs, batch_size=batch_size,
                        shuffle=True, verbose=0, callbacks=callbacks)
    log.info(kv(event="head_trained", kind=kind, windows=len(x), epochs=len(history.history["loss"]),
                loss=float(history.history["loss"][-1])))
    return model, history.history
