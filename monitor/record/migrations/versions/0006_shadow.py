"""Shadow mode: a candidate model's would-be violations, and the model(s) each daemon start ran.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    utc = sa.DateTime(timezone=True)
    op.create_table(
        "shadow_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("site", sa.String(128), nullable=False),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("camera", sa.String(64), nullable=False, index=True),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False, index=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("started_at", utc, nullable=False, index=True),
        sa.Column("ended_at", utc),
        sa.Column("model_hash", sa.String(64), nullable=False),
        sa.Column("live_model_hash", sa.String(64), nullable=False),
        sa.Column("rules_hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", utc, nullable=False),
    )
    op.create_table(
        "model_runs",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(36), nullable=False, unique=True),
        sa.Column("site", sa.String(128), nullable=False, index=True),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("started_at", utc, nullable=False),
        sa.Column("model_hash", sa.String(64), nullable=False),
        sa.Column("model_path", sa.Text, nullable=False),
        sa.Column("shadow_hash", sa.String(64)),
        sa.Column("shadow_path", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("model_runs")
    op.drop_table("shadow_events")
