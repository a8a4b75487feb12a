"""The QA console: rule set texts by hash, and an index on the kind of audit event.

Revision ID: 0003
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_sets",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    )
    # the kind of event: the console's filters, pruned-evidence look-ups and verify's evidence pass
    op.create_index("ix_audit_events_what", "audit_events", ["what"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_what", "audit_events")
    op.drop_table("rule_sets")
