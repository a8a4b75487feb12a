"""Evidence for violation episodes: a short H.264 clip around the moment an episode opened, and a snapshot.

Camera threads hand every decoded frame to `EvidenceRecorder.add_frame`; it keeps a small per-camera
ring buffer (reduced to `width` px wide, at most `fps` frames per second). When an episode opens,
`episode_opened` schedules its evidence; once the camera's frames reach `opened + post_roll` (or a
wall-clock deadline passes: a camera may go down) ONE writer thread writes

    <directory>/<camera>/<YYYY-MM-DD (UTC)>/<episode_id>.mp4   frames from opened - pre_roll to opened + post_roll
    <directory>/<camera>/<YYYY-MM-DD (UTC)>/<episode_id>.jpg   the frame nearest the opening

each whole or not at all (`fileio.atomic_output`: a crash never leaves half a clip), hashes
both (SHA-256) and reports an `Evidence` record to `on_written`. The same thread also refreshes

    <directory>/<camera>/latest.jpg                              the newest reduced frame, every `latest_every` s

(atomically too, but not fsync'd: a live view for QA's console, not evidence). Nothing here blocks a
camera thread on disk or encoding. With `blur_faces=True` (privacy: EU plants, works councils) faces are
blurred in every frame before anything reaches the disk. A camera with zones gets their outlines drawn on
its clips and snapshots, the episode's own zone in red.

Memory per camera: the ring holds `ceil((pre_roll + post_roll + 1) * fps) + 1` frames of
`width x height x 3` bytes. Defaults (5 s + 5 s, 5 fps, 480 px): 56 frames; 480x270 (16:9) is 389 kB
a frame, 21.8 MB per camera; 480x360 (4:3) is 29 MB. An episode being written holds references to at
most `(pre_roll + post_roll) * fps + 1` of those frames (shared, not copied) until its clip is written.

>>> import tempfile
>>> written = []  # the writer thread may write the clip before close(), as soon as the post-roll is in
>>> rec = EvidenceRecorder(Path(tempfile.mkdtemp()), pre_roll=1, post_roll=1, on_written=written.append)
>>> rec.start()
>>> for i in range(20):  # 4 s of 768x432 frames at 5 fps
...     rec.add_frame("cam-1", 1_700_000_000 + i / 5, np.zeros((432, 768, 3), np.uint8))
...     if i == 5:
...         rec.episode_opened("ep-1", "cam-1", 1_700_000_001.0)
>>> rec.close(timeout=30)
True
>>> [(e.clip.parent.name, e.clip.name, e.frames) for e in written]
[('2023-11-14', 'ep-1.mp4', 11)]
"""

from __future__ import annotations

import enum
import logging
import math
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from monitor.evidence.faces import blur_faces_in, load_face_detector
from monitor.evidence.media import encode_jpeg, write_video
from monitor.fileio import atomic_write, sha256_file
from monitor.model.frames import reduced_size
from monitor.model.zones import Zone, draw_zones
from monitor.ops.lifecycle import Worker
from monitor.ops.logs import kv

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # camera and episode ids become path components
_RING_SLACK = 1.0  # seconds the ring covers beyond pre + post roll: tolerates that much jitter

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

    def as_record(self, root: Path | None = None) -> dict[str, Any]:
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
    latest_at: float = -math.inf  # time of the frame last handed over for latest.jpg


@dataclass
class _Pending:
    episode_id: str
    camera: str
    opened_ts: float
    deadline: float  # monotonic: write what there is by then
    zone: str = ""


class _Wake(enum.Enum):
    WAKE = "wake"


WAKE = _Wake.WAKE


@dataclass(frozen=True)
class _Job:
    episode_id: str
    camera: str
    opened_ts: float
    frames: list[Frame] = field(repr=False)
    zone: str = ""


def _log_written(evidence: Evidence) -> None:
    log.info(kv(event="evidence_written", episode=evidence.episode_id, camera=evidence.camera, clip=evidence.clip,
                                       frames=evidence.frames))


