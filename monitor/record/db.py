"""The record's database: SQLAlchemy engines for SQLite (WAL) and PostgreSQL, and the schema's version (Alembic)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from monitor.errors import UserError

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


def write_retrying(engine: Engine, action: Callable[[sa.Connection], T], attempts: int = 5) -> T:
    """Run `action(conn)` in a transaction, again if the daemon's writer held the database (SQLite)."""
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                return action(conn)
        except sa.exc.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _alembic_config(conn: sa.Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "monitor.record:migrations")
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
