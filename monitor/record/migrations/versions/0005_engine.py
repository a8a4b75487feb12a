"""The engine that ran the backbone, in each violation's provenance: engine, precision, forced, converted model.

Revision ID: 0005
Revises: 0004

The columns are NULL on rows written before: the ledger hashes them only when set (tables.HASHED_WHEN_SET),
so those rows keep their hashes and `violations verify` passes on them unchanged.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("violations") as batch:
        batch.add_column(sa.Column("engine", sa.String(32), nullable=True))
        batch.add_column(sa.Column("precision", sa.String(8), nullable=True))
        batch.add_column(sa.Column("engine_forced", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("engine_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("violations") as batch:
        for name in ("engine_hash", "engine_forced", "precision", "engine"):
            batch.drop_column(name)
