"""The JSON of a notification: the same body for MQTT and webhooks, fixed once it is in the outbox.

```json
{"id": "5f0c...", "event": "opened", "site": "plant-7", "camera": "packing-1", "zone": "station-b",
 "rule": "no-smoking", "severity": "critical", "action": "smoking", "confidence": 0.93,
 "started_at": "2026-12-01T09:12:03.250Z", "ended_at": null, "labels": {"sop": "SOP-114"},
 "snapshot_url": "https://qa.plant-7.example/violations/5f0c.../snapshot"}
```
`zone` is the camera's zone for a camera without zones (null when it has none); `snapshot_url` is
there when site.yaml names the console (`notify.console_url`); `ended_at` is set on `closed`.
`id` + `event` identify a notification: receivers drop repeats by it (delivery is at least once).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from monitor.messages import ViolationEvent


def utc_iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notification(event: ViolationEvent, site: str, camera_zone: str | None, console_url: str | None) -> dict:
    """The outbox record of an opened or closed episode: the camera (for ordering and the MQTT topic), the key
    (`<id>:<event>`) and the body, serialised once so every retry sends the same bytes."""
    body = {"id": event.episode_id, "event": event.kind, "site": site, "camera": event.camera,
            "zone": event.zone or camera_zone, "rule": event.rule, "severity": event.severity,
            "action": event.action, "confidence": round(float(event.confidence), 4),
            "started_at": utc_iso(event.started_at), "ended_at": utc_iso(event.ended_at), "labels": event.labels}
    if console_url:
        body["snapshot_url"] = f"{console_url}/violations/{event.episode_id}/snapshot"
    return {"camera": event.camera, "key": f"{event.episode_id}:{event.kind}",
            "body": json.dumps(body, separators=(",", ":"), sort_keys=True)}
