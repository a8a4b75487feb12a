"""A real record for the console tests: violations decided by the real rule engine, written by the
real StoreWriter, evidence clips by the real EvidenceRecorder from synthetic camera frames."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from support.sites import LABELS

PASSWORD = "correct horse battery"
CAM_SECRET = "cam-pass-Zq9!"
DB_SECRET = "db-pass-Xk7"  # PostgreSQL here trusts local connections: the password is carried, never needed
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
RULES = {"rules": [
    {"id": "person-fell", "title": "A person fell on the production floor", "severity": "critical",
     "when": {"action": "fall", "min_confidence": 0.6, "for_windows": 2}, "labels": {"sop": "SOP-EHS-004"}},
    {"id": "waving-in-cleanroom", "title": "Arm waving near open product (shedding risk)", "severity": "minor",
     "applies_to": {"zones": ["cleanroom-*"]}, "when": {"action": "wave", "min_confidence": 0.6, "for_windows": 3},
     "labels": {"sop": "SOP-GMP-014"}},
]}
CAMERAS = {"line-1": "cleanroom-a", "line-2": "packing"}
SCENE = {"line-1": [("idle", 2), ("wave", 3), ("idle", 2)], "line-2": [("walk", 2), ("fall", 2), ("idle", 3)]}
SCRIPT = {"line-1": ("wave", 2.0, 5.0), "line-2": ("fall", 2.0, 4.0)}  # the model's (scripted) view of each scene
REPEATS = 3  # scenes per camera: 6 violations of this site


@dataclass
class Record:
    backend: str
    url: str  # as the site names it (with a password on PostgreSQL)
    site: Path
    evidence: Path
    ids: dict[str, list[str]] = field(default_factory=dict)  # camera -> its violations, oldest first
    other_site_id: str = ""
    altered_id: str = ""  # its clip was changed after it was recorded
    missing_id: str = ""  # its snapshot was deleted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _probs(camera: str, t: float) -> dict[str, float]:
    action, start, end = SCRIPT[camera]
    probs = dict.fromkeys(LABELS, 0.02)
    if start <= t < end:
        probs[action] = 0.7 + 0.25 * (t - start) / (end - start)  # rising: the timeline has a shape
    else:
        probs["idle"] = 0.9
    return probs


def fill_record(rec: Record, rules_file: Path) -> None:
    """Scenes played through the real engine, writer and evidence recorder, as the daemon wires them."""
    from monitor.demo import synthetic
    from monitor.evidence.recorder import EvidenceRecorder
    from monitor.messages import Prediction
    from monitor.record.db import create_engine
    from monitor.record.rulesets import record_ruleset
    from monitor.record.writer import Provenance, StoreWriter, write_event
    from monitor.rules import RuleEngine, load_rules

    ruleset = load_rules([rules_file], LABELS)
    engine = create_engine(rec.url)
    with engine.begin() as conn:
        record_ruleset(conn, ruleset.hash, ruleset.text)
    prov = Provenance("plant-7", "a" * 16, ruleset.hash, "c" * 64, host="edge-1")
    writer = StoreWriter(rec.url, prov, rec.site.parent / "spool.jsonl")
    writer.thread.start()
    recorder = EvidenceRecorder(rec.evidence, pre_roll=2, post_roll=2, fps=5, width=160, latest_every=1.0,
                                on_written=lambda ev: writer.put_evidence(ev.episode_id, ev.as_record(rec.evidence)))
    recorder.start()
    rules = RuleEngine(ruleset, CAMERAS)
    fps = 10.0
    frames = {cam: synthetic.render_scene(SCENE[cam], fps, (120, 160), seed=3 + i) for i, cam in enumerate(CAMERAS)}
    start = time.time() - 2 * 86400  # two days ago: the trends show more than one day
    for repeat in range(REPEATS):
        for cam_index, cam in enumerate(CAMERAS):
            base = start + repeat * 30000 + cam_index * 600
            for k, rgb in enumerate(frames[cam]):
                t = k / fps
                recorder.add_frame(cam, base + t, rgb)
                if k % 5 == 4:  # a window every 0.5 s
                    p = Prediction(cam, base + t - 2.0, base + t, time.monotonic(), _probs(cam, t))
                    for event in rules.observe(p):
                        writer.put(event)
                        if event.kind == "opened":
                            rec.ids.setdefault(cam, []).append(event.episode_id)
                            recorder.episode_opened(event.episode_id, cam, event.started_at)
            for event in rules.close_all(base + len(frames[cam]) / fps, time.monotonic()):
                writer.put(event)
    assert recorder.close(timeout=60) and writer.close(timeout=60), "the evidence and the record were written"
    from monitor.messages import ViolationEvent

    other = str(uuid.uuid4())
    with engine.begin() as conn:  # a violation of another site sharing the database
        write_event(conn, ViolationEvent("opened", other, "person-fell", "critical", "line-9", "fall", 0.9,
                                         start, None, 0.0), Provenance("other-plant", "b" * 16, ruleset.hash, "d" * 64))
    engine.dispose()
    rec.other_site_id = other


def evidence_of(rec: Record, violation_id: str) -> dict:
    import json

    import sqlalchemy as sa

    from monitor.record.db import create_engine
    from monitor.record.tables import audit_events

    engine = create_engine(rec.url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(audit_events.c.new).where(audit_events.c.violation_id == violation_id,
                                                               audit_events.c.what == "evidence")).first()
    engine.dispose()
    return json.loads(row.new)


@dataclass
class Console:
    base: str
    proc: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def add_users(url: str) -> None:
    from monitor.record.db import create_engine
    from monitor.record.review import add_user

    engine = create_engine(url)
    with engine.begin() as conn:
        add_user(conn, "rita", "reviewer", PASSWORD, "Rita Meyer")
        add_user(conn, "vic", "viewer", PASSWORD, "Victor Viewer")
        add_user(conn, "ada", "admin", PASSWORD, "Ada Admin")
        add_user(conn, "lena", "reviewer", PASSWORD, "Lena Lock")  # the one the lockout test locks
    engine.dispose()


def sign_in(context, base: str, user: str, password: str = PASSWORD):
    page = context.new_page()
    page.goto(f"{base}/")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    return page


def shot(page, name: str, backend: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}-{backend}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def csrf_of(page) -> str:
    return page.locator("input[name=csrf]").first.get_attribute("value")
