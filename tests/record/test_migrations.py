"""Schema changes go through Alembic: a record written under 0001 upgrades in place (0003, 0004: lockout, 0005:
the engine in each violation's provenance), keeps its data and verifies."""

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


def test_rows_from_before_0005_keep_their_hashes_and_new_rows_hash_their_engine(db):
    """0005 adds the engine to each violation's provenance: rows written before have none, and their hashes
    (chained into every later row) must not move; a row with an engine hashes it, so changing it is caught."""
    from dataclasses import replace

    from monitor.record.tables import violations

    assert upgrade(db.url, "0004") == (None, "0004")
    engine = create_engine(db.url)
    with engine.begin() as conn:
        for e in pair("ep-old", T0):
            write_event(conn, e, PROV)
        before = conn.execute(sa.select(violations.c.id, violations.c.row_hash)).all()
    assert upgrade(db.url) == ("0004", head_revision())
    forced = replace(PROV, engine="openvino", precision="int8", engine_forced=True, engine_hash="e" * 16)
    with engine.begin() as conn:
        assert conn.execute(sa.select(violations.c.id, violations.c.row_hash)).all() == before
        for e in pair("ep-new", T0 + 10):
            write_event(conn, e, forced)
        new = conn.execute(sa.select(violations).where(violations.c.id == "ep-new")).one()
        assert (new.engine, new.precision, new.engine_forced, new.engine_hash) == ("openvino", "int8", True, "e" * 16)
        assert ledger.verify(conn) == []
        conn.execute(violations.update().where(violations.c.id == "ep-new").values(engine_forced=False))
        problems = ledger.verify(conn)
    assert [p.where for p in problems] == [f"seq {new.seq} (id ep-new)"], "hiding that it was forced is caught"
    engine.dispose()
