"""Alembic migrations of the violation record schema (`har-monitor db upgrade`)."""
