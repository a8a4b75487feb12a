"""Evidence of a camera with zones shows them: every zone outlined, the episode's own in red."""

from __future__ import annotations

import threading

import av
import cv2
import numpy as np

from monitor.evidence.recorder import EvidenceRecorder
from monitor.model.zones import Zone
from support.assets import asset

BASE = 1_750_000_000.0
ZONES = [Zone.from_rect("window", (0.0, 0.0, 0.5, 1.0)), Zone.from_rect("table", (0.5, 0.05, 0.95, 0.95))]


def red(rgb: np.ndarray) -> np.ndarray:
    return (rgb[:, :, 0] > 180) & (rgb[:, :, 1] < 90) & (rgb[:, :, 2] < 90)


def test_clips_and_snapshots_outline_the_zones_with_the_episodes_zone_in_red(tmp_path):
    written = []
    done = threading.Event()
    rec = EvidenceRecorder(tmp_path, pre_roll=1, post_roll=1, fps=5, zones={"room": ZONES},
                           on_written=lambda e: (written.append(e), done.set()))
    rec.start()
    with av.open(str(asset("videos", "intel_one-by-one-person-detection.mp4"))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            rgb = frame.to_ndarray(format="rgb24")
            rec.add_frame("room", BASE + frame.time, rgb)
            rec.add_frame("plain", BASE + frame.time, rgb)
            if i == 10:
                rec.episode_opened("ep-table", "room", BASE + frame.time, zone="table")
                rec.episode_opened("ep-plain", "plain", BASE + frame.time)
            if i > 40:
                break
    assert rec.close(30) and len(written) == 2
    by_id = {e.episode_id: e for e in written}
    snap = cv2.cvtColor(cv2.imread(str(by_id["ep-table"].snapshot)), cv2.COLOR_BGR2RGB)
    plain = cv2.cvtColor(cv2.imread(str(by_id["ep-plain"].snapshot)), cv2.COLOR_BGR2RGB)
    height, width = snap.shape[:2]
    table_edge = red(snap)[:, int(0.95 * width) - 4:int(0.95 * width) + 4]
    assert table_edge.sum() > height // 2, "the table zone's right edge, in red"
    assert red(snap).sum() > red(plain).sum() + 500 and not red(plain[:, : width // 2]).any()
    with av.open(str(by_id["ep-table"].clip)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert red(first)[:, int(0.95 * width) - 4:int(0.95 * width) + 4].sum() > height // 3, "and in the clip"
