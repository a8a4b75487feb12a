"""The violation store on SQLite (temp file) and PostgreSQL (127.0.0.1:5432): schema, writes, no loss."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from monitor.errors import UserError
from monitor.messages import ViolationEvent
from monitor.record.db import (
    SchemaOutdated,
    check_schema,
    create_engine,
    head_revision,
    normalize_url,
    shown_url,
    upgrade,
)
from monitor.record.tables import audit_events, violations
from monitor.record.writer import StoreWriter, write_event
from support.events import PROV, T0, event, pair
from support.records import Recorder, views
from support.tcpproxy import TcpProxy
from support.waiting import wait_until


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


@pytest.fixture
def store(db):
    """The store's own engine on a database upgraded to the current schema."""
    upgrade(db.url)
    engine = create_engine(db.url)
    yield engine
    engine.dispose()


def apply(engine: sa.Engine, *events: ViolationEvent) -> None:
    for e in events:
        with engine.begin() as conn:
            write_event(conn, e, PROV)


@pytest.fixture
def make_writer(tmp_path):
    writers: list[StoreWriter] = []

    def make(url: str, spool=None, start: bool = True, **kw) -> tuple[StoreWriter, Recorder]:
        rec = Recorder()
        writer = StoreWriter(url, PROV, spool or tmp_path / "spool.jsonl", stored=rec.on_stored, failed=rec.on_failed,
                             spooled=rec.depths.append, **kw)
        writers.append(writer)
        if start:
            writer.thread.start()
        return writer, rec

    yield make
    for w in writers:
        if w.thread.is_alive():
            w.close(1.0)


def test_an_episode_is_a_row_and_its_closing_an_audit_event(db, store):
    apply(store, event("opened", "ep-1", 0.6))
    (view,) = views(db)
    assert view.row["camera"] == "line-2" and view.row["rule"] == "no-gloves" and view.row["severity"] == "major"
    assert view.row["started_at"] == utc(T0) and view.row["started_at"].tzinfo is not None
    assert view.row["host"] == "edge-1" and view.row["model_hash"] == PROV.model_hash
    assert json.loads(view.row["labels"]) == {"area": "b"}
    assert view.ended_at is None and view.status == "open"
    apply(store, event("closed", "ep-1", 0.93, ended=T0 + 12.5))
    (view,) = views(db)
    assert view.ended_at == utc(T0 + 12.5).isoformat() and view.peak_confidence == pytest.approx(0.93)
    assert view.row["confidence"] == pytest.approx(0.6), "the violation row itself never changes"
    assert [a["what"] for a in view.trail] == ["closed"] and view.trail[0]["actor"] == "system"


def test_replayed_events_are_written_once(db, store):
    apply(store, *pair("ep-2"), *pair("ep-2"))
    engine = db.engine()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(violations)).scalar() == 1
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_events)).scalar() == 1
    engine.dispose()


def test_outdated_schema_is_refused_until_upgraded(db):
    engine = create_engine(db.url)
    with pytest.raises(SchemaOutdated, match=r"has schema none \(empty\).*har-monitor db upgrade"):
        check_schema(engine)
    head = head_revision()
    assert upgrade(db.url) == (None, head)
    check_schema(engine)
    assert upgrade(db.url) == (head, head), "upgrading twice is harmless"
    engine.dispose()


def test_sqlite_maps_no_shared_memory(sqlite_db, tmp_path):
    """WAL's index is a shared memory map (-shm): a storage fault under it is a SIGBUS. The store uses a rollback journal."""
    path = tmp_path / "violations.db"
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").fetchone()  # a database from an earlier version
    upgrade(sqlite_db.url)
    engine = create_engine(sqlite_db.url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"
        assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() == 0
        conn.execute(sa.select(violations)).all()
        assert not path.with_name("violations.db-shm").exists()
    engine.dispose()


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "postgres://u@h/db"])
def test_plain_postgresql_url_uses_psycopg3(url):
    assert normalize_url(url).drivername == "postgresql+psycopg"


@pytest.mark.parametrize("url", ["not a url", "u:s3cret@h/db", "postgresql://u:s3cret@h:port/db",
                                 "postgresql+nosuchdriver://u:s3cret@h/db", "nosuchdb://u:s3cret@h/db",
                                 "mysql://u:s3cret@h/db"])
def test_bad_url_is_a_user_error_without_the_password(url):
    with pytest.raises(UserError) as info:
        normalize_url(url)
    assert "storage.url" in str(info.value) and "s3cret" not in str(info.value)
    assert "s3cret" not in shown_url("postgresql://u:s3cret@h/db")


