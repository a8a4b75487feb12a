"""The QA commands: ids taken literally, lockout after wrong passwords (audited, unlocked by an admin), valid user
names, and one clear message with exit 2, never a traceback, for every mistake and unreachable database."""

from __future__ import annotations

import io
import json
import stat
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from monitor.cli import main
from monitor.record import review as reviews_module
from monitor.record.db import create_engine
from monitor.record.review import AuthError, authenticate, authenticate_or_refuse
from monitor.record.tables import audit_events, reviews, users
from support.records import PASSWORD
from support.tcpproxy import TcpProxy

SQLITE_ONLY = pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # where the database plays no part


def run(capsys, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    capsys.readouterr()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin + "\n")
    try:
        code = main(list(argv))
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return code, out, err


def signatures(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(reviews)).mappings()]


def trail(engine, what: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(audit_events).where(audit_events.c.what == what)
                                              .order_by(audit_events.c.seq)).mappings()]


def review(db, capsys, violation: str, user: str = "rita", password: str = PASSWORD, *extra: str):
    return run(capsys, "violations", "review", violation, "--disposition", "confirmed", "--reason", "seen on video",
               "--user", user, "--password-stdin", "--db", db.url, *extra, stdin=password)


# -- ids are taken literally ----------------------------------------------------------------------------

@pytest.mark.parametrize("violation", ["%p-2", "_p-2", "", "  ", "ep-"])
def test_a_review_signs_only_the_violation_named(db, record, capsys, violation):
    engine, _ = record
    before = signatures(engine)
    code, _, err = review(db, capsys, violation)
    assert code == 2 and err.startswith("error: violation"), err
    assert ("ambiguous" in err) == (violation == "ep-"), err
    assert signatures(engine) == before, "nothing signed"


@SQLITE_ONLY
def test_show_needs_an_id(db, record, capsys):
    code, out, err = run(capsys, "violations", "show", "", "--db", db.url)
    assert code == 2 and "violation id: empty" in err and not out
    assert run(capsys, "violations", "show", "ep-2", "--db", db.url)[0] == 0


# -- lockout -------------------------------------------------------------------------------------------

def test_wrong_passwords_lock_the_account_until_an_admin_unlocks_it(db, record, capsys):
    engine, _ = record
    for attempt in range(1, 6):
        code, _, err = review(db, capsys, "ep-2", password=f"wrong {attempt}")
        assert code == 1 and "wrong password" in err
    assert "now locked" in err
    code, _, err = review(db, capsys, "ep-2")  # the right password, too late
    assert code == 1 and "is locked after 5 wrong passwords" in err
    refused = trail(engine, "signature_refused")
    assert [json.loads(r["new"])["user"] for r in refused] == ["rita"] * 6, "every refusal is an audit event"
    assert [r["why"] for r in refused][-2:] == ["wrong password (5 in a row)", "locked user"]
    assert len(trail(engine, "user_locked")) == 1
    assert len(signatures(engine)) == 1, "only the fixture's signature"

    assert run(capsys, "users", "unlock", "rita", "--reason", "called her back", "--db", db.url)[0] == 0
    (unlocked,) = trail(engine, "user_unlocked")
    assert unlocked["why"] == "called her back" and unlocked["actor"].startswith("os:")
    assert review(db, capsys, "ep-2")[0] == 0
    assert run(capsys, "users", "unlock", "rita", "--reason", "again", "--db", db.url)[0] == 2, "not locked"


