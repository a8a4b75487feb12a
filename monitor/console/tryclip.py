""""Try a clip": a model bundle applied to one uploaded video or image, window by window, as the
daemon would see it (the same sampling, resize and windows). TensorFlow is imported here only,
when the first clip is tried, so the rest of the console starts and runs without it.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from monitor.errors import UserError
from monitor.evidence.media import encode_jpeg
from monitor.model.bundle import MANIFEST, Bundle, load_bundle
from monitor.model.frames import read_frames, reduced_size
from monitor.model.windowing import clip_windows
from monitor.training.dataset import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from monitor.training.fit import predict_outputs

MAX_SECONDS = 120.0  # of video: at a few frames per second, a couple of minutes of CPU at most
MAX_THUMBNAILS = 24
THUMB_WIDTH = 200


class BadClipError(UserError):
    """The file cannot be tried (type, length, or not decodable): the page says why."""


@dataclass(frozen=True)
class TryResult:
    bundle: str
    bundle_hash: str
    labels: list[str]
    times: list[float]  # seconds into the clip at each window's end
    probs: np.ndarray  # [windows, labels]
    top: list[str]  # the top-k labels over the whole clip (mean of its windows)
    frames: list[tuple[float, str]]  # (seconds, JPEG data URI) of some sampled frames
    seconds: float  # time taken

    def series(self) -> list[tuple[str, list[tuple[float, float]]]]:
        return [(label, [(t, float(p)) for t, p in zip(self.times, self.probs[:, self.labels.index(label)], strict=True)])
                for label in self.top]


def find_bundles(folders: list[Path]) -> dict[str, Path]:
    """Model bundles (directories with model.yaml) given directly or found one level below each folder."""
    found: dict[str, Path] = {}
    for folder in folders:
        candidates = [folder] if (folder / MANIFEST).is_file() else sorted(p for p in folder.glob("*") if p.is_dir())
        for path in candidates:
            if (path / MANIFEST).is_file():
                found.setdefault(path.name, path)
    return found


class Predictor:
    """One bundle loaded at a time, and one clip at a time (the machine's cores are the daemon's too)."""

    def __init__(self, bundles: dict[str, Path]):
        self.bundles = bundles
        self._lock = threading.Lock()
        self._loaded: tuple[Path, Bundle, object, object] | None = None  # path, bundle, backbone, head

    def run(self, bundle_name: str, clip: Path, top_k: int = 3) -> TryResult:
        if bundle_name not in self.bundles:
            raise BadClipError(f"model bundle '{bundle_name}' is not one of {', '.join(self.bundles) or 'none'}")
        kind = check_clip(clip)
        with self._lock:
            started = time.monotonic()
            bundle, backbone, head = self._load(self.bundles[bundle_name])
            window = bundle.manifest.window
            frames, thumbs = _frames(clip, kind, backbone.input_size, window.sample_fps)
            features = np.concatenate([backbone.embed(frames[i:i + 32]) for i in range(0, len(frames), 32)])
            probs = predict_outputs(head, clip_windows(features, window.frames, window.stride))[0]
        ends = range(window.frames, max(len(frames), window.frames) + 1, window.stride)
        times = [min(e, len(frames)) / window.sample_fps if kind == "video" else 0.0 for e in ends][:len(probs)]
        order = np.argsort(probs.mean(0))[::-1][:max(1, min(top_k, len(bundle.labels)))]
        step = max(1, -(-len(thumbs) // MAX_THUMBNAILS))
        return TryResult(bundle_name, bundle.hash, bundle.labels, times, probs, [bundle.labels[i] for i in order],
                         [(i / window.sample_fps, _data_uri(t)) for i, t in enumerate(thumbs)][::step],
                         time.monotonic() - started)

    def _load(self, path: Path):
        if self._loaded is None or self._loaded[0] != path:
            import keras  # TensorFlow: here and nowhere else in the console

            bundle = load_bundle(path)
            self._loaded = (path, bundle, bundle.build_backbone(),
                            keras.models.load_model(bundle.head_file, compile=False))
        return self._loaded[1:]


def check_clip(path: Path) -> str:
    """'video' or 'image'; BadClipError with the reason otherwise."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        if cv2.imread(str(path), cv2.IMREAD_COLOR) is None:
            raise BadClipError("this image cannot be decoded (a damaged file, or not really an image)")
        return "image"
    if suffix not in VIDEO_SUFFIXES:
        raise BadClipError(f"'{suffix or 'no extension'}' files are not accepted: upload a video "
                      f"({', '.join(sorted(VIDEO_SUFFIXES))}) or an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadClipError("this file has no video stream (audio only?)")
            seconds = container.duration / av.time_base if container.duration else None
            if seconds is not None and seconds > MAX_SECONDS:
                raise BadClipError(f"the video lasts {seconds:.0f} s: at most {MAX_SECONDS:.0f} s can be tried")
            for _ in container.decode(video=0):
                return "video"
    except av.FFmpegError as exc:
        raise BadClipError(f"this video cannot be decoded ({exc.strerror or type(exc).__name__})") from None
    raise BadClipError("this video has no decodable frame")


def _frames(clip: Path, kind: str, size: tuple[int, int], fps: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """The model's frames (sampled and resized as a live camera's) and the same frames as thumbnails."""
    if kind == "image":
        rgb = cv2.cvtColor(cv2.imread(str(clip), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        model = cv2.resize(rgb, size[::-1], interpolation=cv2.INTER_AREA)[None]
        return model, [cv2.resize(rgb, reduced_size(rgb.shape[1], rgb.shape[0], THUMB_WIDTH), interpolation=cv2.INTER_AREA)]
    frames = read_frames(str(clip), size, fps)
    if not len(frames):
        raise BadClipError("this video has no decodable frame")
    if len(frames) > MAX_SECONDS * fps + 1:
        raise BadClipError(f"the video lasts more than {MAX_SECONDS:.0f} s: at most {MAX_SECONDS:.0f} s can be tried")
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        w, h = reduced_size(stream.codec_context.width, stream.codec_context.height, THUMB_WIDTH)
    thumbs = read_frames(str(clip), (h, w), fps)
    return frames, list(thumbs)


def _data_uri(rgb: np.ndarray) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(rgb, quality=75)).decode()
