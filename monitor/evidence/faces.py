"""Privacy: faces blurred in stored evidence (OpenCV's Haar cascade, frontal faces, best effort)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from monitor.errors import UserError

FACE_CASCADE = "haarcascade_frontalface_default.xml"
Frame = tuple[float, np.ndarray]  # (UTC epoch seconds, uint8 RGB)


def load_face_detector(cascade: Path | None = None) -> cv2.CascadeClassifier:
    """OpenCV's bundled frontal-face Haar cascade, or a clear UserError saying why it cannot be had."""
    if not hasattr(cv2, "CascadeClassifier"):
        raise UserError(f"blur_faces: OpenCV {cv2.__version__} has no cv2.CascadeClassifier (OpenCV 5 moved the "
                        "Haar cascades out of the main package): install opencv-python-headless<5")
    if cascade is None:
        data = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if not data:
            raise UserError(f"blur_faces: OpenCV {cv2.__version__} has no cv2.data.haarcascades: "
                            "install opencv-python-headless<5 or pass the cascade file")
        cascade = Path(data) / FACE_CASCADE
    if not cascade.is_file():
        raise UserError(f"blur_faces: face cascade {cascade} is missing (OpenCV {cv2.__version__}): "
                        "install opencv-python-headless<5, which bundles it, or pass the cascade file")
    detector = cv2.CascadeClassifier(str(cascade))
    if detector.empty():
        raise UserError(f"blur_faces: face cascade {cascade} could not be loaded (not a Haar cascade XML?)")
    return detector


def detect_faces(detector: cv2.CascadeClassifier, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Face boxes (x, y, w, h) in an RGB frame; frontal faces of at least the cascade's 24x24 window only."""
    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))  # as OpenCV's own face sample: evens out lighting
    boxes = detector.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5)
    return [(int(x), int(y), int(w), int(h)) for x, y, w, h in boxes]


def blur_boxes(rgb: np.ndarray, boxes: list[tuple[int, int, int, int]], grow: float = 0.25) -> np.ndarray:
    """A copy of `rgb` with each box, enlarged by `grow` of its size on every side, made unrecognisable.

    The box is shrunk to 4x4 colours (nothing of the face survives: unlike a plain Gaussian blur it
    cannot be deconvolved) and smoothly scaled back, so no blocky edges draw the eye.
    """
    out: np.ndarray = rgb.copy()
    height, width = rgb.shape[:2]
    for x, y, w, h in boxes:
        x0, y0 = max(0, int(x - grow * w)), max(0, int(y - grow * h))
        x1, y1 = min(width, int(x + w + grow * w)), min(height, int(y + h + grow * h))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        tiny = cv2.resize(out[y0:y1, x0:x1], (4, 4), interpolation=cv2.INTER_AREA)
        out[y0:y1, x0:x1] = cv2.GaussianBlur(cv2.resize(tiny, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR),
                                             (0, 0), max(1.0, (x1 - x0) / 8))
    return out


def blur_faces_in(detector: cv2.CascadeClassifier, frames: list[Frame]) -> list[Frame]:
    """Blur faces in a sequence; a frame also gets its neighbours' boxes (Haar misses faces now and then)."""
    found = [detect_faces(detector, rgb) for _, rgb in frames]
    return [(ts, blur_boxes(rgb, [b for j in range(max(0, i - 1), min(len(frames), i + 2)) for b in found[j]]))
            for i, (ts, rgb) in enumerate(frames)]
