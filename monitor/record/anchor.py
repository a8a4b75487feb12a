"""Anchors: signed checkpoints of the hash chains, kept outside the database.

A chain inside the database proves only what the database says about itself: whoever can write
to it can delete its last rows and move the head back, empty it, or edit a row and recompute every
later hash (the code is public). An anchor records, for each chain, its last row (seq, row_hash)
and its number of rows, signed with HMAC-SHA256 under a key the database's users do not have, in
an append-only JSON-lines log on the daemon's disk (fsync'd), optionally copied to a second place
(a WORM mount, another host's share).

`violations verify` checks every anchor in the log against the tables: a row anchored once must
still be there with the same hash, and as many rows up to it. So a shortened or emptied chain, and
a row changed (even with every later hash recomputed) before the latest anchor, fail verification,
which also says between which anchors the change lies. Rows newer than the latest anchor are
covered by the chain in the database only: anchor often (`every`).

Writers: the daemon's store writer (every `every`, and when it stops), the QA commands after they
write (when they have the key), and `har-monitor violations anchor` (e.g. from cron on another host).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from monitor.errors import UserError
from monitor.ops.logs import kv
from monitor.record.ledger import GENESIS, Problem
from monitor.record.tables import CHAINED

log = logging.getLogger(__name__)
MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class ChainHead:
    seq: int  # of the chain's last row (0: empty)
    row_hash: str
    rows: int  # rows with seq <= `seq`


@dataclass(frozen=True)
class Anchor:
    at: datetime
    by: str
    chains: dict[str, ChainHead]
    line: int = 0  # in its log, from 1 (for messages)
    shipped: bool = True  # written: also to `ship_to`, when there is one


def load_key(key_env: str | None = "HAR_ANCHOR_KEY", key_file: Path | None = None) -> bytes | None:
    """The anchor key from a file (preferred: one the database's users cannot read) or the environment."""
    if key_file is not None:
        try:
            key = key_file.read_bytes().strip()
        except OSError as exc:
            raise UserError(f"storage.anchor.key_file: cannot read {key_file}: {exc.strerror}") from None
        where = f"storage.anchor.key_file: {key_file}"
    else:
        key = os.environ.get(key_env or "", "").strip().encode()
        if not key:
            return None
        where = f"storage.anchor.key_env: ${key_env}"
    if len(key) < MIN_KEY_BYTES:
        raise UserError(f"{where}: the key has {len(key)} bytes, at least {MIN_KEY_BYTES} are needed "
                        "(e.g. `openssl rand -hex 32`)")
    return key


def heads(conn: sa.Connection) -> dict[str, ChainHead]:
    """Each chain's last row and row count, each read in one statement (one snapshot, even on PostgreSQL)."""
    result = {}
    for name, table in CHAINED.items():
        inner = table.alias("earlier")
        rows = sa.select(sa.func.count()).where(inner.c.seq <= table.c.seq).scalar_subquery()
        last = conn.execute(sa.select(table.c.seq, table.c.row_hash, rows).order_by(table.c.seq.desc()).limit(1)).first()
        result[name] = ChainHead(last[0], last[1], last[2]) if last else ChainHead(0, GENESIS, 0)
    return result


class AnchorLog:
    """An append-only log of signed anchors; `ship_to` gets a copy of every line (best effort)."""

    def __init__(self, path: Path, key: bytes | None, ship_to: Path | None = None, every: float = 300.0):
        self.path, self.key, self.ship_to, self.every = Path(path), key, ship_to, every

    def write(self, conn: sa.Connection, by: str) -> Anchor:
        """Anchor the chains as `conn` sees them; OSError if the log cannot be written."""
        if self.key is None:
            raise ValueError("an anchor needs the key")
        chains = heads(conn)
        now = datetime.now(timezone.utc)
        body = {"at": now.isoformat(), "by": by, "key": key_id(self.key),
                "chains": {name: {"seq": h.seq, "row_hash": h.row_hash, "rows": h.rows} for name, h in chains.items()}}
        line = json.dumps({**body, "hmac": _sign(self.key, body)}, sort_keys=True) + "\n"
        _append(self.path, line)
        shipped = True
        if self.ship_to is not None:
            try:
                _append(self.ship_to, line)
            except OSError as exc:  # the local log has it; the copy catches up with the next anchor
                shipped = False
                log.warning(kv(event="anchor_not_shipped", to=str(self.ship_to), error=exc.strerror or str(exc)))
        return Anchor(now, by, chains, shipped=shipped)

    def read(self) -> tuple[list[Anchor], list[Problem]]:
        """The anchors whose signature holds (all of them when there is no key), and the lines that fail."""
        anchors, problems = [], []
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            return [], [Problem("anchors", str(self.path), f"cannot be read: {exc.strerror}")]
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{self.path} line {number}"
            try:
                entry = json.loads(line)
                signature = entry.pop("hmac")
                chains = {name: ChainHead(int(c["seq"]), str(c["row_hash"]), int(c["rows"]))
                          for name, c in entry["chains"].items()}
                anchor = Anchor(datetime.fromisoformat(entry["at"]), str(entry["by"]), chains, number)
            except (ValueError, KeyError, TypeError, AttributeError):
                if number == len(text.splitlines()) and not text.endswith("\n"):
                    continue  # a torn last line (a crash while appending): never written whole
                problems.append(Problem("anchors", where, "not an anchor (the log was altered)"))
                continue
            if self.key is not None and not hmac.compare_digest(signature, _sign(self.key, entry)):
                other = entry.get("key") != key_id(self.key)
                problems.append(Problem("anchors", where, "signature does not match: "
                                        + ("signed with another key" if other else "the anchor was altered")))
                continue
            anchors.append(anchor)
        return anchors, problems


def key_id(key: bytes) -> str:
    """Which key signed an anchor (a wrong key is told apart from an altered anchor)."""
    return hashlib.sha256(b"har-monitor anchor key id\0" + key).hexdigest()[:12]


def _sign(key: bytes, body: Mapping[str, object]) -> str:
    return hmac.new(key, json.dumps(body, sort_keys=True, separators=(",", ":")).encode(), hashlib.sha256).hexdigest()


def _append(path: Path, line: str) -> None:
    """Append one whole line, fsync'd; a lock keeps the daemon and a QA command from interleaving."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = line.encode()
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)


def verify(conn: sa.Connection, log: AnchorLog) -> tuple[list[Problem], list[str]]:
    """The anchor log's own problems and the tables checked against its anchors; (problems, notes for the reader)."""
    anchors, problems = log.read()
    notes = [] if log.key else ["anchor signatures not checked: no key (storage.anchor's key, $HAR_ANCHOR_KEY, "
                                "or --anchor-key-file)"]
    if anchors:
        found, more_notes = check(conn, anchors)
        return problems + found, notes + more_notes
    if any(head.rows for head in heads(conn).values()):
        problems.append(Problem("anchors", str(log.path), "no anchor, but the record has rows: the anchor log was "
                                "removed or emptied, or nothing ever anchored it", "MISSING"))
    return problems, notes


def check(conn: sa.Connection, anchors: list[Anchor]) -> tuple[list[Problem], list[str]]:
    """Check the tables against every anchor; (problems, notes for the reader)."""
    problems, notes = [], []
    for name, table in CHAINED.items():
        points: dict[ChainHead, Anchor] = {}
        for anchor in anchors:  # each distinct head once, with the first anchor that recorded it
            if name in anchor.chains:
                points.setdefault(anchor.chains[name], anchor)
        if not points:
            continue
        found, count = _rows_at(conn, table, {head.seq for head in points})
        problem = _first_mismatch(name, sorted(points.items(), key=lambda p: p[0].seq), found, count)
        if problem is not None:
            problems.append(problem)
            continue
        latest_head, latest = max(points.items(), key=lambda p: p[0].seq)
        newer = count - latest_head.rows
        notes.append(f"{name}: {latest_head.rows} row(s) up to seq {latest_head.seq} match the anchor of {_at(latest)}"
                     + (f"; the {newer} newer row(s) are covered only by the chain in the database" if newer else ""))
    return problems, notes


def _first_mismatch(name: str, points: list[tuple[ChainHead, Anchor]], found: dict[int, tuple[str, int]],
                    count: int) -> Problem | None:
    """The earliest anchored head the table no longer matches, and the last one before it that it does."""
    good: ChainHead | None = None
    for head, anchor in points:
        if head.seq == 0:
            continue
        since = f"after seq {good.seq}, which matches its anchor" if good else "anywhere up to it"
        row_hash, rows = found.get(head.seq, (None, 0))
        if count == 0:
            what = f"the chain is empty, but the anchor of {_at(anchor)} recorded {head.rows} row(s)"
        elif row_hash is None:
            what = f"seq {head.seq}, anchored {_at(anchor)}, is gone: rows were removed ({since})"
        elif row_hash != head.row_hash:
            what = f"seq {head.seq} differs from its anchor of {_at(anchor)}: rows were altered ({since})"
        elif rows != head.rows:
            what = (f"{rows} row(s) up to seq {head.seq}, the anchor of {_at(anchor)} recorded {head.rows}: "
                    f"rows were removed or inserted ({since})")
        else:
            good = head
            continue
        return Problem(name, "anchored rows", what)
    return None


def _at(anchor: Anchor) -> str:
    return f"{anchor.at.isoformat(timespec='seconds')} (line {anchor.line})"


def _rows_at(conn: sa.Connection, table: sa.Table, seqs: set[int]) -> tuple[dict[int, tuple[str, int]], int]:
    """({anchored seq: (its row_hash, rows up to it)} for those that exist, all rows), in one streamed pass."""
    found, count = {}, 0
    for seq, row_hash in conn.execute(sa.select(table.c.seq, table.c.row_hash).order_by(table.c.seq)
                                      .execution_options(yield_per=5000)):
        count += 1
        if seq in seqs:
            found[seq] = (row_hash, count)
    return found, count
