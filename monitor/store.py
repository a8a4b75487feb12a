"""The violation store: SQLAlchemy, SQLite (WAL) by default, PostgreSQL by URL; one writer thread.

Events are written in order by one thread. A failed write (database down, locked) is
retried with backoff and counted; the event stays at the head of the queue, so nothing is
lost and nothing is reordered. Writes are idempotent by episode id.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from monitor.errors import UserError
from monitor.logs import kv
from monitor.records import ViolationEvent

log = logging.getLogger("monitor.store")
metadata = sa.MetaData()
SUPPORTED = ("sqlite", "postgresql")


class UTCDateTime(sa.TypeDecorator):
    """Timezone-aware UTC on every database (SQLite would hand back naive datetimes)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=timezone.utc)


violations = sa.Table(
    "violations", metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # the episode id
    sa.Column("site", sa.String(128), nullable=False),
    sa.Column("camera", sa.String(64), nullable=False, index=True),
    sa.Column("rule", sa.String(64), nullable=False, index=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("ended_at", UTCDateTime()),
    sa.Column("status", sa.String(16), nullable=False),  # open | closed
    sa.Column("model_hash", sa.String(64), nullable=False),
    sa.Column("rules_hash", sa.String(64), nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),  # the rule's free-form labels
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
)


@dataclass(frozen=True)
class Provenance:
    """Which site, model, rules and config made a decision (GMP traceability)."""

    site: str
    model_hash: str
    rules_hash: str  # for events that carry none: an event's own wins (the rules may be reloaded)
    config_hash: str


def normalize_url(url: str) -> sa.URL:
    """Parse a database URL; plain postgresql:// uses psycopg 3 (the driver we install)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UserError(f"storage.url: '{shown_url(url)}' is not a database URL (e.g. sqlite:///violations.db, "
                        "postgresql://user@host/db)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        supported = parsed.get_dialect().name in SUPPORTED
        parsed.get_dialect().import_dbapi()  # the driver is installed
    except Exception:
        supported = False
    if not supported:
        raise UserError(f"storage.url: unsupported database '{parsed.drivername}' "
                        "(expected sqlite:///PATH or postgresql://USER@HOST/DB)")
    return parsed


def shown_url(url: str | sa.URL) -> str:
    try:
        return (url if isinstance(url, sa.URL) else make_url(url)).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable>"


def create_engine(url: str) -> Engine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": 5})

        @sa.event.listens_for(engine, "connect")
        def _wal(conn, _record):  # concurrent readers (QA tools) while the daemon writes
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")

        return engine
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 5})


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def write_event(conn: sa.Connection, event: ViolationEvent, prov: Provenance) -> None:
    """Apply one event; replaying an event already applied changes nothing."""
    values = dict(confidence=event.confidence, ended_at=_utc(event.ended_at),
                  status="closed" if event.kind == "closed" else "open")
    exists = conn.execute(sa.select(violations.c.id).where(violations.c.id == event.episode_id)).first()
    if exists:
        conn.execute(violations.update().where(violations.c.id == event.episode_id), values)
        return
    conn.execute(violations.insert(), dict(
        values, id=event.episode_id, site=prov.site, camera=event.camera, rule=event.rule,
        severity=event.severity, action=event.action, started_at=_utc(event.started_at),
        model_hash=prov.model_hash, rules_hash=event.rules_hash or prov.rules_hash, config_hash=prov.config_hash,
        labels=dict(event.labels),
        recorded_at=datetime.now(timezone.utc)))


class StoreWriter:
    """One thread owns all writes. `stored(event)` is called after each successful commit."""

    def __init__(self, url: str, prov: Provenance, stored: Callable[[ViolationEvent], None] = lambda e: None,
                 failed: Callable[[], None] = lambda: None, backoff_max: float = 30.0):
        self.engine = create_engine(url)
        self.prov = prov
        self.stored = stored
        self.failed = failed
        self.backoff_max = backoff_max
        self._queue: queue.Queue[ViolationEvent | None] = queue.Queue()
        self._ready = False
        self.thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    def put(self, event: ViolationEvent) -> None:
        self._queue.put(event)

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float) -> bool:
        """Ask the writer to finish what is queued; True if it did within `timeout`."""
        self._queue.put(None)
        self.thread.join(timeout)
        alive = self.thread.is_alive()
        if not alive:
            self.engine.dispose()
        return not alive

    def _run(self) -> None:
        event = self._queue.get()
        delay = min(0.5, self.backoff_max)
        while event is not None:
            try:
                with self.engine.begin() as conn:
                    if not self._ready:
                        metadata.create_all(conn)
                    write_event(conn, event, self.prov)
                self._ready = True  # only once committed: a failed first write rolls the DDL back too
            except SQLAlchemyError as exc:
                self.failed()
                log.warning(kv(event="store_write_failed", url=shown_url(self.engine.url), retry_in_s=delay,
                               error=type(getattr(exc, "orig", None) or exc).__name__, pending=self.pending() + 1))
                time.sleep(delay)
                delay = min(self.backoff_max, delay * 2)
                continue
            delay = min(0.5, self.backoff_max)
            self.stored(event)
            event = self._queue.get()
