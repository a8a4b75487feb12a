"""Anchors: the chains checked against signed checkpoints kept outside the database. Each tamper case the review
found `verify` calling "ok" (the code is public: anyone with write access can recompute every hash)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from monitor.record.anchor import AnchorLog, key_id
from monitor.record.ledger import GENESIS, content_hash
from monitor.record.tables import CHAINED, chain_heads, violations
from monitor.record.writer import StoreWriter, write_event
from support.events import PROV, T0, event, pair
from support.records import cli
from support.waiting import wait_until

KEY = "0123456789abcdef0123456789abcdef-anchor-test-key"


@pytest.fixture
def anchored(db, record, tmp_path, monkeypatch):
    """The record, anchored: (engine, anchor log)."""
    monkeypatch.setenv("HAR_ANCHOR_KEY", KEY)
    log = tmp_path / "anchors.jsonl"
    assert cli(db, "violations", "anchor", "--anchors", str(log)) == 0
    engine, _ = record
    return engine, log


def verify(db, log, capsys, *extra: str) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = cli(db, "violations", "verify", "--anchors", str(log), *extra)
    out = capsys.readouterr().out
    return code, [line for line in out.splitlines() if line.startswith(("ALTERED", "MISSING"))], out


def rechain(conn: sa.Connection, table: sa.Table, start: int) -> None:
    """What anyone with write access and the public code can do: recompute every hash from `start` on, and the head."""
    prev = conn.execute(sa.select(table.c.row_hash).where(table.c.seq < start).order_by(table.c.seq.desc())).scalar()
    prev = prev or GENESIS
    for row in conn.execute(sa.select(table).where(table.c.seq >= start).order_by(table.c.seq)).mappings().all():
        row_hash = content_hash(prev, dict(row))
        conn.execute(table.update().where(table.c.seq == row["seq"]).values(prev_hash=prev, row_hash=row_hash))
        last, prev = row["seq"], row_hash
    conn.execute(chain_heads.update().where(chain_heads.c.chain == table.name).values(seq=last, row_hash=prev))


def test_an_anchored_record_verifies_and_says_what_it_covers(db, anchored, capsys):
    _, log = anchored
    code, problems, out = verify(db, log, capsys)
    assert (code, problems) == (0, [])
    assert "violations: 3 row(s) up to seq 3 match the anchor" in out


def test_the_last_violation_deleted_and_the_head_moved_back(db, anchored, capsys):
    engine, log = anchored
    with engine.begin() as conn:
        conn.execute(violations.delete().where(violations.c.seq == 3))
        before = conn.execute(sa.select(violations).where(violations.c.seq == 2)).first()
        conn.execute(chain_heads.update().where(chain_heads.c.chain == "violations")
                     .values(seq=before.seq, row_hash=before.row_hash))
    code, problems, _ = verify(db, log, capsys)
    assert code == 1 and len(problems) == 1
    assert problems[0].startswith("ALTERED: violations: anchored rows: seq 3, anchored ") and "is gone: rows were removed" in problems[0]


def test_every_chained_row_and_head_deleted(db, anchored, capsys):
    engine, log = anchored
    with engine.begin() as conn:
        for table in (*CHAINED.values(), chain_heads):
            conn.execute(table.delete())
    code, problems, _ = verify(db, log, capsys)
    assert code == 1
    assert {p.split(":")[1].strip() for p in problems} == set(CHAINED), "each emptied chain named"
    assert all("the chain is empty, but the anchor of" in p for p in problems), problems


def test_a_row_edited_and_every_later_hash_recomputed(db, anchored, capsys):
    engine, log = anchored
    with engine.begin() as conn:
        conn.execute(violations.update().where(violations.c.seq == 2).values(severity="minor"))
        rechain(conn, violations, 2)
    code, problems, _ = verify(db, log, capsys, "--anchors", str(log))
    assert code == 1 and len(problems) == 1, "the chain in the database is consistent again: only the anchor knows"
    assert problems[0].startswith("ALTERED: violations: anchored rows: seq 3 differs from its anchor")


def test_a_forged_row_inserted_with_the_chain_recomputed_is_located(db, anchored, capsys):
    engine, log = anchored  # the first anchor: ep-0 .. ep-2
    with engine.begin() as conn:
        write_event(conn, event("opened", "ep-3", started=T0 + 3), PROV)
    assert cli(db, "violations", "anchor", "--anchors", str(log)) == 0  # the second: and ep-3
    with engine.begin() as conn:  # a row slipped in before ep-3, and the chain recomputed from there
        ep3 = dict(conn.execute(sa.select(violations).where(violations.c.id == "ep-3")).mappings().one())
        forged = {**dict(conn.execute(sa.select(violations).where(violations.c.id == "ep-2")).mappings().one()),
                  "id": "ep-forged", "camera": "line-9"}
        conn.execute(violations.delete().where(violations.c.id == "ep-3"))
        conn.execute(violations.insert().values({**forged, "seq": 4}))
        conn.execute(violations.insert().values({**ep3, "seq": 5}))
        rechain(conn, violations, 4)
    code, problems, _ = verify(db, log, capsys)
    assert code == 1 and len(problems) == 1, problems
    assert problems[0].startswith("ALTERED: violations: anchored rows: seq 4 differs from its anchor of ")
    assert problems[0].endswith("rows were altered (after seq 3, which matches its anchor)"), "located between anchors"


def test_a_forged_row_after_the_head_is_inserted_not_removed(db, record, capsys):
    """Without recomputing anything: the in-database chain names it as inserted (the review saw "last rows removed")."""
    engine, _ = record
    with engine.begin() as conn:
        forged = dict(conn.execute(sa.select(violations).where(violations.c.id == "ep-1")).mappings().one())
        forged.pop("seq")
        conn.execute(violations.insert().values({**forged, "id": "ep-forged", "camera": "line-9"}))
    capsys.readouterr()
    assert cli(db, "violations", "verify") == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ALTERED")]
    assert problems == ["ALTERED: violations: seq 4 (id ep-forged): inserted after the chain head: not written by the ledger"]


def test_a_tampered_anchor_log_is_reported(db, anchored, capsys, monkeypatch):
    _, log = anchored
    entry = json.loads(log.read_text())
    entry["chains"]["violations"]["rows"] = 2  # someone "fixes" the anchor to fit a shortened chain
    log.write_text(json.dumps(entry) + "\n")
    code, problems, _ = verify(db, log, capsys)
    assert code == 1 and problems == [f"ALTERED: anchors: {log} line 1: signature does not match: the anchor was altered",
                                      f"MISSING: anchors: {log}: no anchor, but the record has rows: the anchor log "
                                      "was removed or emptied, or nothing ever anchored it"]
    monkeypatch.setenv("HAR_ANCHOR_KEY", "another key, 32 bytes or longer.........")
    assert "signed with another key" in verify(db, log, capsys)[2]


def test_without_anchors_or_evidence_dir_verify_says_what_it_did_not_check(db, record, capsys):
    capsys.readouterr()
    assert cli(db, "violations", "verify") == 0
    out = capsys.readouterr().out
    assert "note: anchors not checked" in out and "note: evidence files not checked (give --evidence-dir)" in out
    assert "evidence:" not in out, "no false alarm about evidence files it could not look for"


def test_the_writer_anchors_periodically_and_when_it_stops_and_ships_a_copy(db, tmp_path):
    from monitor.record.db import upgrade

    upgrade(db.url)
    local, shipped = tmp_path / "anchors.jsonl", tmp_path / "worm" / "anchors.jsonl"
    anchored, failed = [], []
    writer = StoreWriter(db.url, PROV, tmp_path / "spool" / "events.jsonl", anchored=anchored.append,
                         anchor_failed=lambda: failed.append(1),
                         anchors=AnchorLog(local, KEY.encode(), ship_to=shipped, every=0.2))
    writer.thread.start()
    for e in pair("ep-a") + pair("ep-b", T0 + 1):
        writer.put(e)
    wait_until(lambda: len(anchored) >= 3, 30, "anchors every 0.2 s")
    assert writer.close(30)
    assert anchored[-1].chains["violations"].rows == 2 and anchored[-1].chains["audit_events"].rows == 2
    assert local.read_text() == shipped.read_text() and not failed
    entry = json.loads(local.read_text().splitlines()[-1])
    assert entry["key"] == key_id(KEY.encode()) and entry["by"] == "daemon@edge-1"

    (tmp_path / "not-a-dir").write_text("")
    lines = len(local.read_text().splitlines())
    broken = StoreWriter(db.url, PROV, tmp_path / "spool" / "events.jsonl", anchor_failed=lambda: failed.append(1),
                         anchors=AnchorLog(local, KEY.encode(), ship_to=tmp_path / "not-a-dir" / "anchors.jsonl"))
    broken.thread.start()
    assert broken.close(30)
    assert failed and len(local.read_text().splitlines()) == lines + len(failed), "anchored here, each failed copy counted"
