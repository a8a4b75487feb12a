"""The violation store: SQLAlchemy, SQLite (WAL) by default, PostgreSQL by URL; one writer thread.

Events are written in order by one thread into the hash-chained, append-only record
(monitor/schema.py, monitor/ledger.py). When the database is unreachable, events go to a
durable local spool (fsync'd) and are replayed in order when it returns; every write is
idempotent by the episode's id, so each event lands exactly once. Nothing is dropped.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from monitor import ledger
from monitor.errors import UserError
from monitor.logs import kv
from monitor.records import ViolationEvent
from monitor.schema import audit_events, violations
from monitor.spool import Spool

log = logging.getLogger("monitor.store")
SUPPORTED = ("sqlite", "postgresql")


class SchemaOutdated(Exception):
    """The database is not at the schema this version needs (run `har-monitor db upgrade`)."""


@dataclass(frozen=True)
class Provenance:
    """Which site, host, model, rules and config made a decision (GMP traceability)."""

    site: str
    model_hash: str
    rules_hash: str
    config_hash: str
    host: str = socket.gethostname()


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


def _alembic_config(conn: sa.Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "monitor:migrations")
    config.attributes["connection"] = conn
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def schema_revision(conn: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def check_schema(engine: Engine, command: str = "har-monitor db upgrade --cameras site.yaml") -> None:
    with engine.connect() as conn:
        current = schema_revision(conn)
    head = head_revision()
    if current != head:
        raise SchemaOutdated(f"database {shown_url(engine.url)} has schema {current or 'none (empty)'}, "
                             f"this version needs {head}: run `{command}`")


def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the database to the newest schema; returns (before, after) revisions."""
    from alembic import command

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            before = schema_revision(conn)
            command.upgrade(_alembic_config(conn), "head")
            return before, schema_revision(conn)
    finally:
        engine.dispose()


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def write_event(conn: sa.Connection, event: ViolationEvent, prov: Provenance) -> bool:
    """Apply one event to the record; False when it was already there (replays are idempotent).

    opened -> a violations row; closed -> a "closed" audit event with the end time and the
    peak confidence. "updated" events only move the live metrics: the peak is kept at closing.
    """
    if event.kind == "opened":
        if conn.execute(sa.select(violations.c.seq).where(violations.c.id == event.episode_id)).first():
            return False
        ledger.append(conn, violations, dict(
            id=event.episode_id, site=prov.site, host=prov.host, camera=event.camera, rule=event.rule,
            severity=event.severity, action=event.action, confidence=float(event.confidence),
            started_at=_utc(event.started_at), model_hash=prov.model_hash,
            rules_hash=event.rules_hash or prov.rules_hash, config_hash=prov.config_hash,
            labels=json.dumps(event.labels, sort_keys=True), recorded_at=datetime.now(timezone.utc)))
        return True
    if event.kind == "closed":
        return audit(conn, f"{event.episode_id}:closed", event.episode_id, "system", "closed",
                     {"status": "open"}, {"status": "closed", "ended_at": _utc(event.ended_at).isoformat(),
                                          "peak_confidence": float(event.confidence)},
                     "the condition stopped holding (or the daemon stopped)")
    return False


def audit(conn: sa.Connection, key: str, violation_id: str | None, actor: str, what: str, old: dict, new: dict,
          why: str) -> bool:
    """Append an audit event once per key; False when that key was already recorded."""
    if conn.execute(sa.select(audit_events.c.seq).where(audit_events.c.event_key == key)).first():
        return False
    ledger.append(conn, audit_events, dict(
        event_key=key, violation_id=violation_id, at=datetime.now(timezone.utc), actor=actor, what=what,
        old=json.dumps(old, sort_keys=True), new=json.dumps(new, sort_keys=True), why=why))
    return True


def apply_record(conn: sa.Connection, record: dict, prov: Provenance) -> ViolationEvent | None:
    """Write one spooled record: a violation event, an evidence record, or a pruned evidence file."""
    if record["type"] == "event":
        event = ViolationEvent(**record["event"])
        write_event(conn, event, prov)
        return event
    if record["type"] == "evidence":
        audit(conn, f"{record['violation_id']}:evidence", record["violation_id"], "system", "evidence", {},
              record["evidence"], "evidence clip and snapshot written")
    elif record["type"] == "pruned":
        audit(conn, f"pruned:{record['path']}", None, "system", "evidence_pruned", {}, {"path": record["path"]},
              f"evidence retention of {record['retention_days']:g} days")
    return None


class StoreWriter:
    """One thread owns all writes. `stored(event)` is called after each successful commit.

    While the spool holds anything, new events join it behind the older ones, so the
    database always receives events in the order they happened.
    """

    def __init__(self, url: str, prov: Provenance, spool_path: Path,
                 stored: Callable[[ViolationEvent], None] = lambda e: None, failed: Callable[[], None] = lambda: None,
                 spooled: Callable[[int], None] = lambda depth: None, backoff_max: float = 30.0):
        self.engine = create_engine(url)
        self.prov = prov
        self.spool = Spool(spool_path)
        self.stored = stored
        self.failed = failed
        self.spooled = spooled
        self.backoff_max = backoff_max
        self._queue: queue.Queue[dict | None] = queue.Queue()
        self._schema_ok = False
        self.thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    def put(self, event: ViolationEvent) -> None:
        if event.kind != "updated":
            self._queue.put({"type": "event", "event": asdict(event)})

    def put_evidence(self, violation_id: str, evidence: dict) -> None:
        self._queue.put({"type": "evidence", "violation_id": violation_id, "evidence": evidence})

    def put_pruned(self, path: str, retention_days: float) -> None:
        self._queue.put({"type": "pruned", "path": path, "retention_days": retention_days})

    def pending(self) -> int:
        return self._queue.qsize() + len(self.spool)

    def close(self, timeout: float) -> bool:
        """Finish what is queued; True if everything reached the database within `timeout`.

        Whatever did not is safe in the spool, replayed at the next start.
        """
        self._queue.put(None)
        self.thread.join(timeout)
        done = not self.thread.is_alive() and not len(self.spool)
        self.engine.dispose()
        return done

    def _run(self) -> None:
        delay = min(0.5, self.backoff_max)
        stopping = False
        while True:
            try:
                event = self._queue.get(timeout=delay if len(self.spool) else None)
            except queue.Empty:
                event = "retry"
            if event is None:
                stopping = True
            elif event != "retry":
                self.spool.append(event)  # durable before anything else
            if len(self.spool):
                if self._drain():
                    delay = min(0.5, self.backoff_max)
                else:
                    delay = min(self.backoff_max, delay * 2)
                    if stopping:
                        return
            if stopping and (not len(self.spool) or self._queue.empty()):
                return

    def _drain(self) -> bool:
        """Write the spool to the database in order; False (and everything kept) on failure."""
        records = self.spool.read()
        written = 0
        try:
            if not self._schema_ok:
                check_schema(self.engine)
                self._schema_ok = True
            for record in records:
                with self.engine.begin() as conn:
                    event = apply_record(conn, record, self.prov)
                written += 1
                if event is not None:
                    self.stored(event)
        except (SQLAlchemyError, SchemaOutdated, OSError) as exc:  # retried; the spool keeps the events
            self.failed()
            log.warning(kv(event="store_write_failed", url=shown_url(self.engine.url), spooled=len(records) - written,
                           error=str(exc).splitlines()[0][:200] if isinstance(exc, SchemaOutdated)
                           else type(getattr(exc, "orig", None) or exc).__name__))
            return False
        finally:
            if written:
                self.spool.drop_first(written)
            self.spooled(len(self.spool))
        return True
