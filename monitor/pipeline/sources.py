"""Camera sources: one supervised reader thread per camera (PyAV).

A reader opens the stream, decodes every frame, samples at `sample_fps` from the frames'
timestamps and resizes only the sampled frames to the backbone's input in FFmpeg.

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
from dataclasses import dataclass
from typing import Callable, Iterator

import av
import numpy as np

from monitor.logs import kv, redact, redact_url
from monitor.records import SampledFrame

log = logging.getLogger("monitor.sources")


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


class FrameSampler:
    """Picks frames at `fps` from their timestamps (seconds), whatever the stream's own rate."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self.next: float | None = None

    def take(self, t: float) -> bool:
        if self.next is not None and self.next - t > 2 * self.period:
            self.next = None  # timestamps went backwards (stream restarted): start a new grid
        if self.next is not None and t < self.next - 1e-6:
            return False
        # Keep a regular grid, but do not try to catch up after a gap (reconnect, loop).
        on_grid = self.next is not None and t - self.next < self.period
        self.next = (self.next + self.period) if on_grid else (t + self.period)
        return True


def backoff_delays(initial: float, maximum: float, rng: random.Random) -> Iterator[float]:
    """1, 2, 4 ... up to `maximum` seconds, each jittered down by up to 25% so cameras do not reconnect in lockstep."""
    delay = initial
    while True:
        yield min(maximum, delay) * rng.uniform(0.75, 1.0)
        delay = min(maximum, delay * 2)


def to_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """The frame resized in FFmpeg to uint8 RGB [height, width, 3], C-contiguous.

    Through planar RGB (gbrp): swscale's packed rgb24 output is both slower and less exact
    (measured on 640x360 H.264: 0.29 vs 0.56 ms to 299x299; mean error against a float
    BT.601 conversion 0.4 vs 1.6 levels at even widths; the same pixels at odd widths).
    """
    return frame.reformat(width=width, height=height, format="gbrp").to_ndarray()


def set_decode_threads(stream: av.video.stream.VideoStream, threads: int) -> None:
    """1: decode on the reader thread alone, the least CPU per frame (measured: 0.56 ms vs 0.66 ms with
    frame threads for 640x360 H.264), which leaves the cores to inference; otherwise frame and slice
    threads (`threads` of them, 0 = FFmpeg's choice): faster per stream, for bulk reads and 4K."""
    if threads == 1:
        stream.codec_context.thread_count = 1
    else:
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads


def open_options(location: str) -> dict:
    if location.lower().startswith(("rtsp://", "rtsps://")):
        # Measured: these open in ~0.1 s instead of 1.2 s of probing and a burst of stale frames.
        return {"rtsp_transport": "tcp", "probesize": "32", "analyzeduration": "0"}
    return {}


def open_container(location: str, open_timeout: float, read_timeout: float) -> av.container.InputContainer:
    """Open a stream with FFmpeg timeouts so that no call can block forever."""
    return av.open(location, mode="r", options=open_options(location), timeout=(open_timeout, read_timeout))


def probe(location: str, timeout: float = 10.0) -> str | None:
    """Open a source and decode one frame: None when it works, else what went wrong."""
    try:
        with open_container(location, timeout, timeout) as container:
            if not container.streams.video:
                return "no video stream"
            for _ in container.decode(video=0):
                return None
            return "no decodable frame"
    except (av.FFmpegError, OSError, ValueError) as exc:
        return f"cannot read video: {exc}"


