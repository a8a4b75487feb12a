"""`har-monitor dataset from-reviews`: reviewed violations' clips in the folder layout `train` reads, with sidecars;
clips checked against the record's SHA-256; reruns idempotent; a later signature moves a clip; the export audited."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitor.cli import main
from monitor.fileio import sha256_file
from monitor.record.db import create_engine, upgrade
from monitor.record.ledger import audit
from monitor.record.review import add_user, sign_review
from monitor.record.tables import audit_events
from monitor.record.writer import write_event
from monitor.training.dataset import video_folder
from support.events import PROV, T0, pair
from support.records import PASSWORD

pytestmark = pytest.mark.parametrize("db", ["sqlite"], indirect=True)
REVIEWS = {"ep-a": "confirmed", "ep-b": "false_positive", "ep-c": "needs_follow_up", "ep-d": "confirmed",
           "ep-e": "confirmed"}  # ep-f: not reviewed


def clip_bytes(name: str) -> bytes:
    return b"\x00\x00\x00\x18ftypmp42" + name.encode() * 50


@pytest.fixture
def reviewed(db, tmp_path) -> Path:
    """Six closed violations with clips, five of them signed; ep-d's clip altered since, ep-e's deleted."""
    upgrade(db.url)
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    engine = create_engine(db.url)
    with engine.begin() as conn:
        add_user(conn, "rita", "reviewer", PASSWORD, "Rita Reviewer", actor="test")
        for i, vid in enumerate(["ep-a", "ep-b", "ep-c", "ep-d", "ep-e", "ep-f"]):
            for e in pair(vid, T0 + i):
                write_event(conn, e, PROV)
            (evidence / f"{vid}.mp4").write_bytes(clip_bytes(vid))
            audit(conn, f"{vid}:evidence", vid, "system", "evidence", {},
                  {"clip": {"path": f"{vid}.mp4", "sha256": sha256_file(evidence / f"{vid}.mp4")}}, "written")
            if vid in REVIEWS:
                sign_review(conn, vid, "rita", PASSWORD, REVIEWS[vid], f"reason for {vid}")
    engine.dispose()
    (evidence / "ep-d.mp4").write_bytes(b"edited")
    (evidence / "ep-e.mp4").unlink()
    return evidence


def cli(db, *args: str) -> int:
    old = sys.stdin
    sys.stdin = io.StringIO(PASSWORD + "\n")
    try:
        return main([*args, "--db", db.url])
    finally:
        sys.stdin = old


def harvest(db, evidence: Path, out: Path, capsys, *extra: str) -> str:
    capsys.readouterr()
    assert cli(db, "dataset", "from-reviews", "--since", "2023-01-01", "--evidence-dir", str(evidence),
               "--out", str(out), *extra) == 0
    return capsys.readouterr().out


def exports(db) -> list[dict]:
    engine = create_engine(db.url)
    with engine.connect() as conn:
        found = [json.loads(r.new) for r in conn.execute(sa.select(audit_events).where(audit_events.c.what == "exported"))]
    engine.dispose()
    return found


def test_reviewed_clips_land_under_their_class_with_sidecars_and_bad_clips_are_skipped(db, reviewed, tmp_path, capsys):
    out = tmp_path / "data"
    printed = harvest(db, reviewed, out, capsys)
    confirmed, false_positive = out / "touch_product" / "line-2__ep-a.mp4", out / "other" / "line-2__ep-b.mp4"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "other/line-2__ep-b.mp4", "other/line-2__ep-b.mp4.json",
        "touch_product/line-2__ep-a.mp4", "touch_product/line-2__ep-a.mp4.json"]
    assert confirmed.read_bytes() == clip_bytes("ep-a") and false_positive.read_bytes() == clip_bytes("ep-b")
    sidecar = json.loads((out / "other" / "line-2__ep-b.mp4.json").read_text())
    assert {k: sidecar[k] for k in ("violation_id", "label", "disposition", "reviewer", "reviewer_name", "reason",
                                    "clip_sha256")} == {
        "violation_id": "ep-b", "label": "other", "disposition": "false_positive", "reviewer": "rita",
        "reviewer_name": "Rita Reviewer", "reason": "reason for ep-b", "clip_sha256": sha256_file(false_positive)}
    assert sidecar["signed_at"].startswith("20") and len(sidecar["signature"]) == 64
    lines = printed.splitlines()
    assert "skipped ep-c: needs follow-up (not decided yet)" in lines
    assert any(line.startswith("skipped ep-d: clip altered") for line in lines)
    assert any(line.startswith("skipped ep-e: clip missing") for line in lines)
    assert not any("ep-f" in line for line in lines), "an unreviewed violation is no training data yet"
    assert lines[-1] == f"2 written, 0 already there, 3 skipped -> {out}"
    data = video_folder(out)
    assert data.labels == ("other", "touch_product") and len(data.samples) == 2, "the layout `train` reads"
    assert len({s.group for s in data.samples}) == 2, "each violation its own group"
    [export] = exports(db)
    assert export["clips"] == {"other": 1, "touch_product": 1} and export["skipped"] == 3
    assert export["violations"] == ["ep-a", "ep-b"] and export["out"] == str(out.resolve())


def test_a_rerun_writes_nothing_new_and_a_later_signature_moves_the_clip(db, reviewed, tmp_path, capsys):
    out = tmp_path / "data"
    harvest(db, reviewed, out, capsys, "--negative-class", "not_a_violation")
    kept = out / "touch_product" / "line-2__ep-a.mp4"
    before = kept.stat().st_mtime_ns
    assert harvest(db, reviewed, out, capsys, "--negative-class", "not_a_violation").splitlines()[-1] == \
        f"0 written, 2 already there, 3 skipped -> {out}"
    assert kept.stat().st_mtime_ns == before
    engine = create_engine(db.url)
    with engine.begin() as conn:
        sign_review(conn, "ep-b", "rita", PASSWORD, "confirmed", "looked again: it was one")
    engine.dispose()
    assert harvest(db, reviewed, out, capsys, "--negative-class", "not_a_violation").splitlines()[-1] == \
        f"1 written, 1 already there, 3 skipped -> {out}"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == [
        "touch_product/line-2__ep-a.mp4", "touch_product/line-2__ep-b.mp4"]
    assert not (out / "not_a_violation").exists(), "an emptied class folder goes (train refuses empty classes)"
    assert json.loads((out / "touch_product" / "line-2__ep-b.mp4.json").read_text())["reason"] == "looked again: it was one"
    assert len(exports(db)) == 3, "every export is audited"


def test_a_bad_negative_class_is_a_user_error(db, reviewed, tmp_path, capsys):
    assert cli(db, "dataset", "from-reviews", "--evidence-dir", str(reviewed), "--out", str(tmp_path / "d"),
               "--negative-class", "../x") == 2
    assert "--negative-class: '../x' is not a folder name" in capsys.readouterr().err
    assert cli(db, "dataset", "from-reviews", "--out", str(tmp_path / "d")) == 2
    assert "give --evidence-dir" in capsys.readouterr().err


def test_an_absence_rules_clip_is_no_example_of_its_action(db, reviewed, tmp_path, capsys):
    from monitor.record.rulesets import record_ruleset

    engine = create_engine(db.url)
    text = "# file: rules/gmp.yaml\nrules:\n  - {id: no-gloves, kind: absence, action: touch_product, every: 1h}\n"
    with engine.begin() as conn:
        record_ruleset(conn, PROV.rules_hash, text)  # the rule set these violations were judged by
    engine.dispose()
    lines = harvest(db, reviewed, tmp_path / "data", capsys).splitlines()
    assert "skipped ep-a: an absence rule: its clip shows what did not happen, not an action" in lines
    assert lines[-1] == f"1 written, 0 already there, 4 skipped -> {tmp_path / 'data'}", "the false positive still is one"
