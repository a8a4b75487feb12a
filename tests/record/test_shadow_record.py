"""Shadow mode in the record: shadow episodes and model runs go through the spool (an outage loses none), never
into the violations chain; a start with another model is audited; the shadow report says where the models differ."""

from __future__ import annotations

import io
import json
import sys
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from monitor.cli import main
from monitor.messages import ViolationEvent
from monitor.record.db import create_engine, upgrade
from monitor.record.ledger import verify
from monitor.record.review import add_user, sign_review
from monitor.record.shadow import record_run, write_shadow_event
from monitor.record.tables import audit_events, model_runs, shadow_events, violations
from monitor.record.writer import StoreWriter, write_event
from support.events import PROV, T0, pair
from support.records import PASSWORD

SHADOW = "5" * 64
NEW = "6" * 64


def test_shadow_episodes_and_the_run_wait_out_an_outage_in_the_spool_and_stay_out_of_the_chain(db, tmp_path):
    upgrade(db.url)
    down = StoreWriter("postgresql://nobody@127.0.0.1:1/none", PROV, tmp_path / "s.jsonl", backoff_max=0.2)
    down.put_run("/models/live", SHADOW, "/models/candidate")
    for e in pair("shadow-1") + pair("shadow-2", T0 + 10):
        down.put_shadow(e, SHADOW)
    down.thread.start()
    assert not down.close(1.0), "the database is down: everything waits in the spool"
    assert len(down.spool) == 5
    up = StoreWriter(db.url, PROV, tmp_path / "s.jsonl")
    up.thread.start()
    assert up.close(10)
    engine = create_engine(db.url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(shadow_events).order_by(shadow_events.c.seq)).all()
        runs = conn.execute(sa.select(model_runs)).all()
        assert conn.execute(sa.select(sa.func.count()).select_from(violations)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_events)).scalar() == 0, \
            "no audit event: the first run recorded is no change, shadow episodes are not the record"
        assert verify(conn) == []
    engine.dispose()
    assert [(r.id, r.model_hash, r.live_model_hash, r.confidence) for r in rows] == [
        ("shadow-1", SHADOW, PROV.model_hash, 0.9), ("shadow-2", SHADOW, PROV.model_hash, 0.9)], "peak kept at closing"
    assert all(r.ended_at is not None and r.ended_at > r.started_at for r in rows)
    assert [(r.model_hash, r.model_path, r.shadow_hash, r.site, r.host) for r in runs] == [
        (PROV.model_hash, "/models/live", SHADOW, "plant-7", "edge-1")]


def run(site: str, model: str, shadow: str | None, at: datetime | None = None, host: str = "edge-1") -> dict:
    return {"run_id": str(uuid.uuid4()), "site": site, "host": host,
            "started_at": (at or datetime.now(timezone.utc)).isoformat(), "model_hash": model,
            "model_path": f"/models/{model[:4]}", "shadow_hash": shadow,
            "shadow_path": f"/models/{shadow[:4]}" if shadow else None}


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_start_with_another_model_or_shadow_model_is_a_model_changed_audit_event(db):
    upgrade(db.url)
    engine = create_engine(db.url)
    started = [run("plant-7", PROV.model_hash, None), run("plant-7", PROV.model_hash, None),  # the same: nothing
               run("plant-7", PROV.model_hash, SHADOW),  # a shadow added
               run("other-site", NEW, None),  # another site's runs do not compare with this one's
               run("plant-7", SHADOW, None)]  # promoted: the candidate is the model now
    replay = started[-1]
    with engine.begin() as conn:
        for r in [*started, replay]:
            record_run(conn, r)
    with engine.connect() as conn:
        changes = conn.execute(sa.select(audit_events).where(audit_events.c.what == "model_changed")
                               .order_by(audit_events.c.seq)).all()
        assert verify(conn) == []
    engine.dispose()
    assert len(changes) == 2, "a replayed start is recorded once"
    added, promoted = (json.loads(c.old) | {"_new": json.loads(c.new)} for c in changes)
    assert added["shadow_hash"] is None and added["_new"]["shadow_hash"] == SHADOW
    assert promoted["model_hash"] == PROV.model_hash and promoted["_new"]["model_hash"] == SHADOW
    assert promoted["_new"]["model_path"] == "/models/5555" and promoted["_new"]["shadow_hash"] is None
    assert changes[1].actor == "system" and "model" in changes[1].why