@SQLITE_ONLY
def test_a_right_password_resets_the_count_and_the_limit_is_configurable(db, record, capsys, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"site": "s", "model": "m", "storage": {"url": db.url}, "qa": {"lockout_after": 2},
                                    "cameras": [{"id": "c", "url": "c.mp4"}]}))
    as_site = ("--cameras", str(site))
    assert review(db, capsys, "ep-2", "rita", "wrong")[0] == 1
    assert review(db, capsys, "ep-2")[0] == 0, "one wrong password, then the right one"
    code, _, err = run(capsys, "violations", "review", "ep-0", "--disposition", "confirmed", "--reason", "r",
                       "--user", "rita", "--password-stdin", *as_site, stdin="wrong")
    assert code == 1 and "1 attempt(s) left" in err, "the count started again"
    code, _, err = run(capsys, "violations", "review", "ep-0", "--disposition", "confirmed", "--reason", "r",
                       "--user", "rita", "--password-stdin", *as_site, stdin="wrong")
    assert code == 1 and "now locked" in err


@SQLITE_ONLY
def test_failed_sign_ins_count_towards_the_lockout_when_committed(db, record):
    """The console's sign-in: `authenticate_or_refuse` in a transaction that commits the refusal."""
    engine, _ = record
    for _ in range(5):
        with engine.begin() as conn:
            assert isinstance(authenticate_or_refuse(conn, "rita", "wrong password"), AuthError)
    with engine.begin() as conn:
        refusal = authenticate_or_refuse(conn, "rita", PASSWORD)
    assert isinstance(refusal, AuthError) and "is locked" in str(refusal)
    assert [r["why"] for r in trail(engine, "login_refused")][-1] == "locked user"
    assert len(trail(engine, "login_refused")) == 6 and len(trail(engine, "user_locked")) == 1


@SQLITE_ONLY
def test_unknown_users_and_viewers_are_refused_and_audited(db, record, capsys):
    engine, _ = record
    assert run(capsys, "users", "add", "vic", "--role", "viewer", "--password-stdin", "--db", db.url, stdin=PASSWORD)[0] == 0
    assert review(db, capsys, "ep-2", "vic")[0] == 1
    assert review(db, capsys, "ep-2", "nobody")[0] == 1
    assert review(db, capsys, "ep-2", "my secret password!")[0] == 1  # typed into the wrong field
    refused = trail(engine, "signature_refused")
    assert [(json.loads(r["new"])["user"], r["why"]) for r in refused] == [
        ("vic", "a viewer may not sign"), ("<unknown>", "unknown user"), ("<unknown>", "unknown user")]
    assert "nobody" not in json.dumps([r["new"] for r in refused]), "a name that is no user's may be a password"
    with engine.connect() as conn:
        assert "secret" not in json.dumps([dict(r) for r in conn.execute(sa.select(audit_events)).mappings()], default=str)


# -- user names ---------------------------------------------------------------------------------------

@pytest.fixture
def empty_store(db):
    assert main(["db", "upgrade", "--db", db.url]) == 0
    return db


@SQLITE_ONLY
@pytest.mark.parametrize("name", ["", " ", "a b", ".rita", "rita\n", "r" * 65, "rïta;drop"])
def test_a_user_needs_a_real_name(empty_store, capsys, name):
    code, _, err = run(capsys, "users", "add", name, "--role", "reviewer", "--password-stdin", "--db", empty_store.url,
                       stdin=PASSWORD)
    assert code == 2 and "user name" in err


def test_the_longest_name_is_a_user_too(empty_store, capsys):
    name = "r" * 64  # its audit events' keys still fit the column
    assert run(capsys, "users", "add", name, "--role", "reviewer", "--password-stdin", "--db", empty_store.url,
               stdin=PASSWORD)[0] == 0
    assert run(capsys, "users", "disable", name, "--reason", "test", "--db", empty_store.url)[0] == 0


