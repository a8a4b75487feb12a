"""Windows from clip features, and fitting a head on them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from monitor.model.heads import build_head
from monitor.model.windowing import clip_windows


def windows_dataset(features: list[np.ndarray], labels: list, frames: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of every clip, labelled with its clip's label (an int, or a tuple for two outputs)."""
    xs, ys = [], []
    for f, y in zip(features, labels, strict=True):
        w = clip_windows(f, frames, stride)
        xs.append(w)
        ys += [y] * len(w)
    return np.concatenate(xs).astype(np.float32), np.array(ys)


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse frequency, so a rare class counts as much as a common one."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return {i: (len(y) / (n_classes * c) if c else 0.0) for i, c in enumerate(counts)}


def balance(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Down-sample every class to the smallest one's count."""
    rng = np.random.default_rng(seed)
    labels = y if y.ndim == 1 else y[:, 0]
    smallest = np.bincount(labels).min()
    keep = np.concatenate([rng.choice(np.flatnonzero(labels == c), smallest, replace=False) for c in np.unique(labels)])
    return x[np.sort(keep)], y[np.sort(keep)]


def fit_head(x: np.ndarray, y: np.ndarray, n_classes: int, kind: str = "gru", units: int = 64,
             epochs: int = 40, batch_size: int = 32, seed: int = 0, x_val: np.ndarray | None = None,
             y_val: np.ndarray | None = None, n_groups: int = 0, weighted: bool = True,
             frame_size: tuple[int, int] | None = None, on_epoch: Callable[[int, dict], None] | None = None,
             name: str | None = None):
    """Train a head for exactly `epochs` epochs and keep the last weights; the learning rate halves on plateaus.

    The schedule does not look at the validation windows (they are only scored each epoch): a handful of
    validation clips is too few to stop on (see crossval.py).
    `y` holds action indices, or [action, action_class] pairs when `n_groups` > 0. Returns the model and its history.
    """
    import keras

    keras.utils.set_random_seed(seed)
    flat = x.reshape(-1, x.shape[-1])
    model = build_head(kind, x.shape[1], x.shape[2], n_classes, units, flat.mean(0), flat.var(0) + 1e-12,
                       frame_size=frame_size, n_groups=n_groups, name=name)
    targets = _targets(y, n_groups)
    if n_groups:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss={"action": "sparse_categorical_crossentropy",
                      "action_class": "sparse_categorical_crossentropy"},
                      metrics={"action": ["accuracy"], "action_class": ["accuracy"]})
    else:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    validation = (x_val, _targets(y_val, n_groups)) if x_val is not None and len(x_val) else None
    callbacks = [keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=3)]
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_epoch(epoch + 1, logs or {})))
    # Keras applies class_weight to single-output models only; two-output image models use balance instead.
    weights = class_weights(y, n_classes) if weighted and not n_groups else None
    history = model.fit(x, targets, validation_data=validation, epochs=epochs, batch_size=batch_size,
                        shuffle=True, verbose=0, callbacks=callbacks, class_weight=weights)
    return model, {k: [float(v) for v in vs] for k, vs in history.history.items()}


def ensemble(models: list, name: str):
    """One Keras model averaging the members' outputs: the bundle keeps one head file, the daemon loads it unchanged."""
    import keras

    if len(models) == 1:
        return models[0]
    inputs = keras.Input(models[0].input_shape[1:], name="embeddings")
    outs = [m(inputs) for m in models]
    if isinstance(outs[0], (list, tuple)):  # two outputs: average each
        merged = [keras.layers.Average(name=n)([o[i] for o in outs]) for i, n in enumerate(("action", "action_class"))]
    else:
        merged = keras.layers.Average(name="action")(outs)
    return keras.Model(inputs, merged, name=name)


def _targets(y: np.ndarray | None, n_groups: int):
    if y is None or not n_groups:
        return y
    return {"action": y[:, 0], "action_class": y[:, 1]}


def predict_outputs(model, x: np.ndarray) -> list[np.ndarray]:
    """All outputs of a head as a list of [N, classes] arrays."""
    out = model.predict(x, verbose=0, batch_size=256)
    if isinstance(out, dict):
        return [out[k] for k in ("action", "action_class") if k in out]
    return list(out) if isinstance(out, (list, tuple)) else [out]


def clip_probabilities(probs: np.ndarray, windows_per_clip: list[int]) -> np.ndarray:
    """A clip's prediction is the mean of its windows' probabilities."""
    ends = np.cumsum(windows_per_clip)
    return np.stack([probs[e - n:e].mean(0) for e, n in zip(ends, windows_per_clip, strict=True)])

