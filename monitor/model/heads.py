"""Temporal heads: windows [T, D] of embeddings -> action probabilities (Keras models, saved in bundles)."""

from __future__ import annotations

import numpy as np

from monitor.errors import UserError

RECURRENT_HEADS = ("gru", "lstm", "bilstm")
HEADS = (*RECURRENT_HEADS, "conv3d", "image")


def build_head(kind: str, frames: int, dim: int, n_classes: int, units: int = 128,
               mean: np.ndarray | None = None, variance: np.ndarray | None = None, dropout: float = 0.3,
               frame_size: tuple[int, int] | None = None, n_groups: int = 0):
    """A head over windows [T, D]; its first output, `action`, gives the label probabilities.

    gru / lstm / bilstm: recurrent over embeddings, standardized with the training set's statistics.
    conv3d: a small 3D CNN over raw frames (backbone `raw`: D = H*W*3), trained end to end.
    image: one frame (T = 1) -> action, plus `action_class` when `n_groups` > 0.
    """
    import keras
    from keras import layers

    if kind not in HEADS:
        raise UserError(f"head: unknown head kind '{kind}' (expected one of {', '.join(HEADS)})")
    inputs = keras.Input((frames, dim), name="embeddings")
    x = inputs
    if kind in RECURRENT_HEADS or kind == "image":
        x = layers.Normalization(axis=-1, mean=mean, variance=variance, name="standardize")(x) if mean is not None else x
    if kind in RECURRENT_HEADS:
        x = layers.Dropout(dropout / 2)(x)
        recurrent = layers.GRU if kind == "gru" else layers.LSTM
        x = layers.Bidirectional(recurrent(units))(x) if kind == "bilstm" else recurrent(units)(x)
    elif kind == "conv3d":
        if frame_size is None or frame_size[0] * frame_size[1] * 3 != dim:
            raise UserError("head: conv3d learns from frames: use the raw backbone (--backbone raw)")
        x = layers.Reshape((frames, *frame_size, 3))(x)
        for filters in (16, 32, 64):
            x = layers.Conv3D(filters, 3, padding="same", activation="relu")(x)
            x = layers.MaxPooling3D((1 if filters == 16 else 2, 2, 2), padding="same")(x)
        x = layers.GlobalAveragePooling3D()(x)
    else:  # image
        if frames != 1:
            raise UserError("head: the image head classifies single frames (frames: 1)")
        x = layers.Flatten()(x)
        x = layers.Dense(units, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = [layers.Dense(n_classes, activation="softmax", name="action")(x)]
    if n_groups:
        outputs.append(layers.Dense(n_groups, activation="softmax", name="action_class")(x))
    return keras.Model(inputs, outputs if n_groups else outputs[0], name=f"{kind}_head")


def first_output(out):
    """Heads with two outputs (action, action_class) give a list or dict: the action comes first."""
    if isinstance(out, dict):
        return out.get("action", next(iter(out.values())))
    return out[0] if isinstance(out, (list, tuple)) else out
