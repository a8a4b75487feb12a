"""`har-monitor console`: a user's mistakes are one clear line and exit 2, before anything listens."""

from __future__ import annotations

from monitor.cli import main
from monitor.record.db import upgrade


def test_an_empty_database_names_the_command_that_fixes_it(sqlite_db, capsys):
    assert main(["console", "--db", sqlite_db.url]) == 2
    assert "har-monitor db upgrade --db URL" in capsys.readouterr().err


def test_bad_options_are_named(sqlite_db, tmp_path, capsys):
    upgrade(sqlite_db.url)
    assert main(["console", "--db", sqlite_db.url, "--idle-timeout", "soon"]) == 2
    assert "--idle-timeout: 'soon' is not a duration" in capsys.readouterr().err
    assert main(["console", "--db", sqlite_db.url, "--evidence-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "--evidence-dir:" in err and "is not a folder" in err
