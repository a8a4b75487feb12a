"""The temporal head: windows [T, D] of embeddings -> action probabilities, batched across cameras."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monitor.errors import UserError
from monitor.records import Prediction, Window

HEADS = ("gru", "lstm", "bilstm")


def build_head(kind: str, frames: int, dim: int, n_classes: int, units: int = 128,
               mean: np.ndarray | None = None, variance: np.ndarray | None = None, dropout: float = 0.3):
    """A recurrent head; the first layer standardizes features with the training set's statistics."""
    import keras

    if kind not in HEADS:
        raise UserError(f"head: unknown head kind '{kind}' (expected one of {', '.join(HEADS)})")
    inputs = keras.Input((frames, dim), name="embeddings")
    x = keras.layers.Normalization(axis=-1, mean=mean, variance=variance, name="standardize")(inputs) \
        if mean is not None else inputs
    x = keras.layers.Dropout(dropout / 2)(x)
    recurrent = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM, "bilstm": keras.layers.LSTM}[kind]
    layer = recurrent(units)
    x = keras.layers.Bidirectional(layer)(x) if kind == "bilstm" else layer(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=f"{kind}_head")


class Classifier:
    """Loads a head file and runs it as one compiled function (no retracing across batch sizes)."""

    def __init__(self, head_file: Path, labels: list[str], frames: int, dim: int):
        import keras
        import tensorflow as tf

        try:
            model = keras.models.load_model(head_file, compile=False)
        except Exception as exc:
            raise UserError(f"{head_file}: not a Keras head model: {exc}") from None
        expected = (frames, dim, len(labels))
        got = (model.input_shape[1], model.input_shape[2], model.output_shape[-1])
        if got != expected:
            raise UserError(f"{head_file}: head takes [{got[0]}, {got[1]}] and gives {got[2]} classes; "
                            f"the bundle needs [{frames}, {dim}] (window frames, backbone dim) and {len(labels)} labels")
        self.labels = labels
        self.frames = frames
        self._run = tf.function(lambda x: model(x, training=False),
                                input_signature=[tf.TensorSpec([None, frames, dim], tf.float32)])

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """[N, T, D] -> [N, classes]"""
        return self._run(features.astype(np.float32, copy=False)).numpy()

    def predict(self, windows: list[Window]) -> list[Prediction]:
        if not windows:
            return []
        probs = self.probabilities(np.stack([w.features for w in windows]))
        return [Prediction(w.camera, w.t0, w.t1, w.mono, dict(zip(self.labels, map(float, p))))
                for w, p in zip(windows, probs)]