def test_postgresql_outage_spools_then_replays_every_event_once_in_order(pg_db, make_writer):
    upgrade(pg_db.url)
    with TcpProxy("127.0.0.1", 5432) as proxy:
        writer, rec = make_writer(pg_db.via_port(proxy.port), backoff_max=0.5)
        put = [e for i in range(3) for e in pair(f"ep-{i:02d}", T0 + i)]
        for e in put:
            writer.put(e)
        wait_until(lambda: len(rec.stored) == len(put), 20, "writes while the database is up")
        proxy.pause()  # the database is unreachable
        outage = [e for i in range(3, 23) for e in pair(f"ep-{i:02d}", T0 + i)]
        for e in outage:
            writer.put(e)
        # The depth is reported after the spool grows: wait for the report itself, not for the spool's length.
        wait_until(lambda: rec.failures >= 2 and max(rec.depths, default=0) >= 10, 20,
                   "failures counted, events spooled and the spool depth reported")
        assert writer.thread.is_alive() and len(rec.stored) == len(put) and len(writer.spool) >= 10
        proxy.resume()
        assert writer.close(20)
    assert rec.stored == put + outage
    got = views(pg_db)
    assert [v.row["id"] for v in got] == [f"ep-{i:02d}" for i in range(23)]
    assert all(v.ended_at for v in got) and len(got) == 23
    assert [v.row["seq"] for v in got] == sorted(v.row["seq"] for v in got), "written in the order they happened"
    assert len(writer.spool) == 0


def test_spooled_events_survive_a_restart(db, make_writer, tmp_path):
    """The database is down when the daemon stops: the next start replays the spool."""
    upgrade(db.url)
    down_url = "postgresql://nobody@127.0.0.1:1/none"
    first, rec1 = make_writer(down_url, spool=tmp_path / "s.jsonl", backoff_max=0.2)
    for e in pair("ep-a") + pair("ep-b", T0 + 1):
        first.put(e)
    wait_until(lambda: rec1.failures >= 1, 10, "a failed write")
    assert not first.close(2.0), "not flushed: kept in the spool"
    assert len(first.spool) == 4
    second, rec2 = make_writer(db.url, spool=tmp_path / "s.jsonl")
    assert second.close(10)
    assert [v.row["id"] for v in views(db)] == ["ep-a", "ep-b"]
    assert [e.kind for e in rec2.stored] == ["opened", "closed", "opened", "closed"]


def test_updated_events_only_move_metrics(db, store, make_writer):
    writer, rec = make_writer(db.url)
    for e in [event("opened", "ep-u", 0.6), event("updated", "ep-u", 0.8), event("closed", "ep-u", 0.8, ended=T0 + 2)]:
        writer.put(e)
    assert writer.close(10)
    assert [e.kind for e in rec.stored] == ["opened", "closed"]
    (view,) = views(db)
    assert view.peak_confidence == pytest.approx(0.8)


def test_a_closed_episode_keeps_its_confidence_trace_through_the_spool(db, make_writer, tmp_path):
    from dataclasses import replace

    upgrade(db.url)
    writer, rec = make_writer(db.url)
    trace = ((T0, 0.61), (T0 + 0.5, 0.734567), (T0 + 1.0, 0.2))
    writer.put(event("opened", "ep-t", 0.61))
    writer.put(replace(event("closed", "ep-t", 0.73, ended=T0 + 1.0), trace=trace))
    wait_until(lambda: len(rec.stored) == 2, 30, "both events written")
    (view,) = views(db)
    closed = json.loads(next(a["new"] for a in view.trail if a["what"] == "closed"))
    assert closed["trace"] == [[round(T0, 3), 0.61], [round(T0 + 0.5, 3), 0.7346], [round(T0 + 1.0, 3), 0.2]]


def test_a_rule_set_text_is_stored_once_by_its_hash(db, store):
    from monitor.record.rulesets import record_ruleset, stored_ruleset

    with store.begin() as conn:
        assert record_ruleset(conn, "abc123", "# file: rules.yaml\nrules: []\n") is True
        assert record_ruleset(conn, "abc123", "something else") is False, "append-only: the first text stays"
    with store.connect() as conn:
        assert stored_ruleset(conn, "abc123").text == "# file: rules.yaml\nrules: []\n"
        assert stored_ruleset(conn, "nope") is None


def test_a_rule_set_put_during_an_outage_reaches_the_record_after_a_restart(db, make_writer, tmp_path):
    """The text in force is a spooled record like the violations that name it: a daemon stopped while the database
    was down used to lose it (its own retrying thread died with the process), leaving violations whose rules_hash
    no text answers. Nothing is left running either: that thread outlived the daemon that started it."""
    import threading

    from monitor.record.rulesets import stored_ruleset

    upgrade(db.url)
    first, rec = make_writer("postgresql://nobody@127.0.0.1:1/none", spool=tmp_path / "s.jsonl", backoff_max=0.2)
    first.put_ruleset("def456", "rules: [x]")
    first.put(event("opened", "ep-r"))
    wait_until(lambda: rec.failures >= 1, 10, "a failed write")
    assert not first.close(2.0), "not flushed: kept in the spool"
    assert not first.thread.is_alive() and "ruleset-store" not in {t.name for t in threading.enumerate()}
    second, _ = make_writer(db.url, spool=tmp_path / "s.jsonl")
    assert second.close(10)
    engine = db.engine()
    with engine.connect() as conn:
        assert stored_ruleset(conn, "def456").text == "rules: [x]"
    engine.dispose()
    assert [v.row["id"] for v in views(db)] == ["ep-r"]
