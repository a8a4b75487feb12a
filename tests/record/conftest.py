"""The record QA tests start from: 3 closed violations, one with evidence files, one signed review."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from monitor.fileio import sha256_file
from monitor.record.db import create_engine, upgrade
from monitor.record.ledger import audit
from monitor.record.writer import write_event
from support.databases import Db
from support.events import PROV, T0, pair
from support.records import PASSWORD, cli

CLIP, SNAPSHOT = b"\x00\x00\x00\x18ftypmp42 clip bytes", b"\xff\xd8\xff jpeg bytes"


def _write_record(db: Db, evidence: Path) -> None:
    """ep-0, ep-1, ep-2 closed; ep-1 with a clip and a snapshot (paths relative to `evidence`), signed by rita."""
    upgrade(db.url)
    engine = create_engine(db.url)
    with engine.begin() as conn:
        for i in range(3):
            for e in pair(f"ep-{i}", T0 + i):
                write_event(conn, e, PROV)
        audit(conn, "ep-1:evidence", "ep-1", "system", "evidence", {},
              {"clip": {"path": "clip.mp4", "sha256": sha256_file(evidence / "clip.mp4")},
               "snapshot": {"path": "snap.jpg", "sha256": sha256_file(evidence / "snap.jpg")}}, "evidence written")
    engine.dispose()
    assert cli(db, "users", "add", "rita", "--role", "reviewer", "--printed-name", "Rita Reviewer", stdin=PASSWORD) == 0
    assert cli(db, "violations", "review", "ep-1", "--disposition", "confirmed", "--reason", "gloves off on video",
               "--user", "rita", stdin=PASSWORD) == 0


def _evidence(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clip.mp4").write_bytes(CLIP)
    (folder / "snap.jpg").write_bytes(SNAPSHOT)
    return folder


@pytest.fixture(scope="session")
def sqlite_record(tmp_path_factory) -> Path:
    """The record on SQLite, written once (password hashing and migrations take seconds): tests get a copy."""
    folder = tmp_path_factory.mktemp("record")
    path = folder / "violations.db"
    _write_record(Db("sqlite", f"sqlite:///{path}", None), _evidence(folder / "ev"))
    return path


@pytest.fixture
def record(db, tmp_path, sqlite_record):
    """(engine, the clip's path); the evidence folder is the clip's parent."""
    evidence = _evidence(tmp_path / "ev")
    if db.backend == "sqlite":
        shutil.copyfile(sqlite_record, db.url.removeprefix("sqlite:///"))
    else:
        _write_record(db, evidence)
    engine = create_engine(db.url)
    yield engine, evidence / "clip.mp4"
    engine.dispose()