@SQLITE_ONLY
def test_a_password_is_kept_as_an_argon2id_hash_at_full_cost(empty_store, capsys, monkeypatch, full_cost_hasher):
    """The record keeps the password as argon2id at no less than RFC 9106's low-memory cost, and a sign-in checks
    it (the other tests hash at the lowest cost: tests/conftest.py)."""
    from argon2 import Type, extract_parameters
    from argon2.profiles import RFC_9106_LOW_MEMORY as RFC

    monkeypatch.setattr(reviews_module, "_hasher", full_cost_hasher)
    assert run(capsys, "users", "add", "rita", "--role", "reviewer", "--password-stdin", "--db", empty_store.url,
               stdin=PASSWORD)[0] == 0
    engine = create_engine(empty_store.url)
    with engine.begin() as conn:
        stored = conn.execute(sa.select(users.c.password_hash)).scalar_one()
        cost = extract_parameters(stored)
        assert cost.type is Type.ID and PASSWORD not in stored
        assert cost.time_cost >= RFC.time_cost and cost.memory_cost >= RFC.memory_cost, cost
        assert authenticate(conn, "rita", PASSWORD).name == "rita"
    engine.dispose()


@SQLITE_ONLY
def test_a_signature_needs_a_printed_name(empty_store, capsys):
    code, _, err = run(capsys, "users", "add", "otto", "--role", "reviewer", "--printed-name", "  ", "--password-stdin",
                       "--db", empty_store.url, stdin=PASSWORD)
    assert code == 2 and "--printed-name" in err


# -- one message and exit 2, never a traceback ----------------------------------------------------------

def assert_user_error(result: tuple[int, str, str], *needles: str) -> None:
    code, _, err = result
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@SQLITE_ONLY
def test_since_far_back_is_a_message(db, record, capsys):
    assert_user_error(run(capsys, "violations", "list", "--since", "1000000d", "--db", db.url), "--since", "1000000d")
    assert_user_error(run(capsys, "violations", "list", "--since", "yesterday", "--db", db.url), "--since")
    code, out, _ = run(capsys, "violations", "list", "--since", "1h30m", "--format", "json", "--db", db.url)
    assert code == 0 and json.loads(out) == [], "the units of rules"


@SQLITE_ONLY
@pytest.mark.parametrize("where", ["file-as-parent", "/dev/full", "a-directory", "missing-directory"])
def test_export_to_an_unwritable_path_is_a_message_and_leaves_nothing(db, record, capsys, tmp_path, where):
    (tmp_path / "plain-file").write_text("x")
    out = {"file-as-parent": tmp_path / "plain-file" / "audit.csv", "/dev/full": Path("/dev/full"),
           "a-directory": tmp_path, "missing-directory": tmp_path / "no" / "such" / "audit.csv"}[where]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_user_error(run(capsys, "violations", "export", "--out", str(out), "--db", db.url), "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "no partial or temporary file left"
    assert stat.S_ISCHR(Path("/dev/full").stat().st_mode), "a device is never replaced"


@SQLITE_ONLY
def test_an_export_is_written_whole(db, record, capsys, tmp_path):
    out = tmp_path / "audit.csv"
    out.write_text("an older export\n")
    assert run(capsys, "violations", "export", "--out", str(out), "--db", db.url)[0] == 0
    assert out.read_text(encoding="utf-8-sig").startswith("id,site,host") and not list(tmp_path.glob(".*.tmp"))


COMMANDS = [("violations", "list"), ("violations", "verify"), ("db", "upgrade")]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_unreachable_postgresql_is_a_message(capsys, command):
    assert_user_error(run(capsys, *command, "--db", "postgresql://nobody:s3cret@127.0.0.1:1/none"),
                      "--db", "127.0.0.1:1")
    assert "s3cret" not in capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_hung_postgresql_is_a_message(pg_db, capsys, command):
    with TcpProxy("127.0.0.1", 5432) as proxy:
        proxy.hang()
        assert_user_error(run(capsys, *command, "--db", pg_db.via_port(proxy.port)), "--db", "timeout")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_sqlite_url_that_is_not_a_database_is_a_message(capsys, tmp_path, command):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database, just some bytes " * 100)
    assert_user_error(run(capsys, *command, "--db", f"sqlite:///{garbage}"), "--db", "not a database")
    assert_user_error(run(capsys, *command, "--db", f"sqlite:///{tmp_path}/no/such/dir/violations.db"),
                      "--db", "does not exist")
