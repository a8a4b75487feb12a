"""Each camera's state as the daemon reports it on its /metrics endpoint (prometheus_client's parser)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

WANTED = {"har_monitor_camera_up": "up", "har_monitor_camera_last_frame_timestamp_seconds": "last_frame",
          "har_monitor_frames_dropped_total": "dropped", "har_monitor_frames_sampled_total": "sampled",
          "har_monitor_camera_reconnects_total": "reconnects", "har_monitor_camera_stalls_total": "stalls",
          "har_monitor_decode_errors_total": "decode_errors"}


@dataclass(frozen=True)
class CameraState:
    up: bool | None = None  # None: the daemon does not report this camera (another shard, or not running)
    last_frame: float | None = None  # UTC epoch seconds
    dropped: float = 0.0
    sampled: float = 0.0
    reconnects: float = 0.0
    stalls: float = 0.0
    decode_errors: float = 0.0

    def seconds_since_frame(self, now: float | None = None) -> float | None:
        if not self.last_frame:
            return None
        return max(0.0, (time.time() if now is None else now) - self.last_frame)


def scrape(url: str, timeout: float = 3.0) -> tuple[dict[str, CameraState], str | None]:
    """camera -> its state, and None; or ({}, why the daemon could not be read)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # nosec B310  # http://host:port built from site.yaml
            text = response.read(8 << 20).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {}, f"the daemon's metrics at {url} cannot be read ({getattr(exc, 'reason', None) or type(exc).__name__})"
    values: dict[str, dict[str, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                field = WANTED.get(sample.name)
                camera = sample.labels.get("camera")
                if field and camera:
                    values.setdefault(camera, {})[field] = values.get(camera, {}).get(field, 0.0) + sample.value
    except ValueError as exc:
        return {}, f"the daemon's metrics at {url} cannot be parsed ({exc})"
    return {camera: CameraState(**{**v, "up": v.get("up", 0.0) >= 1.0}) for camera, v in values.items()}, None