def live(episode: str, camera: str, rule: str, start: datetime, seconds: float = 5.0) -> list[ViolationEvent]:
    t = start.timestamp()
    return [ViolationEvent("opened", episode, rule, "major", camera, "fall", 0.8, t, None, time.monotonic()),
            ViolationEvent("closed", episode, rule, "major", camera, "fall", 0.9, t, t + seconds, time.monotonic())]


def cli(db, *args: str) -> int:
    old = sys.stdin
    sys.stdin = io.StringIO(PASSWORD + "\n")
    try:
        return main([*args, "--db", db.url])
    finally:
        sys.stdin = old


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_shadow_report_counts_episodes_only_one_model_opened_per_rule_and_camera(db, capsys):
    upgrade(db.url)
    engine = create_engine(db.url)
    now = datetime.now(timezone.utc)
    at = lambda minutes: now - timedelta(minutes=minutes)
    with engine.begin() as conn:
        record_run(conn, run(PROV.site, PROV.model_hash, None, at(120)))
        for e in live("before-shadow", "line-1", "person-fell", at(100)):  # no shadow ran then: not compared
            write_event(conn, e, PROV)
        record_run(conn, run(PROV.site, PROV.model_hash, SHADOW, at(60)))
        for episode, camera, start in (("both-1", "line-1", 50), ("fp-1", "line-1", 40), ("conf-2", "line-2", 30)):
            for e in live(episode, camera, "person-fell", at(start)):
                write_event(conn, e, PROV)
        for e in live("elsewhere", "line-1", "person-fell", at(45)):  # another site sharing the database
            write_event(conn, e, replace(PROV, site="plant-9"))
        for episode, camera, start in (("s-both", "line-1", 50.02), ("s-new", "line-2", 20)):
            for e in live(episode, camera, "person-fell", at(start)):
                write_shadow_event(conn, e, PROV.site, PROV.host, SHADOW, PROV.model_hash)
        add_user(conn, "rita", "reviewer", PASSWORD, "Rita Reviewer", actor="test")
        sign_review(conn, "fp-1", "rita", PASSWORD, "false_positive", "a shadow on the floor")
        sign_review(conn, "conf-2", "rita", PASSWORD, "confirmed", "she fell")
    engine.dispose()
    capsys.readouterr()
    assert cli(db, "violations", "shadow-report", "--since", "3h") == 0
    out = capsys.readouterr().out
    assert f"site plant-7, model {PROV.model_hash[:12]}, shadow {SHADOW[:12]}" in out
    lines = out.splitlines()
    assert any(line.split()[:3] == ["live", "only:", "fp-1"] and line.endswith("false_positive") for line in lines)
    assert any(line.split()[:3] == ["live", "only:", "conf-2"] and line.endswith("confirmed") for line in lines)
    assert any(line.split()[:3] == ["shadow", "only:", "s-new"] for line in lines)
    assert "elsewhere" not in out, "another site's violations are not this site's live model's"
    assert "before-s" not in out and "both-1" not in out, "agreed episodes and those of runs without a shadow are counted, not listed"
    assert lines[-1] == ("verdict: keep the live model: the shadow would have missed 1 confirmed violation(s) "
                         "(1 of 4 episodes agreed)")
    assert cli(db, "violations", "shadow-report", "--camera", "line-1") == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "verdict: review before promoting: the shadow would have spared 1 false positive(s), left out 0 unreviewed "
        "episode(s) and opened 0 the live model did not (1 of 2 episodes agreed)")
    assert cli(db, "violations", "shadow-report", "--since", "2023-01-01T00:00:00") == 0


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_shadow_report_without_a_shadow_run_says_so(db, capsys):
    upgrade(db.url)
    capsys.readouterr()
    assert cli(db, "violations", "shadow-report") == 0
    assert capsys.readouterr().out.strip() == "verdict: no run with a shadow model in this period: nothing to compare"
