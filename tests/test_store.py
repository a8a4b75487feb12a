"""The violation store (monitor/store.py) on SQLite (temp file) and PostgreSQL (127.0.0.1:5432).

PostgreSQL tests run in one fresh database per test session (dropped at the end), one
schema per test; they are skipped, with the reason, when the server is not reachable.
"""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from monitor.errors import UserError
from monitor.records import ViolationEvent
from monitor.store import (Provenance, StoreWriter, create_engine, metadata, normalize_url, shown_url, violations,
                           write_event)
from support.tcpproxy import TcpProxy

PG_HOST, PG_PORT = "127.0.0.1", 5432
T0 = 1_700_000_000.25  # an epoch time with a fraction that floats and microseconds both hold exactly
PROV = Provenance(site="plant-7", model_hash=hashlib.sha256(b"model").hexdigest(),
                  rules_hash=hashlib.sha256(b"rules").hexdigest(), config_hash=hashlib.sha256(b"config").hexdigest())


# -- events and reading back -------------------------------------------------------------------

def event(kind: str, episode: str, confidence: float = 0.7, started: float = T0, ended: float | None = None,
          camera: str = "line-2", rule: str = "no-gloves") -> ViolationEvent:
    return ViolationEvent(kind=kind, episode_id=episode, rule=rule, severity="major", camera=camera,
                          action="touch_product", confidence=confidence, started_at=started,
                          ended_at=ended if kind == "closed" else None, mono=time.monotonic())


def episode_events(episode: str, started: float = T0) -> list[ViolationEvent]:
    return [event("opened", episode, 0.6, started), event("closed", episode, 0.6, started, started + 3.0)]


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """Compare instants even where the backend drops the zone (tested separately)."""
    return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# -- databases -----------------------------------------------------------------------------------

@dataclass
class Db:
    backend: str  # sqlite | postgresql
    url: str  # what a user puts in storage.url (plain postgresql://, normalized by the store)
    read_url: sa.URL  # for plain SQLAlchemy reads, independent of monitor.store
    pg_schema: str | None = None
    pg_db: str | None = None
    pg_user: str | None = None

    def via_port(self, port: int) -> str:
        """The same PostgreSQL database and schema, reached through another port (a proxy)."""
        return pg_url(self.pg_user, port, self.pg_db, self.pg_schema).render_as_string(hide_password=False)

    def rows(self, order_by=violations.c.recorded_at) -> list[sa.RowMapping]:
        engine = sa.create_engine(self.read_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.select(violations).order_by(order_by)).mappings())
        finally:
            engine.dispose()

    def has_table(self) -> bool:
        engine = sa.create_engine(self.read_url)
        try:
            with engine.connect() as conn:
                return sa.inspect(conn).has_table("violations")
        finally:
            engine.dispose()


def pg_url(user: str, port: int, dbname: str, schema: str, driver: str = "postgresql") -> sa.URL:
    return sa.URL.create(driver, username=user, host=PG_HOST, port=port, database=dbname,
                         query={"options": f"-csearch_path={schema}"})


def _pg_admin() -> tuple[str | None, str]:
    """(user, "") for a superuser connection to the `postgres` db, or (None, why not)."""
    import psycopg

    try:
        socket.create_connection((PG_HOST, PG_PORT), timeout=1).close()
    except OSError as exc:
        return None, f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} ({exc})"
    errors = []
    for user in ("postgres", "root"):
        try:
            psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=3).close()
            return user, ""
        except psycopg.Error as exc:
            errors.append(f"{user}: {str(exc).strip()}")
    return None, f"cannot log in to PostgreSQL on {PG_HOST}:{PG_PORT} as postgres or root ({'; '.join(errors)})"


@pytest.fixture(scope="session")
def pg_database():
    """A fresh database for this test run: (user, dbname); dropped at the end."""
    import psycopg

    user, why = _pg_admin()
    if user is None:
        pytest.skip(why)
    name = f"har_monitor_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield user, name
    finally:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # also ends leaked connections


@pytest.fixture
def pg_db(pg_database) -> Db:
    import psycopg

    user, dbname = pg_database
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=dbname, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return Db("postgresql", pg_url(user, PG_PORT, dbname, schema).render_as_string(hide_password=False),
              pg_url(user, PG_PORT, dbname, schema, "postgresql+psycopg"), schema, dbname, user)


