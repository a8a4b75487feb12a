"""Media files: THE H.264 writer (evidence clips, the demo's and tests' synthetic clips, the benchmark's
camera-like clips) and JPEG snapshots."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from monitor.fileio import atomic_output

_MS = Fraction(1, 1000)


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float, *, times: Sequence[float] | None = None,
                keyframe_interval: int | None = None, bitrate_kbps: int | None = None, x264_params: str = "",
                threads: int | None = None, metadata: dict[str, str] | None = None) -> int:
    """Write uint8 RGB frames [H, W, 3] as an H.264 (yuv420p) MP4, whole or not at all; return the frame count.

    `path` appears complete or not at all (`fileio.atomic_output`); parents are created. The moov atom
    comes first, so browsers play it while it downloads. yuv420p needs even sides: an odd last row or
    column is dropped. `frames` may be a generator (frames are encoded as they come).

    - `times`: each frame's time in seconds (any origin): the clip keeps the real spacing (ms precision);
      `fps` is then only the nominal rate x264 plans its bit budget with. Without it, frames are `1/fps` apart.
    - `keyframe_interval`: a keyframe exactly every N frames (cheap seeking and looping, or a camera's GOP).
    - `bitrate_kbps`: a camera-like capped bitrate (VBV) instead of constant quality (CRF 23).
    - `x264_params`: more x264 settings, `key=value:key=value`; `threads`: encoder threads (default x264's).
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    params = [x264_params] if x264_params else []
    options = {"preset": "veryfast"}
    if keyframe_interval is not None:
        params.insert(0, f"keyint={keyframe_interval}:min-keyint={keyframe_interval}:scenecut=0")
    if bitrate_kbps is not None:
        params.append(f"vbv-maxrate={bitrate_kbps}:vbv-bufsize={bitrate_kbps}")
    else:
        options["crf"] = "23"
    if threads is not None:
        options["threads"] = str(threads)
    if params:
        options["x264-params"] = ":".join(params)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    height, width = _even_size(first)
    count = 0
    with atomic_output(Path(path)) as tmp, av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        out.metadata.update(metadata or {})
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001), options=options)
        if keyframe_interval is not None:
            stream.codec_context.gop_size = keyframe_interval
        if bitrate_kbps is not None:
            stream.codec_context.bit_rate = bitrate_kbps * 1000
        if times is not None:
            stream.time_base = stream.codec_context.time_base = _MS
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        last_pts = -1
        for i, rgb in enumerate(itertools.chain([first], frames)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
            if times is not None:  # the muxer needs strictly rising pts
                last_pts = frame.pts = max(last_pts + 1, round((times[i] - times[0]) * 1000))
                frame.time_base = _MS
            out.mux(stream.encode(frame))
            count += 1
        out.mux(stream.encode(None))
    return count


def _even_size(rgb: np.ndarray) -> tuple[int, int]:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"frames must be uint8 RGB [H, W, 3], got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    if height == 0 or width == 0:
        raise ValueError(f"frames of {rgb.shape[0]}x{rgb.shape[1]} are too small to encode")
    return height, width


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode the snapshot as JPEG")
    return data.tobytes()
