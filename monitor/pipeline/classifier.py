"""The temporal head: windows [T, D] of embeddings -> action probabilities, batched across cameras."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monitor.errors import UserError
from monitor.messages import NOBODY, Prediction, Window
from monitor.model.heads import first_output


class Classifier:
    """Loads a head file and runs it as one compiled function (no retracing across batch sizes)."""

    def __init__(self, head_file: Path, labels: list[str], frames: int, dim: int):
        import keras
        import tensorflow as tf

        try:
            model = keras.models.load_model(head_file, compile=False)
        except Exception as exc:
            raise UserError(f"{head_file}: not a Keras head model: {exc}") from None
        n_out = model.outputs[0].shape[-1]
        got = (model.input_shape[1], model.input_shape[2], n_out)
        if got != (frames, dim, len(labels)):
            raise UserError(f"{head_file}: head takes [{got[0]}, {got[1]}] and gives {got[2]} classes; "
                            f"the bundle needs [{frames}, {dim}] (window frames, backbone dim) and {len(labels)} labels")
        self.labels = labels
        self.frames = frames
        self._run = tf.function(lambda x: first_output(model(x, training=False)),
                                input_signature=[tf.TensorSpec([None, frames, dim], tf.float32)])

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """[N, T, D] -> [N, classes]"""
        return self._run(features.astype(np.float32, copy=False)).numpy()

    def predict(self, windows: list[Window]) -> list[Prediction]:
        """One prediction per window, in order. A gated window (nobody in its zone) is NOBODY at 1.0 and every
        label at 0.0, without running the head: rules see that nobody is there, and time passing."""
        seen = [w for w in windows if not w.gated]
        probs = iter(self.probabilities(np.stack([w.features for w in seen])) if seen else ())
        nobody = dict.fromkeys(self.labels, 0.0) | {NOBODY: 1.0}
        return [Prediction(w.camera, w.t0, w.t1, w.mono,
                           dict(nobody) if w.gated else dict(zip(self.labels, map(float, next(probs)), strict=True)), w.zone)
                for w in windows]