def _log_error(episode_id: str, exc: Exception) -> None:
    log.warning(kv(event="evidence_failed", episode=episode_id, error=exc))


class EvidenceRecorder(Worker):
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
                 grace: float = 5.0, max_pending: int = 32, face_cascade: Path | None = None,
                 zones: dict[str, list[Zone]] | None = None, latest_every: float = 5.0):
        if pre_roll < 0 or post_roll < 0 or fps <= 0 or width < 2 or grace < 0 or max_pending < 1:
            raise ValueError("evidence: pre_roll, post_roll, grace >= 0, fps > 0, width >= 2, max_pending >= 1")
        self.directory = Path(directory)
        self.pre_roll, self.post_roll, self.fps, self.width = pre_roll, post_roll, fps, width
        self.grace, self.max_pending, self.latest_every = grace, max_pending, latest_every
        self.on_written, self.on_error = on_written, on_error
        self.zones = zones or {}  # camera -> its zones, outlined on its evidence
        super().__init__("evidence-writer")
        self._faces = load_face_detector(face_cascade) if blur_faces else None  # fail at start, not mid-episode
        self.ring_frames = math.ceil((pre_roll + post_roll + _RING_SLACK) * fps) + 1
        self._lock = threading.Lock()
        self._cameras: dict[str, _Camera] = {}
        self._pending: dict[str, _Pending] = {}  # by episode id
        self._latest: dict[str, Frame] = {}  # per camera: the frame latest.jpg is to show next
        self._queued = 0  # jobs handed to the writer and not yet done
        # Jobs are bounded by max_pending; None ends the writer. WAKE (one per latest frame, every latest_every s
        # a camera, or per scheduled episode) makes it write latest.jpg and look at the deadlines now, not at the
        # end of its wait (up to 1 s).
        self._jobs: queue.Queue[_Job | _Wake | None] = queue.Queue()
        self._closing = False

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
            if ts - cam.latest_at >= self.latest_every and _NAME.match(camera):
                cam.latest_at = ts
                self._latest[camera] = (ts, small)
                self._jobs.put(WAKE)
            ready = [p for p in self._pending.values() if p.camera == camera and ts >= p.opened_ts + self.post_roll]
            for p in ready:
                self._enqueue(p)

    def episode_opened(self, episode_id: str, camera: str, opened_ts: float, zone: str = "") -> None:
        """Schedule the evidence of an episode that opened at `opened_ts` (UTC epoch seconds) in `zone`."""
        for what, name in (("episode id", episode_id), ("camera", camera)):
            if not _NAME.match(name):
                raise ValueError(f"evidence: {what} {name!r} cannot be a file name")
        with self._lock:
            if self._closing or episode_id in self._pending:
                log.warning(kv(event="evidence_not_scheduled", episode=episode_id, reason="closing" if self._closing else "duplicate"))
                return
            if len(self._pending) + self._queued >= self.max_pending:
                error: Exception | None = RuntimeError(f"{self.max_pending} episodes already waiting for evidence")
            else:
                error = None
                pending = _Pending(episode_id, camera, opened_ts, time.monotonic() + self.post_roll + self.grace, zone)
                self._pending[episode_id] = pending
                cam = self._cameras.get(camera)
                if cam is not None and cam.newest >= opened_ts + self.post_roll:  # the episode was reported late
                    self._enqueue(pending)
                else:
                    self._jobs.put(WAKE)  # its deadline may come before the writer's wait ends
        if error is not None:
            self._report_error(episode_id, error)

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Write every scheduled episode with the frames there are, then end (ops.lifecycle)."""
        with self._lock:
            if not self._closing:
                self._closing = True
                for p in list(self._pending.values()):
                    self._enqueue(p)
                self._jobs.put(None)
        super().stop()

    def close(self, timeout: float) -> bool:
        """stop() and join(): True if every scheduled episode was written in time."""
        self.stop()
        return self.join(timeout)

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
        self._jobs.put(_Job(p.episode_id, p.camera, p.opened_ts, frames, p.zone))

    def _expire(self) -> float:
        """Queue the episodes past their deadline; seconds until the next deadline (at most 1)."""
        now = time.monotonic()
        with self._lock:
            for p in [p for p in self._pending.values() if p.deadline <= now]:
                log.info(kv(event="evidence_deadline", episode=p.episode_id, camera=p.camera))  # camera late or down
                self._enqueue(p)
            nearest = min((p.deadline for p in self._pending.values()), default=now + 1.0)
        return min(max(nearest - now, 0.01), 1.0)

    def _write_latest(self) -> None:
        with self._lock:
            latest, self._latest = self._latest, {}
        for camera, frame in latest.items():
            try:
                rgb = frame[1] if self._faces is None else blur_faces_in(self._faces, [frame])[0][1]
                atomic_write(self.directory / camera / "latest.jpg", encode_jpeg(rgb, quality=80), durable=False)
            except (OSError, RuntimeError) as exc:  # a full disk costs the live view, nothing else
                log.warning(kv(event="latest_frame_failed", camera=camera, error=exc))

    def run(self) -> None:
        while True:
            self._write_latest()
            try:
                job = self._jobs.get(timeout=self._expire())
            except queue.Empty:
                continue
            if job is None:
                return
            if job is WAKE:
                continue
            try:
                evidence = self._write(job)
            except Exception as exc:  # a full disk or a bad frame costs one episode's evidence, not the writer
                self._report_error(job.episode_id, exc)
            else:
                try:
                    self.on_written(evidence)
                except Exception:
                    log.exception(kv(event="evidence_on_written_failed", episode=job.episode_id))
            finally:
                with self._lock:
                    self._queued -= 1

    def _report_error(self, episode_id: str, exc: Exception) -> None:
        try:
            self.on_error(episode_id, exc)
        except Exception:
            log.exception(kv(event="evidence_on_error_failed", episode=episode_id))

    def _write(self, job: _Job) -> Evidence:
        if not job.frames:
            raise RuntimeError(f"camera {job.camera} delivered no frame between {job.opened_ts - self.pre_roll:.3f} "
                               f"and {job.opened_ts + self.post_roll:.3f}")
        started = time.perf_counter()
        lo = job.opened_ts - self.pre_roll
        if job.frames[0][0] > lo + 2 / self.fps:  # reported later than the ring covers, or the camera was down
            log.warning(kv(event="evidence_partial", episode=job.episode_id, camera=job.camera,
                                                  missing_seconds=job.frames[0][0] - lo))
        frames = blur_faces_in(self._faces, job.frames) if self._faces is not None else job.frames
        zones = self.zones.get(job.camera)
        if zones:  # on copies: the ring's frames are shared with other episodes
            frames = [(ts, draw_zones(rgb, zones, job.zone)) for ts, rgb in frames]
        day = datetime.fromtimestamp(job.opened_ts, timezone.utc).strftime("%Y-%m-%d")
        folder = self.directory / job.camera / day
        clip, snapshot = folder / f"{job.episode_id}.mp4", folder / f"{job.episode_id}.jpg"
        nearest = min(frames, key=lambda f: abs(f[0] - job.opened_ts))
        start_iso = datetime.fromtimestamp(frames[0][0], timezone.utc).isoformat(timespec="milliseconds")
        # One encoder thread: a clip is ~50 small frames, and x264's threads cost ~25% more CPU (taken
        # from inference) for no gain in wall time here (measured 0.10 vs 0.13 s CPU per 480x270 clip).
        write_video(clip, [rgb for _, rgb in frames], self.fps, times=[ts for ts, _ in frames], threads=1,
                    metadata={"creation_time": start_iso.replace("+00:00", "Z"),
                              "comment": f"episode={job.episode_id} camera={job.camera}"})
        atomic_write(snapshot, encode_jpeg(nearest[1]))
        evidence = Evidence(job.episode_id, job.camera, clip, sha256_file(clip), snapshot, sha256_file(snapshot),
                            frames[0][0], frames[-1][0], len(frames))
        log.debug(kv(event="evidence_encoded", episode=job.episode_id, frames=len(frames),
                                            seconds=time.perf_counter() - started))
        return evidence
