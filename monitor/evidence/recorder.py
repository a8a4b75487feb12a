"""Evidence for violation episodes: a short H.264 clip around the moment an episode opened, and a snapshot.

Camera threads hand every decoded frame to `EvidenceRecorder.add_frame`; it keeps a small per-camera
ring buffer (reduced to `width` px wide, at most `fps` frames per second). When an episode opens,
`episode_opened` schedules its evidence; once the camera's frames reach `opened + post_roll` (or a
wall-clock deadline passes: a camera may go down) ONE writer thread writes

    <directory>/<camera>/<YYYY-MM-DD (UTC)>/<episode_id>.mp4   frames from opened - pre_roll to opened + post_roll
    <directory>/<camera>/<YYYY-MM-DD (UTC)>/<episode_id>.jpg   the frame nearest the opening

atomically (temp file in the same directory, fsync, `os.replace`, fsync of the directory), hashes
both (SHA-256) and reports an `Evidence` record to `on_written`. Nothing here blocks a camera thread
on disk or encoding. With `blur_faces=True` (privacy: EU plants, works councils) faces are blurred in
every frame before anything reaches the disk.

Memory per camera: the ring holds `ceil((pre_roll + post_roll + 1) * fps) + 1` frames of
`width x height x 3` bytes. Defaults (5 s + 5 s, 5 fps, 480 px): 56 frames; 480x270 (16:9) is 389 kB
a frame, 21.8 MB per camera; 480x360 (4:3) is 29 MB. An episode being written holds references to at
most `(pre_roll + post_roll) * fps + 1` of those frames (shared, not copied) until its clip is written.

>>> import tempfile
>>> rec = EvidenceRecorder(Path(tempfile.mkdtemp()), pre_roll=1, post_roll=1,
...                        on_written=lambda e: print(e.clip.parent.name, e.clip.name, e.frames))
>>> for i in range(20):  # 4 s of 768x432 frames at 5 fps
...     rec.add_frame("cam-1", 1_700_000_000 + i / 5, np.zeros((432, 768, 3), np.uint8))
...     if i == 5:
...         rec.episode_opened("ep-1", "cam-1", 1_700_000_001.0)
>>> rec.close(timeout=30)
2023-11-14 ep-1.mp4 11
True
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np

from monitor.backbones import sha256_file
from monitor.errors import UserError
from monitor.logs import kv

log = logging.getLogger("monitor.evidence")

FACE_CASCADE = "haarcascade_frontalface_default.xml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # camera and episode ids become path components
_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RING_SLACK = 1.0  # seconds the ring covers beyond pre + post roll: tolerates that much jitter
_TIME_BASE = Fraction(1, 1000)  # clip timestamps in milliseconds: real spacing, not a nominal rate

Frame = tuple[float, np.ndarray]  # (UTC epoch seconds, reduced uint8 RGB)


@dataclass(frozen=True)
class Evidence:
    """The files written for one episode. `start_ts`/`end_ts`: the first and last frame in the clip."""

    episode_id: str
    camera: str
    clip: Path
    clip_sha256: str
    snapshot: Path
    snapshot_sha256: str
    start_ts: float
    end_ts: float
    frames: int

    def as_record(self, root: Path | None = None) -> dict:
        """The JSON the audit trail stores (`monitor.ledger.verify_evidence` reads it); paths relative to `root`."""
        def rel(p: Path) -> str:
            return str(p.relative_to(root)) if root is not None else str(p)

        return {"clip": {"path": rel(self.clip), "sha256": self.clip_sha256},
                "snapshot": {"path": rel(self.snapshot), "sha256": self.snapshot_sha256},
                "start_ts": self.start_ts, "end_ts": self.end_ts, "frames": self.frames}


@dataclass
class _Camera:
    frames: deque[Frame]
    last_slot: int = -1  # index of the last 1/fps time slot that kept a frame
    newest: float = -math.inf


@dataclass
class _Pending:
    episode_id: str
    camera: str
    opened_ts: float
    deadline: float  # monotonic: write what there is by then


@dataclass(frozen=True)
class _Job:
    episode_id: str
    camera: str
    opened_ts: float
    frames: list[Frame] = field(repr=False)


def reduced_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(w, h) at `target_width` (never upscaled), aspect kept, both even (yuv420p needs even sides).

    >>> reduced_size(768, 432, 480)
    (480, 270)
    >>> reduced_size(560, 240, 480)
    (480, 206)
    >>> reduced_size(320, 240, 480)
    (320, 240)
    """
    w = max(2, min(target_width, width) // 2 * 2)
    h = max(2, round(height * w / width / 2) * 2)
    return w, h


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
    return [tuple(int(v) for v in box) for box in boxes]


def blur_boxes(rgb: np.ndarray, boxes: list[tuple[int, int, int, int]], grow: float = 0.25) -> np.ndarray:
    """A copy of `rgb` with each box, enlarged by `grow` of its size on every side, made unrecognisable.

    The box is shrunk to 4x4 colours (nothing of the face survives: unlike a plain Gaussian blur it
    cannot be deconvolved) and smoothly scaled back, so no blocky edges draw the eye.
    """
    out = rgb.copy()
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


def write_clip(path: Path, frames: list[Frame], fps: float, metadata: dict[str, str] | None = None) -> None:
    """H.264 (yuv420p) MP4 with each frame at its real time (ms) from the first; moov first for browsers.

    `fps` is only the nominal rate x264 plans its bit budget with; the timestamps are the frames' own.
    """
    height, width = frames[0][1].shape[:2]
    start = frames[0][0]
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        out.metadata.update(metadata or {})
        # One encoder thread: a clip is ~50 small frames, and x264's threads cost ~25% more CPU (taken
        # from inference) for no gain in wall time here (measured 0.10 vs 0.13 s CPU per 480x270 clip).
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000),
                                options={"preset": "veryfast", "crf": "23", "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = _TIME_BASE
        last = -1
        for ts, rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            last = frame.pts = max(last + 1, round((ts - start) * 1000))  # the muxer needs strictly rising pts
            frame.time_base = _TIME_BASE
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode the snapshot as JPEG")
    return data.tobytes()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _log_written(evidence: Evidence) -> None:
    log.info("evidence written %s", kv(episode=evidence.episode_id, camera=evidence.camera, clip=evidence.clip,
                                       frames=evidence.frames))


def _log_error(episode_id: str, exc: Exception) -> None:
    log.warning("evidence failed %s", kv(episode=episode_id, error=exc))


class EvidenceRecorder:
    """Ring buffers per camera, and one writer thread that turns opened episodes into clips + snapshots.

    `add_frame` and `episode_opened` are thread-safe and never wait on disk or encoding. The
    callbacks run on the writer thread (except `on_error` for an episode refused by `max_pending`,
    which runs in the caller of `episode_opened`); an exception in one is logged and the writer goes on.
    `grace`: seconds of wall time past `post_roll` to wait for a camera's frames before writing what
    there is. `max_pending`: episodes scheduled or queued at once; beyond that an episode gets no
    evidence and `on_error` says so (a storm of episodes must not exhaust memory).
    """

    def __init__(self, directory: Path, pre_roll: float = 5.0, post_roll: float = 5.0, fps: float = 5.0,
                 width: int = 480, blur_faces: bool = False,
                 on_written: Callable[[Evidence], None] = _log_written,
                 on_error: Callable[[str, Exception], None] = _log_error,
                 grace: float = 5.0, max_pending: int = 32, face_cascade: Path | None = None):
        if pre_roll < 0 or post_roll < 0 or fps <= 0 or width < 2 or grace < 0 or max_pending < 1:
            raise ValueError("evidence: pre_roll, post_roll, grace >= 0, fps > 0, width >= 2, max_pending >= 1")
        self.directory = Path(directory)
        self.pre_roll, self.post_roll, self.fps, self.width = pre_roll, post_roll, fps, width
        self.grace, self.max_pending = grace, max_pending
        self.on_written, self.on_error = on_written, on_error
        self._faces = load_face_detector(face_cascade) if blur_faces else None  # fail at start, not mid-episode
        self.ring_frames = math.ceil((pre_roll + post_roll + _RING_SLACK) * fps) + 1
        self._lock = threading.Lock()
        self._cameras: dict[str, _Camera] = {}
        self._pending: dict[str, _Pending] = {}  # by episode id
        self._queued = 0  # jobs handed to the writer and not yet done
        self._jobs: queue.Queue[_Job | None] = queue.Queue()  # bounded by max_pending
        self._closing = False
        self._writer = threading.Thread(target=self._run, name="evidence-writer", daemon=True)
        self._writer.start()

    # -- camera threads -------------------------------------------------------------------------
    def add_frame(self, camera: str, ts: float, rgb: np.ndarray) -> None:
        """Offer a full-size uint8 RGB frame [H, W, 3] captured at `ts` (UTC epoch seconds)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"evidence: expected an RGB frame [H, W, 3], got shape {rgb.shape}")
        slot = math.floor(ts * self.fps + 1e-3)  # a fixed grid of 1/fps slots: steady rate whatever the source's
        with self._lock:
            if self._closing:
                return
            cam = self._cameras.get(camera)
            if cam is None or ts < cam.newest - 1.0:  # new camera, or its clock jumped back: old frames mislead
                cam = self._cameras[camera] = _Camera(deque(maxlen=self.ring_frames))
            if slot <= cam.last_slot:
                return
            cam.last_slot = slot
        small = self._reduce(rgb)  # outside the lock: the only costly step here
        with self._lock:
            if ts <= cam.newest or self._cameras.get(camera) is not cam:
                return  # another thread of the same camera got in first
            cam.frames.append((ts, small))
            cam.newest = ts
            ready = [p for p in self._pending.values() if p.camera == camera and ts >= p.opened_ts + self.post_roll]
            for p in ready:
                self._enqueue(p)

    def episode_opened(self, episode_id: str, camera: str, opened_ts: float) -> None:
        """Schedule the evidence of an episode that opened at `opened_ts` (UTC epoch seconds)."""
        for what, name in (("episode id", episode_id), ("camera", camera)):
            if not _NAME.match(name):
                raise ValueError(f"evidence: {what} {name!r} cannot be a file name")
        with self._lock:
            if self._closing or episode_id in self._pending:
                log.warning("evidence not scheduled %s", kv(episode=episode_id, reason="closing" if self._closing else "duplicate"))
                return
            if len(self._pending) + self._queued >= self.max_pending:
                error: Exception | None = RuntimeError(f"{self.max_pending} episodes already waiting for evidence")
            else:
                error = None
                pending = _Pending(episode_id, camera, opened_ts, time.monotonic() + self.post_roll + self.grace)
                self._pending[episode_id] = pending
                cam = self._cameras.get(camera)
                if cam is not None and cam.newest >= opened_ts + self.post_roll:  # the episode was reported late
                    self._enqueue(pending)
        if error is not None:
            self._report_error(episode_id, error)

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self, timeout: float) -> bool:
        """Write every scheduled episode with the frames there are, then stop. True if all was done in time."""
        with self._lock:
            if not self._closing:
                self._closing = True
                for p in list(self._pending.values()):
                    self._enqueue(p)
                self._jobs.put(None)
        self._writer.join(timeout)
        return not self._writer.is_alive()

    # -- internals ------------------------------------------------------------------------------
    def _reduce(self, rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        size = reduced_size(width, height, self.width)
        if size == (width, height):
            return np.array(rgb, np.uint8)  # a copy: the caller may reuse its buffer
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

    def _enqueue(self, p: _Pending) -> None:
        """Under the lock: take the episode's frames from the ring and hand them to the writer."""
        del self._pending[p.episode_id]
        cam = self._cameras.get(p.camera)
        lo, hi = p.opened_ts - self.pre_roll, p.opened_ts + self.post_roll
        frames = [f for f in cam.frames if lo <= f[0] <= hi] if cam else []
        self._queued += 1
        self._jobs.put(_Job(p.episode_id, p.camera, p.opened_ts, frames))

    def _expire(self) -> float:
        """Queue the episodes past their deadline; seconds until the next deadline (at most 1)."""
        now = time.monotonic()
        with self._lock:
            for p in [p for p in self._pending.values() if p.deadline <= now]:
                log.info("evidence deadline %s", kv(episode=p.episode_id, camera=p.camera))  # camera late or down
                self._enqueue(p)
            nearest = min((p.deadline for p in self._pending.values()), default=now + 1.0)
        return min(max(nearest - now, 0.01), 1.0)

    def _run(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._expire())
            except queue.Empty:
                continue
            if job is None:
                return
            try:
                evidence = self._write(job)
            except Exception as exc:  # a full disk or a bad frame costs one episode's evidence, not the writer
                self._report_error(job.episode_id, exc)
            else:
                try:
                    self.on_written(evidence)
                except Exception:
                    log.exception("evidence on_written failed %s", kv(episode=job.episode_id))
            finally:
                with self._lock:
                    self._queued -= 1

    def _report_error(self, episode_id: str, exc: Exception) -> None:
        try:
            self.on_error(episode_id, exc)
        except Exception:
            log.exception("evidence on_error failed %s", kv(episode=episode_id))

    def _write(self, job: _Job) -> Evidence:
        if not job.frames:
            raise RuntimeError(f"camera {job.camera} delivered no frame between {job.opened_ts - self.pre_roll:.3f} "
                               f"and {job.opened_ts + self.post_roll:.3f}")
        started = time.perf_counter()
        lo = job.opened_ts - self.pre_roll
        if job.frames[0][0] > lo + 2 / self.fps:  # reported later than the ring covers, or the camera was down
            log.warning("evidence partial %s", kv(episode=job.episode_id, camera=job.camera,
                                                  missing_seconds=job.frames[0][0] - lo))
        frames = blur_faces_in(self._faces, job.frames) if self._faces is not None else job.frames
        day = datetime.fromtimestamp(job.opened_ts, timezone.utc).strftime("%Y-%m-%d")
        folder = self.directory / job.camera / day
        folder.mkdir(parents=True, exist_ok=True)
        clip, snapshot = folder / f"{job.episode_id}.mp4", folder / f"{job.episode_id}.jpg"
        # hidden temp names in the same directory: os.replace is atomic only within one file system
        tmp_clip, tmp_snap = (folder / f".{p.name}.{os.getpid()}.tmp" for p in (clip, snapshot))
        nearest = min(frames, key=lambda f: abs(f[0] - job.opened_ts))
        start_iso = datetime.fromtimestamp(frames[0][0], timezone.utc).isoformat(timespec="milliseconds")
        try:
            write_clip(tmp_clip, frames, self.fps, {"creation_time": start_iso.replace("+00:00", "Z"),
                                          "comment": f"episode={job.episode_id} camera={job.camera}"})
            _fsync(tmp_clip)
            with open(tmp_snap, "wb") as f:
                f.write(encode_jpeg(nearest[1]))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_clip, clip)
            os.replace(tmp_snap, snapshot)
            _fsync(folder)  # the renames themselves survive a power cut
        finally:
            for tmp in (tmp_clip, tmp_snap):
                tmp.unlink(missing_ok=True)
        evidence = Evidence(job.episode_id, job.camera, clip, sha256_file(clip), snapshot, sha256_file(snapshot),
                            frames[0][0], frames[-1][0], len(frames))
        log.debug("evidence encoded %s", kv(episode=job.episode_id, frames=len(frames),
                                            seconds=time.perf_counter() - started))
        return evidence


