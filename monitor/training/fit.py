"""Windows from clip features, and fitting a head on them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from monitor.errors import UserError
from monitor.model.heads import CONVEX_HEADS, build_head, linear_head, moment_kernel
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

    if kind in CONVEX_HEADS:
        if n_groups:
            raise UserError(f"--head {kind}: one output only (two-output image models: --head image)")
        return fit_linear(x, y, n_classes, x_val, y_val, weighted, on_epoch, name)
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


# Inverse L2 strength of the linear head (scikit-learn's C, on standardized moments). On both sets of
# bench/small_datasets.py held-out accuracy was the same for C from 0.001 to 0.1; 0.01 is in the middle.
LINEAR_C = 0.01


def fit_linear(x: np.ndarray, y: np.ndarray, n_classes: int, x_val: np.ndarray | None = None,
               y_val: np.ndarray | None = None, weighted: bool = True,
               on_epoch: Callable[[int, dict], None] | None = None, name: str | None = None):
    """The `linear` head: L2-regularised multinomial logistic regression on each feature's standardized mean
    and linear trend over the window, solved to convergence (L-BFGS, full batch).

    The problem is convex: its optimum does not depend on a seed or an epoch count, so the head trained
    on the same windows is the same head. Returns the Keras model and a one-step history.
    """
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    flat = x.reshape(-1, x.shape[-1])
    mean, variance = flat.mean(0), flat.var(0) + 1e-12
    moments = _moments(x, mean, variance)
    pooled_mean, pooled_variance = moments.mean(0), moments.var(0) + 1e-12
    z = (moments - pooled_mean) / np.sqrt(pooled_variance)
    present = {c: w for c, w in class_weights(y, n_classes).items() if w}  # a fold may lack a class
    clf = LogisticRegression(C=LINEAR_C, max_iter=5000, tol=1e-6, class_weight=present if weighted else None)
    clf.fit(z, y)
    kernel, bias = _softmax_weights(clf, x.shape[-1] * 2, n_classes)
    model = linear_head(x.shape[1], x.shape[2], n_classes, mean, variance, pooled_mean, pooled_variance, name=name)
    model.get_layer("action").set_weights([kernel, bias])
    history = _scores(model, x, y, "")
    if x_val is not None and y_val is not None and len(x_val):
        history.update(_scores(model, x_val, y_val, "val_"))
    if on_epoch is not None:
        on_epoch(1, {k: v[0] for k, v in history.items()})
    return model, history


def _moments(x: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """What the linear head's layers compute before its last standardization: [N, D * 2], mean and trend interleaved."""
    z = (x - mean) / np.sqrt(variance)
    return np.einsum("ntd,tk->ndk", z, moment_kernel(x.shape[1])).reshape(len(x), -1)


def _softmax_weights(clf, dim: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted LogisticRegression as a softmax Dense layer over every class (a class absent from the fit never wins)."""
    kernel, bias = np.zeros((dim, n_classes), np.float32), np.full(n_classes, -30.0, np.float32)
    if len(clf.classes_) == 2:  # binary: one logit w.x + b, the same as a softmax over (-w/2, w/2)
        coef, intercept = np.stack([-clf.coef_[0], clf.coef_[0]]) / 2, np.array([-1.0, 1.0]) * clf.intercept_[0] / 2
    else:
        coef, intercept = clf.coef_, clf.intercept_
    kernel[:, clf.classes_], bias[clf.classes_] = coef.T, intercept
    return kernel, bias


def _scores(model, x: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, list[float]]:
    p = np.clip(model.predict(x, verbose=0, batch_size=256), 1e-7, 1.0)
    return {f"{prefix}loss": [float(-np.log(p[np.arange(len(y)), y]).mean())],
            f"{prefix}accuracy": [float((p.argmax(1) == y).mean())]}


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

