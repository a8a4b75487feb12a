"""The text of each rule set, by the hash that every violation row records ("the rule text in force").

The daemon stores its rule set when it starts and when it reloads (a record of the store writer's
spool, so an outage delays the text but never loses it); QA reads it back for a violation's `rules_hash`. Append-only: a hash is stored once, with when it was first seen.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from monitor.record.tables import rule_sets


def record_ruleset(conn: sa.Connection, hash: str, text: str) -> bool:
    """Store a rule set's text under its hash; False when that hash is stored already."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    done = conn.execute(insert(rule_sets).values(hash=hash, text=text, first_seen=datetime.now(timezone.utc))
                        .on_conflict_do_nothing(index_elements=["hash"])  # two shards may start at once
                        .returning(rule_sets.c.hash))
    return done.first() is not None


def stored_ruleset(conn: sa.Connection, hash: str) -> sa.Row | None:
    return conn.execute(sa.select(rule_sets).where(rule_sets.c.hash == hash)).first()
