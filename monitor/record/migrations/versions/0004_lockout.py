"""Account lockout: wrong passwords in a row, and when the account was locked.

Revision ID: 0004
Revises: 0003 (after the console's 0003, which main had first: a database at 0003 gets these columns too)
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("locked_at")
        batch.drop_column("failed_logins")
