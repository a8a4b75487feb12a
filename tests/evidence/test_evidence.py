"""Evidence clips and snapshots from real footage: coverage, timestamps, hashes, atomic files, face blur, pruning."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from monitor.errors import UserError
from monitor.evidence.faces import blur_boxes, detect_faces, load_face_detector
from monitor.evidence.recorder import Evidence, EvidenceRecorder
from monitor.evidence.retention import prune
from monitor.model.frames import reduced_size
from support.assets import asset
from support.waiting import wait_until

BASE = 1_750_000_000.0  # 2025-06-15T15:06:40Z: frame ts = BASE + the frame's time in the clip
FLOOR = "intel_one-by-one-person-detection.mp4"  # 768x432, 10 fps: the closest to a floor camera


def clip_frames(name: str, seconds: float) -> Iterator[tuple[float, np.ndarray]]:
    """(time in the clip, full-size RGB) for the first `seconds` of a shared clip, decoded with PyAV."""
    with av.open(str(asset("videos", name))) as container:
        for frame in container.decode(video=0):
            if frame.time > seconds:
                return
            yield frame.time, frame.to_ndarray(format="rgb24")


def reduce(rgb: np.ndarray, width: int = 480) -> np.ndarray:
    return cv2.resize(rgb, reduced_size(rgb.shape[1], rgb.shape[0], width), interpolation=cv2.INTER_AREA)


def decoded_times(path: Path) -> tuple[list[float], av.video.stream.VideoStream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(f.pts * f.time_base) for f in container.decode(stream)]
        return times, stream


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Collect:
    """on_written / on_error that tests can wait on."""

    def __init__(self):
        self.written: list[Evidence] = []
        self.errors: list[tuple[str, Exception]] = []
        self.done = threading.Event()

    def ok(self, evidence: Evidence) -> None:
        self.written.append(evidence)
        self.done.set()

    def error(self, episode_id: str, exc: Exception) -> None:
        self.errors.append((episode_id, exc))
        self.done.set()

    def kwargs(self) -> dict:
        return {"on_written": self.ok, "on_error": self.error}


def test_a_real_clip_gives_a_clip_covering_pre_to_post_roll_and_a_snapshot(tmp_path):
    got = Collect()
    rec = EvidenceRecorder(tmp_path, pre_roll=5.0, post_roll=5.0, fps=5.0, width=480, **got.kwargs())
    rec.start()
    opened = BASE + 8.0
    fed, nearest = [], None
    for t, rgb in clip_frames(FLOOR, 20.0):
        rec.add_frame("line-1", BASE + t, rgb)
        fed.append(BASE + t)
        if nearest is None or abs(BASE + t - opened) < abs(nearest[0] - opened):
            nearest = (BASE + t, rgb)
        if t == pytest.approx(9.0):  # the rule engine reports the episode a second after its window ended
            rec.episode_opened("ep-0001", "line-1", opened)
    assert rec.close(timeout=60)
    assert not got.errors
    [ev] = got.written

    day = datetime.fromtimestamp(opened, timezone.utc).strftime("%Y-%m-%d")
    assert ev.clip == tmp_path / "line-1" / day / "ep-0001.mp4"
    assert ev.snapshot == tmp_path / "line-1" / day / "ep-0001.jpg"
    assert sorted(p.name for p in ev.clip.parent.iterdir()) == ["ep-0001.jpg", "ep-0001.mp4"], "no temp files left"
    assert ev.clip_sha256 == sha256(ev.clip) and ev.snapshot_sha256 == sha256(ev.snapshot)
    assert (ev.episode_id, ev.camera) == ("ep-0001", "line-1")

    # covers opened - pre_roll .. opened + post_roll, at 5 fps
    assert abs(ev.start_ts - (opened - 5.0)) <= 1 / 5 and abs(ev.end_ts - (opened + 5.0)) <= 1 / 5
    times, stream = decoded_times(ev.clip)
    assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    assert (stream.codec_context.width, stream.codec_context.height) == (480, 270)
    assert len(times) == ev.frames and abs(ev.frames - 5.0 * 10) <= 2
    assert times[0] == pytest.approx(0.0, abs=1e-3)
    assert times[-1] == pytest.approx(ev.end_ts - ev.start_ts, abs=2e-3)
    # real spacing: every frame sits at the capture time of a frame the camera delivered
    for t in times:
        assert min(abs(ev.start_ts + t - f) for f in fed) < 2e-3
    assert all(0 < b - a <= 2 / 5 + 1e-3 for a, b in itertools.pairwise(times))

    # the snapshot: a JPEG of the reduced size, the frame nearest the opening
    data = ev.snapshot.read_bytes()
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    snap = cv2.cvtColor(cv2.imread(str(ev.snapshot)), cv2.COLOR_BGR2RGB)
    assert snap.shape == (270, 480, 3)
    assert np.abs(snap.astype(int) - reduce(nearest[1])).mean() < 3, "JPEG q90 of the frame nearest opened_ts"
    assert ev.as_record(tmp_path)["clip"] == {"path": f"line-1/{day}/ep-0001.mp4", "sha256": ev.clip_sha256}


def test_a_camera_that_stops_still_gets_its_evidence_at_the_deadline(tmp_path):
    got = Collect()
    rec = EvidenceRecorder(tmp_path, pre_roll=2.0, post_roll=1.5, grace=0.2, **got.kwargs())
    rec.start()
    opened = BASE + 6.0
    for t, rgb in clip_frames(FLOOR, 7.0):  # the camera dies 1 s into the post-roll
        rec.add_frame("line-2", BASE + t, rgb)
    rec.episode_opened("ep-down", "line-2", opened)
    assert got.done.wait(30), "written at the deadline, without close()"
    [ev] = got.written
    assert abs(ev.start_ts - (opened - 2.0)) <= 1 / 5 and opened + 0.8 <= ev.end_ts <= opened + 1.0
    times, _ = decoded_times(ev.clip)
    assert len(times) == ev.frames and abs(ev.frames - 5 * 3) <= 2
    assert ev.snapshot.is_file() and ev.clip_sha256 == sha256(ev.clip)
    assert rec.close(timeout=10)


def test_a_camera_that_never_delivered_reports_an_error_not_an_empty_file(tmp_path):
    got = Collect()
    rec = EvidenceRecorder(tmp_path, pre_roll=1.0, post_roll=0.3, grace=0.1, **got.kwargs())
    rec.start()
    rec.episode_opened("ep-none", "dark-cam", BASE)
    assert got.done.wait(30)
    assert rec.close(timeout=10)
    [(episode, exc)] = got.errors
    assert episode == "ep-none" and "no frame" in str(exc)
    assert not got.written and not list(tmp_path.rglob("*.mp4"))


def test_close_writes_what_is_buffered(tmp_path):
    got = Collect()
    rec = EvidenceRecorder(tmp_path, pre_roll=2.0, post_roll=60.0, grace=60.0, **got.kwargs())
    rec.start()
    for t, rgb in clip_frames(FLOOR, 4.0):
        rec.add_frame("line-3", BASE + t, rgb)
    rec.episode_opened("ep-close", "line-3", BASE + 3.0)
    assert rec.close(timeout=60)
    [ev] = got.written
    assert abs(ev.start_ts - (BASE + 1.0)) <= 1 / 5 and ev.end_ts <= BASE + 4.0
    rec.add_frame("line-3", BASE + 5.0, np.zeros((432, 768, 3), np.uint8))  # after close: ignored, no error


def test_two_cameras_fed_from_two_threads_at_once(tmp_path):
    got = Collect()
    rec = EvidenceRecorder(tmp_path, pre_roll=2.0, post_roll=2.0, **got.kwargs())
    rec.start()
    frames = list(clip_frames(FLOOR, 12.0))
    errors: list[BaseException] = []

    def camera(name: str, invert: bool) -> None:
        try:
            for t, rgb in frames:
                rec.add_frame(name, BASE + t, 255 - rgb if invert else rgb)
                if t == pytest.approx(10.0):
                    rec.episode_opened(f"ep-{name}", name, BASE + 7.0)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=camera, args=(name, invert)) for name, invert in (("cam-a", False), ("cam-b", True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert rec.close(timeout=60)
    assert not errors and not got.errors
    by_camera = {ev.camera: ev for ev in got.written}
    assert set(by_camera) == {"cam-a", "cam-b"}
    reference = reduce(min(frames, key=lambda f: abs(f[0] - 7.0))[1])
    for name, expected in (("cam-a", reference), ("cam-b", 255 - reference)):
        ev = by_camera[name]
        assert ev.clip.parent.parent.name == name and abs(ev.frames - 5 * 4) <= 2
        assert len(decoded_times(ev.clip)[0]) == ev.frames
        snap = cv2.cvtColor(cv2.imread(str(ev.snapshot)), cv2.COLOR_BGR2RGB).astype(int)
        assert np.abs(snap - expected).mean() < 3, f"{name}'s evidence shows {name}'s frames only"


def test_a_failing_callback_does_not_stop_the_writer_and_too_many_episodes_are_refused(tmp_path):
    written: list[str] = []
    errors: list[str] = []

    def on_written(ev: Evidence) -> None:
        written.append(ev.episode_id)
        raise RuntimeError("the store is down")

    rec = EvidenceRecorder(tmp_path, pre_roll=0.4, post_roll=0.4, grace=30, max_pending=2, on_written=on_written,
                           on_error=lambda episode, exc: errors.append(episode))
    rec.start()
    rec.episode_opened("ep-1", "cam", BASE + 1.0)
    rec.episode_opened("ep-2", "cam", BASE + 1.2)
    rec.episode_opened("ep-3", "cam", BASE + 1.4)  # a third while two wait: refused, reported
    assert errors == ["ep-3"]
    for i in range(15):
        rec.add_frame("cam", BASE + i / 5, np.full((120, 160, 3), i * 10, np.uint8))
    assert rec.close(timeout=60)
    assert written == ["ep-1", "ep-2"]


def test_bad_names_are_refused_before_they_become_paths(tmp_path):
    rec = EvidenceRecorder(tmp_path)
    rec.start()
    with pytest.raises(ValueError, match="file name"):
        rec.episode_opened("../../etc/passwd", "cam", BASE)
    with pytest.raises(ValueError, match="file name"):
        rec.episode_opened("ep", "cam/../x", BASE)
    assert rec.close(timeout=10)


def test_blur_faces_without_a_cascade_fails_at_construction_with_a_clear_message(tmp_path):
    with pytest.raises(UserError, match="blur_faces"):
        EvidenceRecorder(tmp_path, blur_faces=True, face_cascade=tmp_path / "missing.xml")


FACE_CLIPS = ["hmdb51_RATRACE_wave_f_nm_np1_fr_goo_37.avi", "hmdb51_TrumanShow_wave_f_nm_np1_fr_med_26.avi",
              "hmdb51_SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi", "mmaction2_test.avi"]


def find_face() -> tuple[str, int, int, list[tuple[int, int, int, int]]]:
    """(clip, frame index, recorder width, boxes) of the first shared frame with a face the cascade detects."""
    try:
        detector = load_face_detector()
    except UserError as exc:
        pytest.skip(str(exc))
    for name in FACE_CLIPS:
        if not asset("videos", name).exists():
            continue
        for i, (_, rgb) in enumerate(clip_frames(name, 3.0)):
            for width in (480, 320):  # the recorder detects at its reduced size: try a couple
                boxes = detect_faces(detector, reduce(rgb, width))
                if boxes:
                    return name, i, width, boxes
    pytest.skip("no face detectable by OpenCV's frontal-face cascade in the shared clips")


def laplacian_var(rgb: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_blur_boxes_changes_the_face_and_nothing_else():
    name, index, width, boxes = find_face()
    rgb = reduce(next(f for i, f in enumerate(clip_frames(name, 3.0)) if i == index)[1], width)
    out = blur_boxes(rgb, boxes)
    x, y, w, h = boxes[0]
    assert laplacian_var(out[y:y + h, x:x + w]) < 0.1 * laplacian_var(rgb[y:y + h, x:x + w])
    changed = np.any(out != rgb, axis=2)
    allowed = np.zeros_like(changed)
    for x, y, w, h in boxes:  # enlarged by a quarter on each side
        allowed[max(0, y - h // 4 - 1):y + h + h // 4 + 1, max(0, x - w // 4 - 1):x + w + w // 4 + 1] = True
    assert changed.any() and not (changed & ~allowed).any(), "pixels outside the enlarged boxes are untouched"


@pytest.mark.slow  # face detection over a real clip: seconds of CPU
def test_blur_faces_blurs_every_stored_frame(tmp_path):
    name, index, width, boxes = find_face()
    frames = list(clip_frames(name, 3.0))
    detector = load_face_detector()
    got = Collect()
    rec = EvidenceRecorder(tmp_path, pre_roll=1.0, post_roll=1.0, fps=30.0, width=width, blur_faces=True,
                           **got.kwargs())
    rec.start()
    opened = BASE + frames[index][0]
    for t, rgb in frames:
        rec.add_frame("gown-1", BASE + t, rgb)
    rec.episode_opened("ep-face", "gown-1", opened)
    assert rec.close(timeout=60)
    [ev] = got.written

    original = reduce(frames[index][1], width)
    snap = cv2.cvtColor(cv2.imread(str(ev.snapshot)), cv2.COLOR_BGR2RGB)
    assert snap.shape == original.shape
    x, y, w, h = boxes[0]
    assert laplacian_var(snap[y:y + h, x:x + w]) < 0.2 * laplacian_var(original[y:y + h, x:x + w]), "face blurred"
    # away from the faces in the snapshot and its neighbours (their boxes count too), the snapshot is the frame
    away = np.ones(original.shape[:2], bool)
    for _, rgb in frames[max(0, index - 2):index + 3]:
        for bx, by, bw, bh in detect_faces(detector, reduce(rgb, width)):
            away[max(0, by - bh // 2):by + bh + bh // 2, max(0, bx - bw // 2):bx + bw + bw // 2] = False
    assert away.mean() > 0.3
    assert np.abs(snap.astype(int) - original)[away].mean() < 3
    # and in the clip, at the opening, the face is blurred too
    with av.open(str(ev.clip)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == ev.frames
    at_open = decoded[int(np.argmin([abs(ev.start_ts + t - opened) for t in decoded_times(ev.clip)[0]]))]
    assert laplacian_var(at_open[y:y + h, x:x + w]) < 0.2 * laplacian_var(original[y:y + h, x:x + w])


def test_prune_deletes_old_evidence_only(tmp_path):
    got = Collect()
    rec = EvidenceRecorder(tmp_path, pre_roll=0.4, post_roll=0.4, **got.kwargs())
    rec.start()
    for i in range(10):
        rec.add_frame("cam", BASE + i / 5, np.full((120, 160, 3), i * 10, np.uint8))
    rec.episode_opened("ep-old", "cam", BASE + 1.0)
    assert rec.close(timeout=30)
    [ev] = got.written
    recent = tmp_path / "cam" / "2025-07-30" / "ep-new.mp4"  # 45 days after BASE's day
    recent.parent.mkdir()
    recent.write_bytes(b"new")
    stray = tmp_path / "cam" / "notes.txt"
    stray.write_text("not evidence")
    day = 86400.0

    assert prune(tmp_path, 30, now=BASE + 20 * day) == [], "within retention"
    assert prune(tmp_path, 30, now=BASE + 30.3 * day) == [], "never early: a 23:59 episode of that day is not 30 days old yet"
    deleted = prune(tmp_path, 30, now=BASE + 32 * day)
    assert sorted(deleted) == sorted([ev.clip, ev.snapshot])
    assert not ev.clip.parent.exists(), "the emptied date folder goes too"
    assert recent.exists() and stray.exists()
    with pytest.raises(ValueError):
        prune(tmp_path, 0)


def test_each_camera_has_a_recent_latest_jpg_for_the_console(tmp_path):
    rec = EvidenceRecorder(tmp_path, pre_roll=1.0, post_roll=1.0, fps=5.0, width=160, latest_every=2.0)
    rec.start()
    latest = tmp_path / "line-4" / "latest.jpg"
    for i in range(10):  # 2 s of frames: grey levels 0, 25, ...
        rec.add_frame("line-4", BASE + i / 5, np.full((120, 200, 3), 25 * i, np.uint8))
    wait_until(latest.is_file, 10, "latest.jpg written")
    first = cv2.imread(str(latest))
    assert first.shape == (96, 160, 3) and abs(int(first.mean()) - 0) <= 3, "the first frame, reduced"
    rec.add_frame("line-4", BASE + 2.2, np.full((120, 200, 3), 200, np.uint8))  # 2 s later: a new latest.jpg
    wait_until(lambda: abs(int(cv2.imread(str(latest)).mean()) - 200) <= 3, 10, "latest.jpg refreshed")
    assert not [p for p in (tmp_path / "line-4").iterdir() if p.name.endswith(".tmp")], "written atomically"
    assert rec.close(timeout=10)
    assert prune(tmp_path, 1, now=BASE + 10 * 86400) == [] and latest.is_file(), "retention leaves it alone"
