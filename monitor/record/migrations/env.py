"""Alembic environment: run against the connection `monitor.record.db.upgrade` hands over."""

from alembic import context

from monitor.record.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
