"""Is there a person in this picture? MoveNet Lightning (TFLite) on the CPU, for person gating.

MoveNet (single pose) always returns 17 keypoints with a score each; the mean score separates a
picture with a person from an empty one clearly (measured on Intel's one-by-one clip, 768x432,
zones of half the frame: 0.36-0.65 with a person, 0.05-0.19 without; one transition frame 0.27),
so `min_score` 0.3 is the default. One call takes 6-14 ms of one core on this kind of machine
(quiet / shared), so a check every half second per zone costs 1-3% of one core.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.errors import UserError


@dataclass(frozen=True)
class PersonCheck:
    present: bool
    score: float  # mean keypoint score
    seconds: float  # the detector's run time


class PersonDetector:
    """One interpreter, one thread at a time (each camera's reader gets its own detector)."""

    def __init__(self, model: Path, min_score: float = 0.3, where: str = "person_detector"):
        if not model.is_file():
            raise UserError(f"{where}.model: file not found: {model}")
        try:
            self._interp = _interpreter(model)
            self._interp.allocate_tensors()
        except Exception as exc:
            raise UserError(f"{where}.model: {model} is not a TFLite model: {exc}") from None
        inp, out = self._interp.get_input_details()[0], self._interp.get_output_details()[0]
        if list(inp["shape"][3:]) != [3] or list(out["shape"][-2:]) != [17, 3]:
            raise UserError(f"{where}.model: {model} is not a MoveNet single-pose model "
                            f"(input {list(inp['shape'])}, output {list(out['shape'])})")
        self.input_size = (int(inp["shape"][1]), int(inp["shape"][2]))  # (height, width)
        self.min_score = min_score
        self._in, self._out, self._dtype = inp["index"], out["index"], inp["dtype"]

    def check(self, rgb: np.ndarray) -> PersonCheck:
        """`rgb`: uint8 [H, W, 3] at `input_size` (a zone's crop)."""
        start = time.perf_counter()
        self._interp.set_tensor(self._in, rgb[None].astype(self._dtype, copy=False))
        self._interp.invoke()
        score = float(self._interp.get_tensor(self._out).reshape(17, 3)[:, 2].mean())
        return PersonCheck(score >= self.min_score, score, time.perf_counter() - start)


def _interpreter(path: Path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # platforms without ai-edge-litert: TensorFlow's own (deprecated) copy
        from tensorflow.lite import Interpreter
    return Interpreter(model_path=str(path), num_threads=1)  # it runs beside decoding, on a reader thread
