"""Frames as every model sees them, live and in training: decode, sample, resize.

The daemon's cameras and training's clips both go through these functions, so a model sees
the same pixels offline as at run time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal

import av
import numpy as np

# Below this a frame shows nothing a model could recognise: the smallest backbone input (75x75) would be
# a blur of a few pixels, and a camera sending such frames is misconfigured (a thumbnail or test stream).
MIN_FRAME_SIDE = 32


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
        if self.next is not None and t - self.next < self.period:
            self.next += self.period
        else:
            self.next = t + self.period
        return True


def to_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """The frame resized in FFmpeg to uint8 RGB [height, width, 3], C-contiguous.

    Through planar RGB (gbrp): swscale's packed rgb24 output is both slower and less exact
    (measured on 640x360 H.264: 0.29 vs 0.56 ms to 299x299; mean error against a float
    BT.601 conversion 0.4 vs 1.6 levels at even widths; the same pixels at odd widths).
    """
    return frame.reformat(width=width, height=height, format="gbrp").to_ndarray()


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


def configure_decoder(stream: av.video.stream.VideoStream, threads: int, skip_loop_filter: bool = False) -> None:
    """Set up a stream's decoder before its first frame.

    `threads` 1: decode on the reader thread alone, the least CPU per frame (measured: 0.56 ms vs 0.66 ms with
    frame threads for 640x360 H.264), which leaves the cores to inference; otherwise frame and slice threads
    (`threads` of them, 0 = FFmpeg's choice): faster per stream, for bulk reads and 4K.
    `skip_loop_filter`: FFmpeg's skip_loop_filter=all, H.264/H.265 decoded without the deblocking filter: about
    a fifth less CPU, at the cost of faint block edges that add up until the next keyframe (measured on 720p:
    0.4-0.5 grey levels on average at the backbone's input; bench/decode.py, README).
    """
    if threads == 1:
        stream.codec_context.thread_count = 1
    else:
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
    if skip_loop_filter:
        stream.codec_context.options = {**stream.codec_context.options, "skip_loop_filter": "all"}


Discard = Literal["DEFAULT", "NONREF", "NONKEY"]
SKIP_FRAMES: dict[str, Discard] = {"none": "DEFAULT", "nonref": "NONREF", "nonkey": "NONKEY"}  # site.yaml -> AVDiscard


PICT_B = 3  # AVPictureType: a B-frame, which (in the streams cameras send) no other frame refers to
PROBE_SECONDS = 3.0


class SkipGuard:
    """FFmpeg's `skip_frame` on a decoder, used only while it cannot cost a sampled frame.

    Skipping frames (B-frames, or all but keyframes) saves most of the decode, but loses samples if the frames
    still decoded come further apart than the sampler's period. So a connection starts decoding every frame,
    for PROBE_SECONDS of stream time, watching the frames that would survive the skip (keyframes; frames that
    are not B-frames); only if they came at least once a sample period does skipping start (`decided(True)`).
    Should a later gap between decoded frames exceed the period (the camera's keyframe interval changed),
    skipping stops for the rest of the connection (`decided(False)`): that gap's samples are the only ones lost.
    """

    def __init__(self, stream: av.video.stream.VideoStream, mode: str, sample_fps: float,
                 decided: Callable[[bool, float], None] = lambda on, gap: None):
        self.stream = stream
        self.mode = mode
        self.limit = 1.05 / sample_fps  # a little slack for timestamp jitter
        self.decided = decided
        self.active = False
        self._probing = mode != "none"
        self._start: float | None = None
        self._survivors: list[float] = []
        self._last = 0.0

    def check(self, frame: av.VideoFrame, t: float) -> None:
        """`frame`, decoded at stream time `t`."""
        if self.active:
            if t - self._last > self.limit:
                self._set(False, t - self._last)
            self._last = t
        elif self._probing:
            self._probe(frame, t)

    def _probe(self, frame: av.VideoFrame, t: float) -> None:
        self._start = t if self._start is None else self._start
        if frame.key_frame if self.mode == "nonkey" else frame.pict_type != PICT_B:
            self._survivors.append(t)
        if t - self._start < PROBE_SECONDS:
            return
        self._probing = False
        times = [self._start, *self._survivors, t]
        gap = max(b - a for a, b in itertools.pairwise(times))
        self._last = t
        self._set(gap <= self.limit and bool(self._survivors), gap)

    def _set(self, on: bool, gap: float) -> None:
        self.active = on
        self.stream.codec_context.skip_frame = SKIP_FRAMES[self.mode] if on else "DEFAULT"
        self.decided(on, gap)


def open_options(location: str) -> dict[str, str]:
    if location.lower().startswith(("rtsp://", "rtsps://")):
        # Measured: these open in ~0.1 s instead of 1.2 s of probing and a burst of stale frames.
        return {"rtsp_transport": "tcp", "probesize": "32", "analyzeduration": "0"}
    return {}


def open_container(location: str, open_timeout: float, read_timeout: float) -> av.container.InputContainer:
    """Open a stream with FFmpeg timeouts so that no call can block forever."""
    return av.open(location, mode="r", options=open_options(location), timeout=(open_timeout, read_timeout))


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The container's first video stream; ValueError for a file or stream with none (audio only)."""
    if not container.streams.video:
        raise ValueError("no video stream")
    return container.streams.video[0]


def size_problem(width: int, height: int) -> str | None:
    """Why frames of this size cannot be watched, or None."""
    if min(width, height) < MIN_FRAME_SIDE:
        return f"video too small for the model: {width}x{height} (at least {MIN_FRAME_SIDE}x{MIN_FRAME_SIDE} pixels)"
    return None


def probe(location: str, timeout: float = 10.0) -> str | None:
    """Open a source and decode one frame: None when it can be watched, else what is wrong."""
    try:
        with open_container(location, timeout, timeout) as container:
            for frame in container.decode(video_stream(container)):
                return size_problem(frame.width, frame.height)
            return "no decodable frame"
    except (av.FFmpegError, OSError) as exc:  # before ValueError: some FFmpeg errors are ValueErrors too
        return f"cannot read video: {exc}"
    except ValueError as exc:
        return str(exc)


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
        stream = video_stream(container)
        configure_decoder(stream, 0)  # a bulk read: as fast as possible
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
        stream = video_stream(container)
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)
