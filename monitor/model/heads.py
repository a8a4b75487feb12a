"""Temporal heads: windows [T, D] of embeddings -> action probabilities (Keras models, saved in bundles)."""

from __future__ import annotations

import numpy as np

from monitor.errors import UserError

RECURRENT_HEADS = ("gru", "lstm", "bilstm")
FRAME_HEADS = ("conv3d", "conv3d_lstm")  # learn from the pixels themselves (backbone raw)
CONVEX_HEADS = ("linear",)  # one convex fit (monitor.training.fit.fit_linear): the seed cannot change it
HEADS = (*CONVEX_HEADS, *RECURRENT_HEADS, *FRAME_HEADS, "image")


def build_head(kind: str, frames: int, dim: int, n_classes: int, units: int = 128,
               mean: np.ndarray | None = None, variance: np.ndarray | None = None, dropout: float = 0.3,
               frame_size: tuple[int, int] | None = None, n_groups: int = 0, name: str | None = None):
    """A head over windows [T, D]; its first output, `action`, gives the label probabilities.

    gru / lstm / bilstm: recurrent over embeddings, standardized with the training set's statistics.
    conv3d / conv3d_lstm: 3D convolutions over raw frames (backbone `raw`: D = H*W*3), then a GRU / LSTM
    over their time steps, trained end to end.
    image: one frame (T = 1) -> action, plus `action_class` when `n_groups` > 0.
    linear: each standardized feature's mean and linear trend over the window, then softmax regression
    (see linear_head; fit.fit_linear sets its weights).
    """
    import keras
    from keras import layers

    if kind not in HEADS:
        raise UserError(f"head: unknown head kind '{kind}' (expected one of {', '.join(HEADS)})")
    if kind == "linear":
        return linear_head(frames, dim, n_classes, mean, variance, name=name)
    inputs = keras.Input((frames, dim), name="embeddings")
    x = inputs
    if kind in RECURRENT_HEADS or kind == "image":
        x = layers.Normalization(axis=-1, mean=mean, variance=variance, name="standardize")(x) if mean is not None else x
    if kind in RECURRENT_HEADS:
        x = layers.Dropout(dropout / 2)(x)
        recurrent = layers.GRU if kind == "gru" else layers.LSTM
        x = layers.Bidirectional(recurrent(units))(x) if kind == "bilstm" else recurrent(units)(x)
    elif kind in FRAME_HEADS:
        if frame_size is None or frame_size[0] * frame_size[1] * 3 != dim:
            raise UserError(f"head: {kind} learns from frames: use the raw backbone (--backbone raw)")
        recurrent = layers.LSTM if kind == "conv3d_lstm" else layers.GRU
        x = _conv3d_recurrent(layers.Reshape((frames, *frame_size, 3))(x), recurrent, units, dropout)
    else:  # image
        if frames != 1:
            raise UserError("head: the image head classifies single frames (frames: 1)")
        x = layers.Flatten()(x)
        x = layers.Dense(units, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = [layers.Dense(n_classes, activation="softmax", name="action")(x)]
    if n_groups:
        outputs.append(layers.Dense(n_groups, activation="softmax", name="action_class")(x))
    return keras.Model(inputs, outputs if n_groups else outputs[0], name=name or f"{kind}_head")


def moment_kernel(frames: int) -> np.ndarray:
    """[T, 2]: a window's mean, and its linear trend (the mean of each frame times its time in [-1, 1]).

    The trend tells a motion from the same frames in reverse (a fall from getting up), which a mean cannot.
    """
    t = np.linspace(-1.0, 1.0, frames) if frames > 1 else np.zeros(1)
    return np.stack([np.ones(frames), t], 1).astype(np.float32) / frames


def linear_head(frames: int, dim: int, n_classes: int, mean: np.ndarray | None = None, variance: np.ndarray | None = None,
                pooled_mean: np.ndarray | None = None, pooled_variance: np.ndarray | None = None, name: str | None = None):
    """Standardize frames -> per feature [mean, trend] over the window -> standardize those -> Dense softmax.

    Only stock Keras layers (the moments are a fixed Dense over the time axis), so the daemon, evaluate
    and predict load it like any other head.
    """
    import keras
    from keras import layers

    inputs = keras.Input((frames, dim), name="embeddings")
    x = layers.Normalization(axis=-1, mean=mean if mean is not None else np.zeros(dim),
                             variance=variance if variance is not None else np.ones(dim), name="standardize")(inputs)
    x = layers.Permute((2, 1), name="time_last")(x)  # [D, T]
    moments = layers.Dense(2, use_bias=False, trainable=False, name="moments")
    x = layers.Flatten(name="mean_trend")(moments(x))  # [D * 2]: feature d's mean at 2d, its trend at 2d + 1
    moments.set_weights([moment_kernel(frames)])
    x = layers.Normalization(axis=-1, mean=pooled_mean if pooled_mean is not None else np.zeros(2 * dim),
                             variance=pooled_variance if pooled_variance is not None else np.ones(2 * dim),
                             name="standardize_moments")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="action")(x)
    return keras.Model(inputs, outputs, name=name or "linear_head")


def _conv3d_recurrent(frames, recurrent, units: int, dropout: float):
    """3D convolutions learn short motions (each batch-normalised, then dropout); pooling keeps half the time
    steps, and the recurrent layer learns the order of those motions over the window."""
    from keras import layers

    x = frames
    steps = frames.shape[1]
    for i, filters in enumerate((16, 32, 64)):
        x = layers.Conv3D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling3D((2 if i == 1 and steps >= 4 else 1, 2, 2), padding="same")(x)
        x = layers.Dropout(dropout / 3)(x)
    x = layers.TimeDistributed(layers.GlobalAveragePooling2D())(x)  # [T', filters]
    return recurrent(units)(x)


def summary(model) -> tuple[int, str]:
    """Parameter count and one line naming each layer with its parameters (for logs and model.yaml)."""
    parts = [f"{layer.name}:{type(layer).__name__}={layer.count_params()}" for layer in model.layers
             if type(layer).__name__ != "InputLayer"]
    return int(model.count_params()), " ".join(parts)


def first_output(out):
    """Heads with two outputs (action, action_class) give a list or dict: the action comes first."""
    if isinstance(out, dict):
        return out.get("action", next(iter(out.values())))
    return out[0] if isinstance(out, (list, tuple)) else out