def prune(directory: Path, retention_days: float, now: float | None = None) -> list[Path]:
    """Delete evidence files whose episode day ended more than `retention_days` ago; return them.

    The day is the `<YYYY-MM-DD>` folder (UTC) the file sits in, not its mtime: a restore from
    backup must not reset the clock, and a file is never deleted before its retention (at most a
    day after). Only files in `<camera>/<date>/` are touched, and the folders they leave empty;
    violation records are not.
    """
    if retention_days <= 0:
        raise ValueError("evidence: retention_days must be > 0")
    cutoff = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc) - timedelta(days=retention_days)
    deleted: list[Path] = []
    directory = Path(directory)
    if not directory.is_dir():
        return deleted
    for camera in sorted(p for p in directory.iterdir() if p.is_dir()):
        pruned = False
        for day in sorted(p for p in camera.iterdir() if p.is_dir() and _DATE_DIR.match(p.name)):
            try:
                end = datetime.strptime(day.name, "%Y-%m-%d").replace(tzinfo=timezone.utc) + timedelta(days=1)
            except ValueError:
                continue  # looks like a date, is not one (2024-13-01): not ours
            if end > cutoff:
                continue
            pruned = True
            for path in sorted(day.iterdir()):
                if path.is_file():
                    path.unlink()
                    deleted.append(path)
            if not any(day.iterdir()):
                day.rmdir()
        if pruned and not any(camera.iterdir()):
            camera.rmdir()
    if deleted:
        log.info("evidence pruned %s", kv(files=len(deleted), retention_days=float(retention_days)))
    return deleted
