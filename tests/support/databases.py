"""Real databases for tests: a temp SQLite file, or a fresh PostgreSQL schema on 127.0.0.1:5432."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import sqlalchemy as sa

PG_HOST, PG_PORT = "127.0.0.1", 5432


@dataclass
class Db:
    backend: str  # sqlite | postgresql
    url: str  # what a user puts in storage.url (plain postgresql://, normalized by the store)
    read_url: sa.URL  # for plain SQLAlchemy reads, independent of monitor.record
    pg_schema: str | None = None
    pg_db: str | None = None
    pg_user: str | None = None

    def via_port(self, port: int) -> str:
        """The same PostgreSQL database and schema, reached through another port (a proxy)."""
        return pg_url(self.pg_user, port, self.pg_db, self.pg_schema).render_as_string(hide_password=False)

    def engine(self) -> sa.Engine:
        """A plain SQLAlchemy engine, independent of monitor.record."""
        return sa.create_engine(self.read_url)


def pg_url(user: str, port: int, dbname: str, schema: str, driver: str = "postgresql") -> sa.URL:
    return sa.URL.create(driver, username=user, host=PG_HOST, port=port, database=dbname,
                         query={"options": f"-csearch_path={schema}"})


def pg_admin() -> tuple[str | None, str]:
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


