"""The text of each rule set, by the hash that every violation row records ("the rule text in force").

The daemon stores its rule set when it starts and when it reloads; QA reads it back for a
violation's `rules_hash`. Append-only: a hash is stored once, with when it was first seen.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from monitor.ops.logs import kv
from monitor.record.tables import rule_sets

log = logging.getLogger(__name__)
RETRY_SECONDS = (1, 5, 30, 60, 300)  # then every 5 minutes, for as long as the daemon runs


def record_ruleset(conn: sa.Connection, hash: str, text: str) -> bool:
    """Store a rule set's text under its hash; False when that hash is stored already."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    done = conn.execute(insert(rule_sets).values(hash=hash, text=text, first_seen=datetime.now(timezone.utc))
                        .on_conflict_do_nothing(index_elements=["hash"])  # two shards may start at once
                        .returning(rule_sets.c.hash))
    return done.first() is not None


def stored_ruleset(conn: sa.Connection, hash: str) -> sa.Row | None:
    return conn.execute(sa.select(rule_sets).where(rule_sets.c.hash == hash)).first()


def remember_ruleset(engine: Engine, hash: str, text: str) -> threading.Thread:
    """Store a rule set from a thread of its own, retried while the database is unreachable:
    the daemon neither waits for the database nor loses the text through an outage."""
    def store() -> None:
        attempt = 0
        while True:
            try:
                with engine.begin() as conn:
                    record_ruleset(conn, hash, text)
                return
            except SQLAlchemyError as exc:
                delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                log.warning(kv(event="ruleset_not_stored", rules=hash, retry_seconds=delay,
                               error=type(getattr(exc, "orig", None) or exc).__name__))
                time.sleep(delay)
                attempt += 1

    thread = threading.Thread(target=store, name="ruleset-store", daemon=True)
    thread.start()
    return thread
