"""The record through faults: a database that hangs, a process killed, storage made immutable, a locked database
at shutdown, a crash mid-episode. Nothing acknowledged is lost; each event lands once, in order."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from monitor.record import ledger
from monitor.record.db import create_engine, upgrade
from monitor.record.review import query
from monitor.record.tables import audit_events
from monitor.record.writer import Provenance, StoreWriter, write_event
from support.daemon import DaemonProcess, RunningDaemon
from support.events import PROV, T0, event, pair
from support.records import Recorder, views
from support.sites import write_site
from support.tcpproxy import TcpProxy
from support.waiting import wait_until
from support.writer_process import WriterProcess


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def assert_recorded_once_in_order(db, acked: list[list[str]]) -> None:
    """Every acknowledged event is in the record exactly once, in the order it was acknowledged."""
    got = views(db)
    ids = [v.row["id"] for v in sorted(got, key=lambda v: v.row["seq"])]
    opened = [episode for kind, episode in acked if kind == "opened"]
    assert len(ids) == len(set(ids)), "each episode once"
    assert ids[:len(opened)] == opened and len(ids) - len(opened) <= 1, \
        "in order; at most one more (put, but killed before it could say so)"
    closed = {episode for kind, episode in acked if kind == "closed"}
    assert all(v.ended_at for v in got if v.row["id"] in closed), "every acknowledged closing recorded"


@pytest.fixture
def immutable(tmp_path):
    """`chattr +i` (root, on a file system that has it), undone at the end whatever happens."""
    probe = tmp_path / "chattr-probe"
    probe.touch()
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode:
        pytest.skip("chattr +i is not permitted here (needs root and ext4/xfs/btrfs)")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    made: list[str] = []

    class Immutable:
        def set(self, *paths) -> None:
            made.extend(map(str, paths))
            subprocess.run(["chattr", "+i", *map(str, paths)], check=True)

        def clear(self) -> None:
            if made:
                subprocess.run(["chattr", "-i", *made], check=False)
                made.clear()

    guard = Immutable()
    yield guard
    guard.clear()


# -- "durable before acknowledged"; a database that hangs instead of refusing ---------------------------

def test_a_put_is_in_the_spool_when_it_returns_and_a_hung_database_blocks_nothing(pg_db, tmp_path):
    upgrade(pg_db.url)
    rec = Recorder()
    with TcpProxy("127.0.0.1", 5432) as proxy:
        writer = StoreWriter(pg_db.via_port(proxy.port), PROV, tmp_path / "spool" / "events.jsonl", backoff_max=0.5,
                             stored=rec.on_stored, failed=rec.on_failed, call_seconds=2)
        writer.thread.start()
        first = pair("ep-00", T0)
        for e in first:
            writer.put(e)
        wait_until(lambda: len(rec.stored) == 2, 30, "writes while the database answers")
        proxy.hang()  # accepts, acknowledges at the TCP level, never answers
        during = [e for i in range(1, 21) for e in pair(f"ep-{i:02d}", T0 + i)]
        for n, e in enumerate(during, 1):
            writer.put(e)
            assert len(writer.spool) == n, "on disk when put() returns, not in a queue in memory"
        wait_until(lambda: rec.failures >= 1, 60, "a bounded call given up, to be retried")
        assert writer.thread.is_alive() and len(rec.stored) == 2
        proxy.resume()  # the server restarts: hung connections are dropped
        wait_until(lambda: len(rec.stored) == 42, 60, "the spool written once the database answers again")
        assert writer.close(30)
    assert rec.stored == first + during
    assert [v.row["id"] for v in views(pg_db)] == [f"ep-{i:02d}" for i in range(21)]


def test_the_drain_keeps_its_own_backoff_whatever_arrives(db, tmp_path):
    """An outage is retried on the backoff: not once per event that arrives (the old writer did)."""
    upgrade(db.url)
    rec = Recorder()
    writer = StoreWriter("postgresql://nobody@127.0.0.1:1/none", PROV, tmp_path / "events.jsonl", backoff_max=30,
                         failed=rec.on_failed)
    writer.thread.start()
    events = [e for i in range(40) for e in pair(f"ep-{i:02d}", T0 + i)]
    for e in events:
        writer.put(e)
        time.sleep(0.01)  # events arrive over a while, as in a real outage
    wait_until(lambda: rec.failures >= 1, 30, "the first failed write")
    assert rec.failures < len(events) / 4, f"{rec.failures} attempts for {len(events)} events"
    assert not writer.close(0.2) and len(writer.spool) == len(events)  # the database is still down
    replay = StoreWriter(db.url, PROV, tmp_path / "events.jsonl")
    replay.thread.start()
    assert replay.close(30)
    assert [v.row["id"] for v in views(db)] == [f"ep-{i:02d}" for i in range(40)]


def test_a_writer_killed_while_the_database_hangs_loses_nothing_it_acknowledged(pg_db, tmp_path):
    """Measured on the old writer: killed in such an outage, it had lost 2 of the 5 violations it had logged."""
    upgrade(pg_db.url)
    spool = tmp_path / "spool" / "events.jsonl"
    with TcpProxy("127.0.0.1", 5432) as proxy:
        process = WriterProcess(pg_db.via_port(proxy.port), spool, interval=0.02)
        try:
            process.wait_for(lambda: process.count("stored") >= 6, "writes while the database answers")
            proxy.hang()
            hung_at = process.count("acked")
            process.wait_for(lambda: process.count("acked") >= hung_at + 40, "puts acknowledged while it hangs")
        finally:
            process.kill()
    acked = process.lines("acked")
    restarted = StoreWriter(pg_db.url, PROV, spool)  # the next start, against the working database
    restarted.thread.start()
    assert restarted.close(60)
    assert_recorded_once_in_order(pg_db, acked)


# -- storage faults: logged, counted, spooled, retried; never a crash ----------------------------------

def test_an_immutable_sqlite_database_is_a_logged_outage_not_a_crash(sqlite_db, tmp_path, immutable):
    """The review saw SIGBUS and no log line: WAL's -shm is a shared memory map, and a write to a mapped page of
    an immutable file is a SIGBUS. With a rollback journal the same fault is an error: logged, spooled, retried."""
    upgrade(sqlite_db.url)
    process = WriterProcess(sqlite_db.url, tmp_path / "spool" / "events.jsonl", interval=0.05)
    try:
        process.wait_for(lambda: process.count("stored") >= 4, "writes before the fault")
        immutable.set(tmp_path / "violations.db")  # not its -journal: that exists only during a write, so it may vanish first
        os.sync()  # what the kernel's writeback does within 30 s: mapped pages clean, the next write faults
        acked = process.count("acked")
        process.wait_for(lambda: process.count("failed") >= 2 and process.count("acked") >= acked + 20,
                         "failed writes, and puts acknowledged meanwhile")
        assert process.process.poll() is None, "still running"
        assert any("store_write_failed" in line for line in process.log), "logged"
        immutable.clear()
        total = process.count("acked")
        process.wait_for(lambda: process.count("stored") >= total, "the backlog written once the file is writable")
        assert process.stop() == "True"
    finally:
        if process.process.poll() is None:
            process.kill()
    assert_recorded_once_in_order(sqlite_db, process.lines("acked"))


def test_a_spool_whose_disk_refuses_writes_keeps_every_record(sqlite_db, tmp_path, immutable, caplog):
    upgrade(sqlite_db.url)
    rec = Recorder()
    spool = tmp_path / "spool" / "events.jsonl"
    writer = StoreWriter(sqlite_db.url, PROV, spool, backoff_max=0.5, stored=rec.on_stored, failed=rec.on_failed)
    writer.thread.start()
    events = [e for i in range(30) for e in pair(f"ep-{i:02d}", T0 + i)]
    writer.put(events[0])
    wait_until(lambda: len(rec.stored) == 1, 30, "the first write")
    immutable.set(spool.parent, *spool.parent.iterdir())  # the spool's disk refuses every write
    for e in events[1:30]:
        writer.put(e)  # does not raise: the record waits in memory, and the database takes it
    assert rec.failures >= 1 and "spool_write_failed" in caplog.text
    wait_until(lambda: len(rec.stored) == 30, 30, "the records the spool refused written to the database")
    immutable.clear()
    for e in events[30:]:
        writer.put(e)
    assert writer.close(30)
    assert rec.stored == events
    assert [v.row["id"] for v in views(sqlite_db)] == [f"ep-{i:02d}" for i in range(30)]


# -- evidence through a locked database and a SIGTERM --------------------------------------------------

@pytest.mark.slow
def test_evidence_of_episodes_closed_while_the_database_is_locked_reaches_the_record(tiny_bundle, tmp_path):
    """Reproduced twice on the old writer: `spooled=7` in the log, 5 lines in the spool; after replay the violation
    had no evidence in its audit trail although the files were on disk, and verify said ok."""
    from monitor.demo import synthetic

    clip = tmp_path / "cam.mp4"
    synthetic.write_video(clip, synthetic.render_clip("idle", 24, (120, 160), 1), 12)
    cams = [{"id": f"cam-{i}", "url": str(clip), "loop": True} for i in range(2)]
    site = write_site(tmp_path / "site", tiny_bundle, cams, evidence={"pre_roll_seconds": 1, "post_roll_seconds": 1})
    database = tmp_path / "site" / "violations.db"
    upgrade(f"sqlite:///{database}")
    first = DaemonProcess(site)
    try:
        first.wait_for_log("event=daemon_started")
        lock = sqlite3.connect(database, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the database
        first.wait_for_log("event=violation_opened", count=2)
        evidence = tmp_path / "site" / "evidence"
        wait_until(lambda: len(list(evidence.rglob("*.mp4"))) >= 2, 60, "evidence clips written during the lock")
        assert first.terminate() == 0  # the episodes close now, the database still locked
    finally:
        if first.process.poll() is None:
            first.process.kill()
    lock.execute("ROLLBACK")
    lock.close()
    clips = {p.stem: p for p in evidence.rglob("*.mp4")}
    engine = create_engine(f"sqlite:///{database}")

    def recorded() -> dict:
        with engine.connect() as conn:
            return {v.row["id"]: v for v in query(conn)}

    with RunningDaemon(site, upgrade=False):  # the next start replays the spool
        wait_until(lambda: all(recorded().get(e) and recorded()[e].evidence for e in clips), 60, "the spool replayed")
    with engine.connect() as conn:
        problems = ledger.verify(conn, evidence)
    recorded = recorded()
    engine.dispose()
    for episode, path in clips.items():
        view = recorded[episode]
        assert view.ended_at, f"{episode}: closed"
        assert view.evidence.get("clip", {}).get("path", "").endswith(path.name), f"{episode}: evidence recorded"
    assert problems == []


def test_an_episode_closed_without_its_evidence_is_reported_unless_a_failure_is_recorded(db, tmp_path):
    upgrade(db.url)
    spool = tmp_path / "spool" / "events.jsonl"
    writer = StoreWriter(db.url, PROV, spool, evidence_expected=True)
    for episode in ("ep-none", "ep-clip", "ep-failed"):
        for e in pair(episode):
            writer.put(e)
    writer.put_evidence("ep-clip", {"clip": None, "snapshot": None})
    writer.put_evidence_failed("ep-failed", "camera line-2 delivered no frame")
    assert writer.close(30)
    engine = create_engine(db.url)
    with engine.connect() as conn:
        assert ledger.verify_evidence_recorded(conn) == [], "closed just now: the clip may still be coming"
        (missing,) = ledger.verify_evidence_recorded(conn, grace=0)
    assert (missing.kind, missing.where) == ("MISSING", "violation ep-none") and "no evidence recorded" in missing.what

    restart = StoreWriter(db.url, PROV, spool)  # the run that was to write it is gone: the next start says so
    restart.close_orphans()
    assert restart.close(30)
    with engine.connect() as conn:
        assert ledger.verify_evidence_recorded(conn, grace=0) == []
        (lost,) = conn.execute(sa.select(audit_events).where(audit_events.c.violation_id == "ep-none",
                                                             audit_events.c.what == "evidence_failed")).all()
    engine.dispose()
    assert "stopped before the evidence was written" in lost.new


@pytest.mark.parametrize("evidence_on", [True, False])
def test_an_episode_left_open_without_its_evidence_gets_a_recorded_evidence_failure(db, tmp_path, evidence_on):
    """A run killed within the post-roll of an episode it opened (bench/chaos.py caught it: a fall 0.9 s before
    SIGKILL): the next start closed the orphan with a note, but no evidence outcome, unlike an episode closed in
    time whose clip never came. With evidence recording off there is no clip to miss."""
    upgrade(db.url)
    spool = tmp_path / "spool" / "events.jsonl"
    first = StoreWriter(db.url, PROV, spool, evidence_expected=evidence_on)
    first.put(event("opened", "ep-killed"))
    first.put(event("opened", "ep-filmed", started=T0 + 1))
    first.put_evidence("ep-filmed", {"clip": None, "snapshot": None})
    assert first.close(30)  # then SIGKILL: ep-killed's clip was never written
    restart = StoreWriter(db.url, PROV, spool, evidence_expected=evidence_on)
    restart.close_orphans()
    assert restart.close(30)
    outcomes = {v.row["id"]: [a["what"] for a in v.trail if a["what"].startswith("evidence")] for v in views(db)}
    assert outcomes == {"ep-killed": ["evidence_failed"] if evidence_on else [], "ep-filmed": ["evidence"]}
    engine = create_engine(db.url)
    with engine.connect() as conn:
        assert ledger.verify_evidence_recorded(conn, grace=0) == []
    engine.dispose()


# -- orphaned episodes --------------------------------------------------------------------------------

def _closing(db, episode: str) -> dict:
    (view,) = [v for v in views(db) if v.row["id"] == episode]
    (closed,) = [a for a in view.trail if a["what"] == "closed"]
    return closed


def test_episodes_left_open_by_a_crash_are_closed_at_the_next_start(db, tmp_path):
    from monitor.record.writer import ORPHAN_WHY

    upgrade(db.url)
    spool = tmp_path / "spool" / "events.jsonl"
    first = StoreWriter(db.url, PROV, spool)
    for e in [event("opened", "ep-open"), *pair("ep-done", T0 + 1)]:
        first.put(e)
    assert first.close(30)  # then the process crashed, ep-open never closed
    engine = create_engine(db.url)
    with engine.begin() as conn:  # another host's open episode is not this run's to close
        write_event(conn, event("opened", "ep-other-host", started=T0 + 2), Provenance(**{**PROV.__dict__, "host": "edge-2"}))
    engine.dispose()
    last_alive = T0 + 3600.0
    os.utime(first.heartbeat, (last_alive, last_alive))

    second = StoreWriter(db.url, PROV, spool)
    second.close_orphans()
    assert second.close(30)
    closed = _closing(db, "ep-open")
    assert json.loads(closed["new"])["ended_at"] == utc(last_alive).isoformat(), "ended when last known alive"
    assert "last heartbeat" in json.loads(closed["new"])["ended_at_is"] and closed["why"] == ORPHAN_WHY
    assert _closing(db, "ep-done")["why"] != ORPHAN_WHY, "a closed episode keeps its own closing"
    assert not [a for v in views(db) if v.row["id"] == "ep-other-host" for a in v.trail]

    third = StoreWriter(db.url, PROV, spool)  # closing is idempotent: nothing left to close
    third.close_orphans()
    assert third.close(30)
    assert len([a for v in views(db) for a in v.trail if a["what"] == "closed"]) == 2


def test_orphans_are_closed_after_the_previous_runs_spool_whenever_the_database_returns(db, tmp_path):
    from monitor.record.writer import ORPHAN_WHY

    upgrade(db.url)
    spool = tmp_path / "spool" / "events.jsonl"
    crashed = StoreWriter("postgresql://nobody@127.0.0.1:1/none", PROV, spool, backoff_max=0.2)
    crashed.put(event("opened", "ep-spooled"))  # the database was down: it waits in the spool
    assert not crashed.close(2)
    crashed.heartbeat.unlink()
    restart = StoreWriter("postgresql://nobody@127.0.0.1:1/none", PROV, spool, backoff_max=0.2)
    restart.close_orphans()  # spooled behind ep-spooled, while the database is still down
    restart.put(event("opened", "ep-this-run", started=T0 + 10))
    assert not restart.close(2)
    back = StoreWriter(db.url, PROV, spool)
    assert back.close(30)
    closed = _closing(db, "ep-spooled")
    assert closed["why"] == ORPHAN_WHY and "restart" in json.loads(closed["new"])["ended_at_is"]
    assert [v.ended_at for v in views(db) if v.row["id"] == "ep-this-run"] == [None], "this run's episode stays open"


@pytest.mark.slow
def test_the_daemon_closes_what_its_previous_run_left_open_and_anchors(tiny_bundle, tmp_path, monkeypatch):
    from monitor.demo import synthetic

    clip = tmp_path / "cam.mp4"
    synthetic.write_video(clip, synthetic.render_clip("idle", 24, (120, 160), 1), 12)
    monkeypatch.setenv("HAR_ANCHOR_KEY", "k" * 32)
    site = write_site(tmp_path / "site", tiny_bundle, [{"id": "cam-0", "url": str(clip), "loop": True}],
                      storage={"url": "sqlite:///violations.db", "anchor": {"log": "anchors.jsonl", "every": "1h"}})
    url = f"sqlite:///{tmp_path / 'site' / 'violations.db'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:  # the previous run of this site and host crashed mid-episode
        write_event(conn, event("opened", "ep-crashed"), Provenance("test-site", "m", "r", "c", socket.gethostname()))
    (tmp_path / "site" / "spool").mkdir()
    heartbeat = tmp_path / "site" / "spool" / "events.alive"
    heartbeat.touch()
    os.utime(heartbeat, (T0 + 60, T0 + 60))

    def closed():
        with engine.connect() as conn:
            return conn.execute(sa.select(audit_events.c.new).where(
                audit_events.c.violation_id == "ep-crashed", audit_events.c.what == "closed")).scalar()

    with RunningDaemon(site, upgrade=False) as d:
        wait_until(closed, 60, "the orphan closed")
        d.wait_for(lambda: d.value("har_monitor_record_anchored_rows", chain="audit_events") >= 1, 60, "an anchor")
        assert d.value("har_monitor_record_last_anchor_timestamp_seconds") > T0
    engine.dispose()
    assert json.loads(closed())["ended_at"] == utc(T0 + 60).isoformat()
    assert (tmp_path / "site" / "anchors.jsonl").read_text().count("\n") >= 2, "at start and when it stopped"
