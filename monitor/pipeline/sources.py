"""Camera sources: one supervised reader thread per camera (PyAV).

A reader opens the stream, decodes every frame, samples at `sample_fps` from the frames'
timestamps and resizes only the sampled frames to the backbone's input in FFmpeg (a camera with
zones passes each sampled frame to its `split` instead: one frame per zone, pipeline/zones.py). With
motion gating, each stream's frame then passes the connection's `MotionGate` (pipeline/motion.py), which
marks an unchanged one to reuse the last embedding; each connection has its own, so its first frames are
embedded and an abandoned reader shares nothing with the next.

Isolation: a supervisor thread per camera watches its reader. PyAV can block forever on a
stalled stream, and a killed server just ends the iteration, so the supervisor decides from
the outside: no frame for `stall_seconds` -> the stream is declared down and abandoned (a
generation number stops it from publishing anything more; FFmpeg's own read timeout makes
the abandoned thread exit soon after), then a new reader connects with jittered
exponential backoff, forever.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import numpy as np

from monitor.backoff import Backoff
from monitor.messages import SampledFrame
from monitor.model.frames import (
    FrameSampler,
    SkipGuard,
    configure_decoder,
    open_container,
    reduced_size,
    size_problem,
    to_rgb,
    video_stream,
)
from monitor.ops.lifecycle import Worker
from monitor.ops.logs import kv, redact, redact_url
from monitor.pipeline.motion import MotionGate, MotionSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceSettings:
    camera: str
    location: str  # URL or absolute file path
    is_network: bool
    size: tuple[int, int]  # (height, width) of the backbone input
    sample_fps: float
    loop: bool = False
    realtime: bool = True
    stall_seconds: float = 10.0
    open_timeout: float = 10.0
    decode_threads: int = 1  # 1: no threads (least CPU); n > 1: up to n frame+slice threads; 0: FFmpeg's choice
    skip_frames: str = "none"  # none | nonref | nonkey: FFmpeg's skip_frame, undone when it would cost a sample
    skip_loop_filter: bool = False  # decode without the deblocking filter: less CPU, faint block edges
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    evidence_fps: float = 0.0  # 0: no evidence frames
    evidence_width: int = 480


@dataclass
class SourceHooks:
    """What a source reports; the daemon connects these to metrics and the frame queues."""

    frame: Callable[[SampledFrame], None]
    decoded: Callable[[str, float], None] = lambda camera, ts: None
    decode_error: Callable[[str], None] = lambda camera: None
    up: Callable[[str, bool], None] = lambda camera, up: None
    reconnect: Callable[[str], None] = lambda camera: None
    stall: Callable[[str], None] = lambda camera: None
    evidence: Callable[[str, float, np.ndarray], None] = lambda camera, ts, rgb: None  # reduced-size RGB


Split = Callable[[av.VideoFrame, float, float], list[SampledFrame]]  # (frame, ts, mono) -> frames for inference


class CameraSource(Worker):
    """Supervises one camera (ops.lifecycle: start, stop, join). Its thread is the supervisor; each
    connection gets a reader thread of its own, which the supervisor abandons when it stalls."""

    def __init__(self, settings: SourceSettings, hooks: SourceHooks, split: Split | None = None,
                 motion: MotionSettings | None = None):
        super().__init__(f"camera-{settings.camera}")
        self.s = settings
        self.hooks = hooks
        self._split = split or self._whole_frame
        self._motion = motion
        self._generation = 0
        self._last_frame = 0.0  # monotonic time of the last decoded frame of the current reader
        self._connected = False
        self._ended = False  # a file without loop reached its end
        self._error: str | None = None

    @property
    def camera(self) -> str:
        return self.s.camera

    @property
    def is_up(self) -> bool:
        return self._connected and time.monotonic() - self._last_frame <= self.s.stall_seconds

    @property
    def healthy(self) -> bool:
        return super().healthy or self._ended  # a file camera that played once is done, not dead

    def run(self) -> None:
        backoff = Backoff(self.s.backoff_initial, self.s.backoff_max, rng=random.Random(hash(self.camera)))  # nosec B311  # retry jitter, no secret
        shown = redact_url(self.s.location)
        while not self.stopping.is_set():
            reason = self._connect_once()
            self.hooks.up(self.camera, False)
            if self.stopping.is_set():
                break
            if self._ended:
                log.info(kv(event="camera_ended", camera=self.camera, url=shown))
                break
            if reason == "stalled":
                self.hooks.stall(self.camera)
            if self._connected:
                backoff.reset()
            delay = backoff.next()
            log.warning(kv(event="camera_down", camera=self.camera, url=shown, reason=reason, retry_in_s=round(delay, 1)))
            if self.stopping.wait(delay):
                break
            self.hooks.reconnect(self.camera)

    def _connect_once(self) -> str:
        """Start a reader for a new connection and watch it until it is over; return why it is over."""
        self._generation += 1
        self._connected, self._error, self._last_frame = False, None, time.monotonic()
        reader = threading.Thread(target=self._read, args=(self._generation,), name=f"reader-{self.camera}", daemon=True)
        reader.start()
        reason = self._watch(reader)
        self._generation += 1  # whatever happened, that reader may publish nothing more
        return reason

    def _watch(self, reader: threading.Thread) -> str:
        """Wait until the reader ends or stalls; return why it is over."""
        while reader.is_alive() and not self.stopping.is_set():
            reader.join(0.1)
            if self._connected and time.monotonic() - self._last_frame > self.s.stall_seconds:
                return "stalled"
        if self.stopping.is_set():
            return "stopping"
        return self._error or "stream ended"

    def _read(self, generation: int) -> None:
        mine = lambda: generation == self._generation and not self.stopping.is_set()
        try:
            self._read_stream(mine)
        except (av.FFmpegError, OSError, ValueError, av.error.EOFError) as exc:
            self._error = f"{type(exc).__name__}: {redact(str(exc))}"
        except Exception as exc:  # a reader must never take the process down
            log.exception(kv(event="reader_crashed", camera=self.camera))
            self._error = f"{type(exc).__name__}: {redact(str(exc))}"

    def _read_stream(self, mine: Callable[[], bool]) -> None:
        s = self.s
        sampler = FrameSampler(s.sample_fps)
        evidence_sampler = FrameSampler(s.evidence_fps) if s.evidence_fps else None
        offset = 0.0  # added to file timestamps when a file loops, so time keeps going forward
        pace_start: float | None = None
        gate = MotionGate(self._motion) if self._motion is not None else None
        while mine():
            with open_container(s.location, s.open_timeout, s.stall_seconds) as container:
                stream = video_stream(container)
                configure_decoder(stream, s.decode_threads, s.skip_loop_filter)
                skip = SkipGuard(stream, s.skip_frames, s.sample_fps, self._skip_decided)
                frame_period = 1.0 / float(stream.average_rate or 25)
                last_t = offset - frame_period
                for frame in self._frames(container, stream):
                    if not mine():
                        return
                    if not self._connected and (problem := size_problem(frame.width, frame.height)):
                        self._error = problem  # never up: the supervisor backs off instead of retrying at once
                        return
                    now = time.monotonic()
                    # RTSP's first frame often has no timestamp: it follows the previous one
                    t = offset + frame.time if frame.time is not None else last_t + frame_period
                    if s.realtime and not s.is_network:
                        pace_start = pace_start if pace_start is not None else now - t
                        if self.stopping.wait(max(0.0, pace_start + t - now)):
                            return
                    self._last_frame = time.monotonic()
                    if not self._connected:
                        self._connected = True
                        self.hooks.up(self.camera, True)
                        log.info(kv(event="camera_up", camera=self.camera, url=redact_url(s.location),
                                    codec=stream.codec_context.name, width=stream.width, height=stream.height))
                    skip.check(frame, t)
                    ts = time.time()
                    self.hooks.decoded(self.camera, ts)
                    last_t = t
                    if sampler.take(t):
                        for sampled in self._split(frame, ts, self._last_frame):
                            self.hooks.frame(gate(sampled) if gate is not None else sampled)
                    if evidence_sampler is not None and evidence_sampler.take(t):
                        self.hooks.evidence(self.camera, ts, self._evidence_frame(frame))
            if s.is_network:
                self._error = "stream ended"  # a live stream's end is a disconnect
                return
            if not s.loop:
                self._ended = True
                return
            offset = last_t + frame_period

    def _skip_decided(self, on: bool, gap: float) -> None:
        """The decoder skips frames from now on (`on`), or no more: the longest gap it saw or met, in seconds."""
        log.log(logging.INFO if on else logging.WARNING,
                kv(event="skip_frames_on" if on else "skip_frames_off", camera=self.camera, mode=self.s.skip_frames,
                   gap_s=round(gap, 3), sample_period_s=round(1 / self.s.sample_fps, 3)))

    def _whole_frame(self, frame: av.VideoFrame, ts: float, mono: float) -> list[SampledFrame]:
        height, width = self.s.size
        return [SampledFrame(self.camera, ts, mono, to_rgb(frame, width, height))]

    def _evidence_frame(self, frame: av.VideoFrame) -> np.ndarray:
        """Reduced in FFmpeg to the evidence width, aspect kept, even sides: cheap for 1080p cameras."""
        return to_rgb(frame, *reduced_size(frame.width, frame.height, self.s.evidence_width))

    def _frames(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
        """Decode packet by packet so a corrupt packet is counted and skipped, not fatal."""
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                self.hooks.decode_error(self.camera)
                continue
            yield from frames


