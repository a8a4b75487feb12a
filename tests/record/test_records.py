"""Records QA can trust: tamper evidence, signatures, export, and no loss through a database outage."""

from __future__ import annotations

import csv
import json

import pytest
import sqlalchemy as sa

from monitor.record import ledger
from monitor.record.db import upgrade
from monitor.record.review import query
from monitor.record.rulesets import stored_ruleset
from monitor.record.tables import audit_events, reviews, violations
from support.daemon import RunningDaemon
from support.records import PASSWORD, cli
from support.sites import write_site
from support.tcpproxy import TcpProxy


def verify(db, capsys, *extra: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = cli(db, "violations", "verify", *extra)
    return code, [line for line in capsys.readouterr().out.splitlines() if line.startswith(("ALTERED", "MISSING"))]


def test_an_intact_record_verifies(db, record, capsys):
    _, clip = record
    assert verify(db, capsys, "--evidence-dir", str(clip.parent)) == (0, [])


def test_edited_deleted_and_inserted_rows_are_named(db, record, capsys):
    engine, _ = record
    with engine.begin() as conn:  # someone with database access "fixes" a record quietly
        conn.execute(violations.update().where(violations.c.id == "ep-0").values(severity="minor"))
    code, problems = verify(db, capsys)
    assert code == 1 and problems == ["ALTERED: violations: seq 1 (id ep-0): content altered (its hash does not match)"]

    with engine.begin() as conn:
        conn.execute(violations.update().where(violations.c.id == "ep-0").values(severity="major"))
        conn.execute(audit_events.delete().where(audit_events.c.violation_id == "ep-2"))
    code, problems = verify(db, capsys)
    assert code == 1 and any(p.startswith("ALTERED: audit_events: seq") and "removed" in p for p in problems), problems

    with engine.begin() as conn:
        forged = dict(conn.execute(sa.select(violations).where(violations.c.id == "ep-1")).mappings().one())
        forged.update(seq=None, id="ep-forged", camera="line-9")
        forged.pop("seq")
        conn.execute(violations.insert().values(forged))
    code, problems = verify(db, capsys)
    assert any("violations: seq 4 (id ep-forged): inserted" in p for p in problems), problems
    assert not any("violations" in p and "removed" in p for p in problems), "a forged row is not a removal"


def test_a_changed_or_missing_evidence_file_is_named(db, record, capsys):
    _, clip = record
    clip.write_bytes(b"a different video")
    code, problems = verify(db, capsys, "--evidence-dir", str(clip.parent))
    assert code == 1 and problems == [f"ALTERED: evidence: {clip}: altered: SHA-256 differs (violation ep-1)"]
    clip.unlink()
    assert verify(db, capsys, "--evidence-dir", str(clip.parent))[1] == [f"ALTERED: evidence: {clip}: missing (violation ep-1)"]


def test_signatures_roles_passwords_and_reasons(db, record, capsys):
    assert cli(db, "users", "add", "vic", "--role", "viewer", stdin=PASSWORD) == 0
    capsys.readouterr()
    assert cli(db, "violations", "review", "ep-0", "--disposition", "confirmed", "--reason", "x", "--user", "vic",
               stdin=PASSWORD) == 1
    assert "only reviewers and admins may sign" in capsys.readouterr().err
    assert cli(db, "violations", "review", "ep-0", "--disposition", "confirmed", "--reason", "x", "--user", "rita",
               stdin="wrong password") == 1
    assert "wrong password" in capsys.readouterr().err
    assert cli(db, "violations", "review", "ep-0", "--disposition", "confirmed", "--reason", "  ", "--user", "rita",
               stdin=PASSWORD) == 2
    assert "a signature needs a reason" in capsys.readouterr().err
    assert cli(db, "users", "disable", "rita", "--reason", "left the company") == 0
    assert cli(db, "violations", "review", "ep-0", "--disposition", "confirmed", "--reason", "x", "--user", "rita",
               stdin=PASSWORD) == 1

    engine, _ = record
    with engine.connect() as conn:
        signed = conn.execute(sa.select(reviews)).mappings().all()
        (view,) = query(conn, violation_id="ep-1")
    assert len(signed) == 1, "refused signatures leave nothing behind"
    assert signed[0]["printed_name"] == "Rita Reviewer" and signed[0]["meaning"] == "confirmed"
    assert signed[0]["violation_hash"] == view.row["row_hash"], "the signature binds the signed record"
    capsys.readouterr()
    assert cli(db, "violations", "show", "ep-1") == 0
    shown = capsys.readouterr().out
    assert "Rita Reviewer (rita): confirmed: gloves off on video" in shown and "evidence" in shown


def test_a_second_review_is_a_new_signature(db, record, capsys):
    assert cli(db, "users", "add", "otto", "--role", "admin", stdin=PASSWORD) == 0
    assert cli(db, "violations", "review", "ep-1", "--disposition", "false_positive", "--reason", "it was a shadow",
               "--user", "otto", stdin=PASSWORD) == 0
    engine, _ = record
    with engine.connect() as conn:
        (view,) = query(conn, violation_id="ep-1")
        assert [r["meaning"] for r in view.reviews] == ["confirmed", "false_positive"]
        assert ledger.verify(conn) == []
    capsys.readouterr()
    assert cli(db, "violations", "list", "--status", "open", "--format", "json") == 0
    assert sorted(v["id"] for v in json.loads(capsys.readouterr().out)) == ["ep-0", "ep-2"]


def test_export_is_a_spreadsheet_with_trail_and_hashes(db, record, tmp_path, capsys):
    out = tmp_path / "audit.csv"
    assert cli(db, "violations", "export", "--since", "2000-01-01", "--out", str(out)) == 0
    rows = list(csv.DictReader(out.read_text(encoding="utf-8-sig").splitlines()))
    assert [r["id"] for r in rows] == ["ep-0", "ep-1", "ep-2"]
    ep1 = rows[1]
    assert ep1["clip_sha256"] and ep1["snapshot_sha256"] and ep1["status"] == "reviewed"
    assert "closed" in ep1["audit_trail"] and "reviewed" in ep1["audit_trail"]
    assert "confirmed by Rita Reviewer" in ep1["dispositions"]


def cameras_with_violations(d: RunningDaemon) -> set[str]:
    return {dict(labels)["camera"] for (name, labels), value in d.scrape().items()
            if name == "har_monitor_violations_total" and value >= 1}


@pytest.mark.slow
def test_daemon_through_a_database_outage_loses_nothing(pg_db, tiny_bundle, clip, tmp_path):
    """The daemon starts while PostgreSQL is unreachable, keeps producing violations, and catches up."""
    upgrade(pg_db.url)
    with TcpProxy("127.0.0.1", 5432) as proxy:
        proxy.pause()
        cams = [{"id": f"cam-{i}", "url": str(clip), "loop": True} for i in range(3)]
        site = write_site(tmp_path / "site", tiny_bundle, cams, storage={"url": pg_db.via_port(proxy.port)})
        with RunningDaemon(site, upgrade=False) as d:
            # the spool also holds the run's own records (its model, its rule set's text): wait for the violations
            d.wait_for(lambda: cameras_with_violations(d) == {"cam-0", "cam-1", "cam-2"}, 60,
                       "a violation on each camera during the outage")
            assert d.value("har_monitor_store_spool_depth") >= 3 and d.value("har_monitor_store_write_errors_total") >= 1
            proxy.resume()
            d.wait_for(lambda: d.value("har_monitor_store_spool_depth") == 0, 30, "the spool replayed")
        engine = pg_db.engine()
        with engine.connect() as conn:
            got = query(conn)
            assert ledger.verify(conn, tmp_path / "site" / "evidence") == []
            assert got and stored_ruleset(conn, got[0].row["rules_hash"]), "the rule text in force, through the outage too"
        engine.dispose()
    assert all(v.evidence for v in got), "evidence recorded for each violation, through the outage too"
    assert sorted(v.row["camera"] for v in got) == ["cam-0", "cam-1", "cam-2"], "each episode exactly once"
    assert all(v.ended_at for v in got), "closed at shutdown"
