"""Schema changes go through Alembic: a record written under 0001 upgrades in place (0003, 0004: lockout), keeps its data and verifies."""

from __future__ import annotations

import sqlalchemy as sa

from monitor.record import ledger
from monitor.record.db import create_engine, head_revision, upgrade
from monitor.record.review import _hasher
from monitor.record.tables import users
from monitor.record.writer import write_event
from support.events import PROV, T0, pair
from support.records import PASSWORD, cli


def test_a_record_of_schema_0001_upgrades_with_its_data(db, capsys):
    assert upgrade(db.url, "0001") == (None, "0001")
    engine = create_engine(db.url)
    with engine.begin() as conn:  # written as 0001 knew it
        for i in range(3):
            for e in pair(f"ep-{i}", T0 + i):
                write_event(conn, e, PROV)
        conn.execute(sa.text("INSERT INTO users (name, printed_name, role, password_hash, disabled, created_at) "
                             "VALUES ('rita', 'Rita Reviewer', 'reviewer', :hash, :no, :now)"),
                     {"hash": _hasher().hash(PASSWORD), "no": False, "now": "2024-01-01 00:00:00+00:00"})
    assert upgrade(db.url) == ("0001", head_revision())
    with engine.connect() as conn:
        rita = conn.execute(sa.select(users).where(users.c.name == "rita")).one()
        assert (rita.failed_logins, rita.locked_at, rita.printed_name) == (0, None, "Rita Reviewer")
        assert ledger.verify(conn) == []
    assert cli(db, "violations", "review", "ep-1", "--disposition", "confirmed", "--reason", "after the upgrade",
               "--user", "rita", stdin=PASSWORD) == 0
    capsys.readouterr()
    assert cli(db, "violations", "list", "--format", "json") == 0
    assert '"status": "reviewed"' in capsys.readouterr().out
    engine.dispose()