class CameraSource:
    """Supervises one camera: start() returns at once, stop() asks the threads to end."""

    def __init__(self, settings: SourceSettings, hooks: SourceHooks, stop: threading.Event):
        self.s = settings
        self.hooks = hooks
        self._stop = stop
        self._generation = 0
        self._last_frame = 0.0  # monotonic time of the last decoded frame of the current reader
        self._connected = False
        self._ended = False  # a file without loop reached its end
        self._error: str | None = None
        self._thread = threading.Thread(target=self._supervise, name=f"camera-{settings.camera}", daemon=True)
        self._rng = random.Random(hash(settings.camera))

    @property
    def name(self) -> str:
        return self.s.camera

    @property
    def is_up(self) -> bool:
        return self._connected and time.monotonic() - self._last_frame <= self.s.stall_seconds

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _supervise(self) -> None:
        delays = backoff_delays(self.s.backoff_initial, self.s.backoff_max, self._rng)
        shown = redact_url(self.s.location)
        while not self._stop.is_set():
            self._generation += 1
            self._connected, self._error, self._last_frame = False, None, time.monotonic()
            reader = threading.Thread(target=self._read, args=(self._generation,), name=f"reader-{self.name}", daemon=True)
            reader.start()
            reason = self._watch(reader)
            self._generation += 1  # whatever happened, that reader may publish nothing more
            self.hooks.up(self.name, False)
            if self._stop.is_set():
                break
            if self._ended:
                log.info(kv(event="camera_ended", camera=self.name, url=shown))
                break
            if reason == "stalled":
                self.hooks.stall(self.name)
            if self._connected:
                delays = backoff_delays(self.s.backoff_initial, self.s.backoff_max, self._rng)
            delay = next(delays)
            log.warning(kv(event="camera_down", camera=self.name, url=shown, reason=reason, retry_in_s=round(delay, 1)))
            if self._stop.wait(delay):
                break
            self.hooks.reconnect(self.name)

    def _watch(self, reader: threading.Thread) -> str:
        """Wait until the reader ends or stalls; return why it is over."""
        while reader.is_alive() and not self._stop.is_set():
            reader.join(0.1)
            if self._connected and time.monotonic() - self._last_frame > self.s.stall_seconds:
                return "stalled"
        if self._stop.is_set():
            return "stopping"
        return self._error or "stream ended"

    def _read(self, generation: int) -> None:
        mine = lambda: generation == self._generation and not self._stop.is_set()  # noqa: E731
        try:
            self._read_stream(mine)
        except (av.FFmpegError, OSError, ValueError, av.error.EOFError) as exc:
            self._error = f"{type(exc).__name__}: {redact(str(exc))}"
        except Exception as exc:  # a reader must never take the process down
            log.exception(kv(event="reader_crashed", camera=self.name))
            self._error = f"{type(exc).__name__}: {redact(str(exc))}"

    def _read_stream(self, mine: Callable[[], bool]) -> None:
        s = self.s
        height, width = s.size
        sampler = FrameSampler(s.sample_fps)
        evidence_sampler = FrameSampler(s.evidence_fps) if s.evidence_fps else None
        offset = 0.0  # added to file timestamps when a file loops, so time keeps going forward
        pace_start: float | None = None
        while mine():
            with open_container(s.location, s.open_timeout, s.stall_seconds) as container:
                stream = container.streams.video[0]
                set_decode_threads(stream, s.decode_threads)
                frame_period = 1.0 / float(stream.average_rate or 25)
                last_t = offset - frame_period
                for frame in self._frames(container, stream):
                    if not mine():
                        return
                    now = time.monotonic()
                    # RTSP's first frame often has no timestamp: it follows the previous one
                    t = offset + frame.time if frame.time is not None else last_t + frame_period
                    if s.realtime and not s.is_network:
                        pace_start = pace_start if pace_start is not None else now - t
                        if self._stop.wait(max(0.0, pace_start + t - now)):
                            return
                    self._last_frame = time.monotonic()
                    if not self._connected:
                        self._connected = True
                        self.hooks.up(self.name, True)
                        log.info(kv(event="camera_up", camera=self.name, url=redact_url(s.location),
                                    codec=stream.codec_context.name, width=stream.width, height=stream.height))
                    ts = time.time()
                    self.hooks.decoded(self.name, ts)
                    last_t = t
                    if sampler.take(t):
                        self.hooks.frame(SampledFrame(self.name, ts, self._last_frame, to_rgb(frame, width, height)))
                    if evidence_sampler is not None and evidence_sampler.take(t):
                        self.hooks.evidence(self.name, ts, self._evidence_frame(frame))
            if s.is_network:
                self._error = "stream ended"  # a live stream's end is a disconnect
                return
            if not s.loop:
                self._ended = True
                return
            offset = last_t + frame_period

    def _evidence_frame(self, frame: av.VideoFrame) -> np.ndarray:
        """Reduced in FFmpeg to the evidence width, aspect kept, even sides: cheap for 1080p cameras."""
        width = min(self.s.evidence_width, frame.width) // 2 * 2
        height = max(2, round(frame.height * width / frame.width / 2) * 2)
        return to_rgb(frame, width, height)

    def _frames(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
        """Decode packet by packet so a corrupt packet is counted and skipped, not fatal."""
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                self.hooks.decode_error(self.name)
                continue
            yield from frames


def read_frames(path: str, size: tuple[int, int], sample_fps: float | None = None,
                indices: np.ndarray | None = None) -> np.ndarray:
    """A whole clip, sampled and resized exactly as a live camera is: uint8 [N, H, W, 3].

    Training uses this so that a model sees the same frames offline as at run time. With
    `indices` (frame numbers, ascending, repeats allowed) instead of `sample_fps`, only those
    frames are resized.
    """
    height, width = size
    sampler = FrameSampler(sample_fps) if sample_fps else None
    wanted = np.bincount(indices) if indices is not None and len(indices) else np.zeros(0, int)
    frames = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        set_decode_threads(stream, 0)  # a bulk read: as fast as possible
        for i, frame in enumerate(container.decode(stream)):
            if sampler is not None:
                t = frame.time if frame.time is not None else i / float(stream.average_rate or 25)
                repeat = int(sampler.take(t))
            else:
                repeat = int(wanted[i]) if i < len(wanted) else 0
                if i >= len(wanted):
                    break
            if repeat:
                rgb = to_rgb(frame, width, height)
                frames += [rgb] * repeat
    if not frames:
        return np.empty((0, height, width, 3), np.uint8)
    if indices is not None and len(frames) < len(indices):  # containers may promise a frame or two too many
        frames += [frames[-1]] * (len(indices) - len(frames))
    return np.stack(frames)


def count_frames(path: str) -> int:
    """Frames in a video file: from the container when it says, else by counting packets (no decoding)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)
