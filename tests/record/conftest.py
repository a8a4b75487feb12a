"""The record QA tests start from: 3 closed violations, one with evidence files, one signed review."""

from __future__ import annotations

import pytest

from monitor.fileio import sha256_file
from monitor.record.db import create_engine, upgrade
from monitor.record.ledger import audit
from monitor.record.writer import write_event
from support.events import PROV, T0, pair
from support.records import PASSWORD, cli


@pytest.fixture
def record(db, tmp_path):
    """(engine, the clip's path): ep-0, ep-1, ep-2 closed; ep-1 with a clip and snapshot, signed by rita."""
    upgrade(db.url)
    engine = create_engine(db.url)
    clip, snap = tmp_path / "ev" / "clip.mp4", tmp_path / "ev" / "snap.jpg"
    clip.parent.mkdir()
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42 clip bytes")
    snap.write_bytes(b"\xff\xd8\xff jpeg bytes")
    with engine.begin() as conn:
        for i in range(3):
            for e in pair(f"ep-{i}", T0 + i):
                write_event(conn, e, PROV)
        audit(conn, "ep-1:evidence", "ep-1", "system", "evidence", {},
              {"clip": {"path": str(clip), "sha256": sha256_file(clip)},
               "snapshot": {"path": str(snap), "sha256": sha256_file(snap)}}, "evidence written")
    assert cli(db, "users", "add", "rita", "--role", "reviewer", "--printed-name", "Rita Reviewer", stdin=PASSWORD) == 0
    assert cli(db, "violations", "review", "ep-1", "--disposition", "confirmed", "--reason", "gloves off on video",
               "--user", "rita", stdin=PASSWORD) == 0
    yield engine, clip
    engine.dispose()
