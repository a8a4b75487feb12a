"""The record's database: SQLAlchemy engines for SQLite (WAL) and PostgreSQL, and the schema's version (Alembic)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from monitor.errors import UserError
from monitor.ops.logs import redact_url

if TYPE_CHECKING:
    import psycopg

SUPPORTED = ("sqlite", "postgresql")
T = TypeVar("T")


class SchemaOutdated(Exception):  # noqa: N818 (a state, like FileNotFoundError's siblings; callers catch it by name)
    """The database is not at the schema this version needs (run `har-monitor db upgrade`)."""


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
    """The URL without its password. A string is redacted by the rule that needs no parsing (everything
    up to the last "@" before the host): a password may hold any character, "@" and "/" included."""
    if isinstance(url, sa.URL):
        return url.render_as_string(hide_password=True)
    try:
        make_url(url)
    except (ArgumentError, ValueError):
        return "<unparsable>"  # not a URL: it may be anything, a bare password included
    return redact_url(url)


# Every database call is bounded, so that a database that accepts connections and never answers
# cannot hold a thread forever (the writer's drain, a QA command).
CONNECT_SECONDS = 5.0
SQLITE_BUSY_SECONDS = 5.0  # waiting for another process's write lock
LOCK_SECONDS = 10.0  # PostgreSQL: waiting for a row lock (the chain head) held by another writer
QA_CALL_SECONDS = 60.0  # one statement or fetch of a QA command
UPGRADE_CALL_SECONDS = 3600.0  # a migration may rewrite a large table


def create_engine(url: str, call_seconds: float = QA_CALL_SECONDS) -> Engine:
    """An engine whose every call ends within `call_seconds` (connecting: CONNECT_SECONDS)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_SECONDS})

        @sa.event.listens_for(engine, "connect")
        def _no_shared_memory(conn, _record):
            # A rollback journal, not WAL: WAL's index is a shared memory map of the -shm file, and a
            # write to a mapped page of a file made immutable or read-only (chattr +i, a file system
            # remounted read-only after an I/O error) kills the process with SIGBUS, which no code can
            # catch. Plain reads and writes turn the same fault into an error: logged, counted, spooled.
            # (Readers and the writer still share the file: a commit waits for readers, SQLITE_BUSY_SECONDS.)
            conn.execute("PRAGMA mmap_size=0")
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=FULL")  # rollback journal + power cut: FULL keeps the file whole

        return engine
    engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=_pg_bounds(parsed, call_seconds))

    @sa.event.listens_for(engine, "do_connect")
    def _connect(_dialect, _record, cargs, cparams):
        return _bounded_pg_connection(call_seconds).connect(*cargs, **cparams)

    return engine


def _pg_bounds(url: sa.URL, call_seconds: float) -> dict:
    """Server-side timeouts, and TCP keepalives for a peer that vanished from the network."""
    ms = lambda seconds: int(seconds * 1000)
    options = (f"-c statement_timeout={ms(call_seconds)} -c lock_timeout={ms(LOCK_SECONDS)} "
               f"-c idle_in_transaction_session_timeout={ms(max(60.0, call_seconds))}")
    given = url.query.get("options")  # the user's own options come after ours, and win
    return {"connect_timeout": max(2, int(min(CONNECT_SECONDS, call_seconds))),  # libpq takes 2 s at least
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
            "tcp_user_timeout": ms(min(call_seconds, 60.0)),
            "options": f"{options} {given}" if isinstance(given, str) else options}


def _bounded_pg_connection(call_seconds: float) -> type[psycopg.Connection[Any]]:
    """psycopg's Connection whose every wait for the server ends after `call_seconds`.

    Neither TCP keepalives nor tcp_user_timeout notice a server that is hung but whose kernel
    still acknowledges (a stopped process, a stuck proxy): only a client-side limit does.
    """
    import psycopg

    class BoundedConnection(psycopg.Connection):
        def wait(self, gen, interval=0.1, timeout=None):
            try:
                return super().wait(gen, interval, call_seconds if timeout is None else timeout)
            except psycopg.errors._WaitTimeout:  # raised by Connection.wait(timeout=) (psycopg >= 3.2)
                self.pgconn.finish()  # stopped mid-protocol: unusable, the pool discards it
                raise psycopg.OperationalError(f"no answer from the database server within {call_seconds:g} s") from None

    return BoundedConnection


def describe_error(exc: BaseException) -> str:
    """The first line of a database error, without the SQL statement SQLAlchemy appends."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0][:300] if lines else type(cause).__name__


def write_retrying(engine: Engine, action: Callable[[sa.Connection], T], attempts: int = 5) -> T:
    """Run `action(conn)` in a transaction, again if another writer held the lock (the daemon's, on SQLite).

    Only a lock is waited out: an unreachable or hung database fails at once (each try is bounded already).
    """
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                return action(conn)
        except sa.exc.OperationalError as exc:
            if attempt == attempts - 1 or "lock" not in str(exc.orig).lower():
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _alembic_config(conn: sa.Connection | None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "monitor.record:migrations")
    config.attributes["connection"] = conn
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(None)).get_current_head()
    assert head is not None  # migrations/versions is never empty
    return head


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


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the database to the newest schema (or `revision`); returns (before, after) revisions."""
    from alembic import command

    engine = create_engine(url, UPGRADE_CALL_SECONDS)
    try:
        with engine.begin() as conn:
            before = schema_revision(conn)
            command.upgrade(_alembic_config(conn), revision)
            return before, schema_revision(conn)
    finally:
        engine.dispose()