@pytest.fixture
def sqlite_db(tmp_path) -> Db:
    path = tmp_path / "violations.db"
    return Db("sqlite", f"sqlite:///{path}", sa.make_url(f"sqlite:///{path}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request) -> Db:
    return request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "pg_db")


@pytest.fixture
def store_engine(db):
    """The store's own engine, with the table created (for write_event)."""
    engine = create_engine(db.url)
    with engine.begin() as conn:
        metadata.create_all(conn)
    yield engine
    engine.dispose()


def apply(engine: sa.Engine, *events: ViolationEvent) -> None:
    """Each event in its own transaction, as the writer does."""
    for e in events:
        with engine.begin() as conn:
            write_event(conn, e, PROV)


class Recorder:
    """The writer's callbacks: what was stored (in order) and how many writes failed."""

    def __init__(self):
        self.stored: list[ViolationEvent] = []
        self.failures = 0
        self._lock = threading.Lock()

    def on_stored(self, e: ViolationEvent) -> None:
        with self._lock:
            self.stored.append(e)

    def on_failed(self) -> None:
        with self._lock:
            self.failures += 1


@pytest.fixture
def make_writer():
    """StoreWriter factory; anything still running at teardown is closed with a bounded wait."""
    writers: list[StoreWriter] = []

    def make(url: str, start: bool = True, **kw) -> tuple[StoreWriter, Recorder]:
        rec = Recorder()
        writer = StoreWriter(url, PROV, stored=rec.on_stored, failed=rec.on_failed, **kw)
        writers.append(writer)
        if start:
            writer.thread.start()
        return writer, rec

    yield make
    for writer in writers:
        if writer.thread.is_alive():
            writer.close(1)  # a daemon thread; never block the run on it


# -- 1. what a row holds over an episode ---------------------------------------------------------

def test_episode_lifecycle_row(db, store_engine):
    apply(store_engine, event("opened", "ep-1", confidence=0.71))
    (row,) = db.rows()
    assert {k: row[k] for k in ("id", "camera", "rule", "severity", "action", "status", "site",
                                "model_hash", "rules_hash", "config_hash")} == {
        "id": "ep-1", "camera": "line-2", "rule": "no-gloves", "severity": "major", "action": "touch_product",
        "status": "open", "site": PROV.site, "model_hash": PROV.model_hash, "rules_hash": PROV.rules_hash,
        "config_hash": PROV.config_hash}
    assert row["confidence"] == pytest.approx(0.71)
    assert as_utc(row["started_at"]) == utc(T0)
    assert row["ended_at"] is None
    assert row["recorded_at"] is not None

    apply(store_engine, event("updated", "ep-1", confidence=0.93))
    (row,) = db.rows()
    assert row["confidence"] == pytest.approx(0.93)
    assert (row["status"], row["ended_at"]) == ("open", None)

    apply(store_engine, event("closed", "ep-1", confidence=0.93, ended=T0 + 12.5))
    (closed,) = db.rows()
    assert closed["status"] == "closed"
    assert as_utc(closed["ended_at"]) == utc(T0 + 12.5)
    assert closed["confidence"] == pytest.approx(0.93)
    assert as_utc(closed["started_at"]) == utc(T0)  # updates never move the start
    assert closed["recorded_at"] == row["recorded_at"]


def test_times_read_back_timezone_aware_utc(db, store_engine):
    apply(store_engine, event("opened", "ep-tz"), event("closed", "ep-tz", ended=T0 + 1.5))
    (row,) = db.rows()
    for column in ("started_at", "ended_at", "recorded_at"):
        assert row[column].tzinfo is not None, f"{column} read back naive: {row[column]!r}"
        assert row[column].utcoffset().total_seconds() == 0 or column == "recorded_at"
    assert row["started_at"] == utc(T0)
    assert row["ended_at"] == utc(T0 + 1.5)


# -- 2. idempotence --------------------------------------------------------------------------------

def test_replayed_events_leave_one_row(db, store_engine):
    opened = event("opened", "ep-2")
    apply(store_engine, opened, opened)
    assert [r["id"] for r in db.rows()] == ["ep-2"]
    first_recorded = db.rows()[0]["recorded_at"]

    closed = event("closed", "ep-2", ended=T0 + 4)
    apply(store_engine, closed, closed)
    (row,) = db.rows()
    assert (row["id"], row["status"], as_utc(row["ended_at"])) == ("ep-2", "closed", utc(T0 + 4))
    assert row["recorded_at"] == first_recorded


# -- 3. SQLite journal mode ----------------------------------------------------------------------------

def test_sqlite_runs_in_wal_mode(sqlite_db):
    engine = create_engine(sqlite_db.url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar().lower() == "wal"
    finally:
        engine.dispose()
    # WAL is a property of the file: a QA tool opening it with plain sqlite3 reads alongside the writer
    path = sqlite_db.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


# -- 4. URLs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["postgresql://u@db.example/violations", "postgres://u@db.example/violations"])
def test_plain_postgresql_url_uses_psycopg3(url):
    parsed = normalize_url(url)
    assert parsed.drivername == "postgresql+psycopg"
    assert (parsed.username, parsed.host, parsed.database) == ("u", "db.example", "violations")


def test_sqlite_url_kept():
    assert normalize_url("sqlite:///violations.db").drivername == "sqlite"


@pytest.mark.parametrize("url", [
    "not a url",
    "u:s3cret@h/db",  # scheme forgotten
    "postgresql://u:s3cret@h:port/db",  # port not a number
    "postgresql+nosuchdriver://u:s3cret@h/db",
    "nosuchdb://u:s3cret@h/db",
    "mysql://u:s3cret@h/db",
])
def test_bad_url_is_a_user_error_without_the_password(url):
    with pytest.raises(UserError) as info:
        normalize_url(url)
    message = str(info.value)
    assert "storage.url" in message
    assert "s3cret" not in message


def test_shown_url_hides_the_password():
    for url in ("postgresql://u:s3cret@h/db", sa.make_url("postgresql://u:s3cret@h/db")):
        shown = shown_url(url)
        assert "s3cret" not in shown
        assert "u:" in shown and "@h/db" in shown


# -- 5. database outage: nothing lost, nothing reordered --------------------------------------------------

def test_writer_survives_postgresql_outage_in_order(pg_db, make_writer):
    with TcpProxy(PG_HOST, PG_PORT) as proxy:
        writer, rec = make_writer(pg_db.via_port(proxy.port), backoff_max=1.0)
        put: list[ViolationEvent] = []

        def put_episodes(first: int, count: int) -> None:
            for i in range(first, first + count):
                for e in episode_events(f"ep-{i:03d}", started=T0 + i):
                    writer.put(e)
                    put.append(e)

        put_episodes(0, 5)  # while the database is up: leaves a pooled connection through the proxy
        wait_until(lambda: len(rec.stored) == 10, 20, "the first 10 events to be stored")
        assert rec.failures == 0
        assert proxy.accepted >= 1

        proxy.pause()  # database down: the pooled connection is dropped, new ones refused
        put_episodes(5, 20)
        wait_until(lambda: rec.failures >= 2 or not writer.thread.is_alive(), 20,
                   "the writer to fail and retry while the database is down")
        assert writer.thread.is_alive()
        assert len(rec.stored) == 10  # the outage was real: nothing got through
        assert writer.pending() >= 39  # the event being retried is out of the queue, the rest wait

        proxy.resume()
        assert writer.close(20), f"writer did not flush after the database came back ({writer.pending()} pending)"

    assert rec.stored == put  # each event committed exactly once, in put order
    rows = pg_db.rows()  # directly, not through the proxy; ordered by recorded_at
    assert [r["id"] for r in rows] == [f"ep-{i:03d}" for i in range(25)]  # once each, in put order
    assert all(a["recorded_at"] < b["recorded_at"] for a, b in zip(rows, rows[1:]))
    for i, row in enumerate(rows):
        assert row["status"] == "closed", row
        assert as_utc(row["started_at"]) == utc(T0 + i)
        assert as_utc(row["ended_at"]) == utc(T0 + i + 3.0)


def test_tcpproxy_resumes_on_the_same_port():
    with socket.create_server(("127.0.0.1", 0)) as echo_server:
        def serve() -> None:
            while True:
                try:
                    conn, _ = echo_server.accept()
                except OSError:
                    return
                with conn:
                    while data := conn.recv(1024):
                        conn.sendall(data)
        threading.Thread(target=serve, daemon=True).start()

        with TcpProxy(*echo_server.getsockname()[:2]) as proxy:
            port = proxy.port

            def roundtrip() -> bytes:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                    c.sendall(b"ping")
                    return c.recv(4)

            assert roundtrip() == b"ping"
            live = socket.create_connection(("127.0.0.1", port), timeout=5)
            live.sendall(b"x")
            assert live.recv(1) == b"x"
            proxy.pause()
            with pytest.raises(OSError):  # refused
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            try:
                dropped = live.recv(1) == b""  # EOF
            except OSError:  # reset
                dropped = True
            live.close()
            assert dropped
            proxy.resume()
            assert proxy.port == port
            assert roundtrip() == b"ping"


# -- 6. the writer: creates the table, close() flushes -------------------------------------------------------

def test_writer_creates_table_and_close_flushes_the_queue(db, make_writer):
    assert not db.has_table()
    writer, rec = make_writer(db.url, start=False, backoff_max=1.0)
    put = []
    for i in range(10):
        opened, closed = episode_events(f"ep-{i}", started=T0 + i)
        put += [opened, event("updated", f"ep-{i}", 0.9, T0 + i), closed]
    for e in put:
        writer.put(e)
    writer.thread.start()
    assert writer.close(20)  # returns only once all 30 queued events are committed
    assert writer.pending() == 0
    assert rec.stored == put and rec.failures == 0
    rows = db.rows(order_by=violations.c.id)
    assert [(r["id"], r["status"], r["confidence"]) for r in rows] == [(f"ep-{i}", "closed", 0.6) for i in range(10)]


def test_writer_recovers_when_first_write_fails_after_creating_the_table(db, make_writer):
    """The connection drops between CREATE TABLE and the first INSERT: the retry must still succeed."""
    writer, rec = make_writer(db.url, start=False, backoff_max=1.0)
    injected = []

    @sa.event.listens_for(writer.engine, "before_cursor_execute")
    def drop_first_insert(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO VIOLATIONS") and not injected:
            injected.append(statement)
            raise sa.exc.OperationalError(statement, None, ConnectionResetError("injected: connection dropped"))

    opened = event("opened", "ep-first")
    writer.put(opened)
    writer.thread.start()
    wait_until(lambda: rec.stored or rec.failures >= 2, 20, "the retry after the injected failure")
    assert injected and rec.failures >= 1
    assert rec.stored == [opened], f"retry failed too ({rec.failures} failures)"
    assert writer.close(10)
    assert [r["id"] for r in db.rows()] == ["ep-first"]
