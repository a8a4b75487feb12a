"""The database schema of the violation record (a regulated electronic record, 21 CFR Part 11 / Annex 11).

violations and audit_events are append-only hash chains: each row carries the SHA-256 of its
content and of the previous row, so an edited, deleted or inserted row breaks the chain
(`har-monitor violations verify`). A change to a violation (closed, evidence attached,
reviewed) is a new audit event, never an UPDATE. reviews are electronic signatures, chained too.
The schema is created and changed only by Alembic migrations (migrations/versions).
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

metadata = sa.MetaData()
# A column added to a chained table after rows were written: a row's hash covers it only when it has a value,
# so the rows written before it existed (NULL there) keep the hashes they were written with.
HASHED_WHEN_SET = {"hashed_when_set": True}


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


def _chain_columns() -> list[sa.Column]:
    return [sa.Column("prev_hash", sa.String(64), nullable=False), sa.Column("row_hash", sa.String(64), nullable=False)]


violations = sa.Table(
    "violations", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),  # the episode id
    sa.Column("site", sa.String(128), nullable=False),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("camera", sa.String(64), nullable=False, index=True),
    sa.Column("rule", sa.String(64), nullable=False, index=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),  # at opening; the peak is in the closing audit event
    sa.Column("started_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("model_hash", sa.String(64), nullable=False),
    sa.Column("rules_hash", sa.String(64), nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("labels", sa.Text, nullable=False, default="{}"),  # JSON
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
    # the engine that ran the backbone (0005): in the row's hash only when set, so rows written before keep theirs
    sa.Column("engine", sa.String(32), info=HASHED_WHEN_SET),
    sa.Column("precision", sa.String(8), info=HASHED_WHEN_SET),
    sa.Column("engine_forced", sa.Boolean, info=HASHED_WHEN_SET),
    sa.Column("engine_hash", sa.String(64), info=HASHED_WHEN_SET),
    *_chain_columns(),
)

audit_events = sa.Table(
    "audit_events", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_key", sa.String(96), nullable=False, unique=True),  # idempotent replays
    sa.Column("violation_id", sa.String(36), index=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),  # a user name, or "system"
    sa.Column("what", sa.String(32), nullable=False, index=True),  # closed | evidence | reviewed | viewed | user_added ...
    sa.Column("old", sa.Text, nullable=False),  # JSON
    sa.Column("new", sa.Text, nullable=False),  # JSON
    sa.Column("why", sa.Text, nullable=False),
    *_chain_columns(),
)

reviews = sa.Table(
    "reviews", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("violation_id", sa.String(36), nullable=False, index=True),
    sa.Column("user", sa.String(64), nullable=False),
    sa.Column("printed_name", sa.String(128), nullable=False),
    sa.Column("signed_at", UTCDateTime(), nullable=False),
    sa.Column("meaning", sa.String(32), nullable=False),  # the disposition: confirmed | false_positive | needs_follow_up
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("violation_hash", sa.String(64), nullable=False),  # binds the signature to the record signed
    *_chain_columns(),
)

users = sa.Table(
    "users", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("printed_name", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # viewer | reviewer | admin
    sa.Column("password_hash", sa.String(256), nullable=False),  # argon2id
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("failed_logins", sa.Integer, nullable=False, default=0),  # wrong passwords in a row (0004)
    sa.Column("locked_at", UTCDateTime()),  # locked by failed_logins; an admin unlocks (0004)
)

CHAINED = {"violations": violations, "audit_events": audit_events, "reviews": reviews}

chain_heads = sa.Table(  # the last row of each chain: a deleted last row is caught too
    "chain_heads", metadata,
    sa.Column("chain", sa.String(32), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
)

rule_sets = sa.Table(  # the text of every rule set the daemon ran, by the hash each violation records (append-only)
    "rule_sets", metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
)

shadow_events = sa.Table(  # a shadow model's would-be violations (not the regulated record: no chain, no review) (0006)
    "shadow_events", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),  # the shadow episode's id
    sa.Column("site", sa.String(128), nullable=False),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("camera", sa.String(64), nullable=False, index=True),
    sa.Column("zone", sa.String(64), nullable=False, default=""),
    sa.Column("rule", sa.String(64), nullable=False, index=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),  # the peak once closed
    sa.Column("started_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("ended_at", UTCDateTime()),  # set when the episode closes
    sa.Column("model_hash", sa.String(64), nullable=False),  # the shadow model's
    sa.Column("live_model_hash", sa.String(64), nullable=False),
    sa.Column("rules_hash", sa.String(64), nullable=False),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
)

model_runs = sa.Table(  # each daemon start: which model (and shadow model) it ran, to tell a change of model (0006)
    "model_runs", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), nullable=False, unique=True),
    sa.Column("site", sa.String(128), nullable=False, index=True),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("model_hash", sa.String(64), nullable=False),
    sa.Column("model_path", sa.Text, nullable=False),
    sa.Column("shadow_hash", sa.String(64)),
    sa.Column("shadow_path", sa.Text),
)
