"""The violation record: violations, audit events, reviews (hash-chained), users, chain heads.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _chain() -> list[sa.Column]:
    return [sa.Column("prev_hash", sa.String(64), nullable=False), sa.Column("row_hash", sa.String(64), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "violations",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("site", sa.String(128), nullable=False),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("camera", sa.String(64), nullable=False, index=True),
        sa.Column("rule", sa.String(64), nullable=False, index=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("started_at", TS, nullable=False, index=True),
        sa.Column("model_hash", sa.String(64), nullable=False),
        sa.Column("rules_hash", sa.String(64), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        *_chain(),
    )
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_key", sa.String(96), nullable=False, unique=True),
        sa.Column("violation_id", sa.String(36), index=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("what", sa.String(32), nullable=False),
        sa.Column("old", sa.Text, nullable=False),
        sa.Column("new", sa.Text, nullable=False),
        sa.Column("why", sa.Text, nullable=False),
        *_chain(),
    )
    op.create_table(
        "reviews",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("violation_id", sa.String(36), nullable=False, index=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("printed_name", sa.String(128), nullable=False),
        sa.Column("signed_at", TS, nullable=False),
        sa.Column("meaning", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("violation_hash", sa.String(64), nullable=False),
        *_chain(),
    )
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("printed_name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "chain_heads",
        sa.Column("chain", sa.String(32), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    for table in ("chain_heads", "users", "reviews", "audit_events", "violations"):
        op.drop_table(table)
