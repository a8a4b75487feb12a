"""Hash-chained, append-only tables: appending rows and verifying the chains.

row_hash = SHA-256(prev_hash + canonical JSON of the row's content). The first row's
prev_hash is GENESIS. chain_heads holds each chain's last seq and hash, and is locked while
appending so that two writers (the daemon, a reviewer's command) cannot fork a chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from monitor.fileio import sha256_file
from monitor.record.tables import CHAINED, audit_events, chain_heads

GENESIS = "0" * 64
_NOT_CONTENT = {"seq", "prev_hash", "row_hash"}


def _canonical(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, float):
        return repr(value)
    return value


def content_hash(prev_hash: str, row: dict) -> str:
    content = {k: _canonical(v) for k, v in row.items() if k not in _NOT_CONTENT}
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + blob).encode()).hexdigest()


def append(conn: sa.Connection, table: sa.Table, values: dict) -> dict:
    """Append one row to a chain; returns the row as stored (with seq and hashes)."""
    name = table.name
    # Take the write lock first (a no-op UPDATE): on SQLite a transaction that read before writing
    # could be refused; on PostgreSQL it locks the head row like SELECT ... FOR UPDATE.
    conn.execute(chain_heads.update().where(chain_heads.c.chain == name).values(seq=chain_heads.c.seq))
    head = conn.execute(sa.select(chain_heads).where(chain_heads.c.chain == name).with_for_update()).first()
    prev = head.row_hash if head else GENESIS
    # every column, so the hash covers exactly what is read back (None where nothing was given)
    row = {c.name: values.get(c.name) for c in table.columns if c.name not in _NOT_CONTENT}
    row["prev_hash"] = prev
    row["row_hash"] = content_hash(prev, row)
    seq = conn.execute(table.insert().values(row)).inserted_primary_key[0]
    if head:
        conn.execute(chain_heads.update().where(chain_heads.c.chain == name).values(seq=seq, row_hash=row["row_hash"]))
    else:
        conn.execute(chain_heads.insert().values(chain=name, seq=seq, row_hash=row["row_hash"]))
    return dict(row, seq=seq)


def audit(conn: sa.Connection, key: str, violation_id: str | None, actor: str, what: str, old: dict, new: dict,
          why: str) -> bool:
    """Append an audit event once per key; False when that key was already recorded."""
    if conn.execute(sa.select(audit_events.c.seq).where(audit_events.c.event_key == key)).first():
        return False
    append(conn, audit_events, {
        "event_key": key, "violation_id": violation_id, "at": datetime.now(timezone.utc), "actor": actor, "what": what,
        "old": json.dumps(old, sort_keys=True), "new": json.dumps(new, sort_keys=True), "why": why})
    return True


@dataclass(frozen=True)
class Problem:
    chain: str
    where: str  # e.g. "seq 12 (id ...)", or a file path
    what: str

    def __str__(self) -> str:
        return f"{self.chain}: {self.where}: {self.what}"


def verify_chain(conn: sa.Connection, table: sa.Table) -> list[Problem]:
    problems: list[Problem] = []
    prev, last_seq = GENESIS, 0
    for row in conn.execute(sa.select(table).order_by(table.c.seq)).mappings():
        where = f"seq {row['seq']}" + (f" (id {row['id']})" if "id" in row else "")
        if row["prev_hash"] != prev:
            problems.append(Problem(table.name, where, "chain broken before this row: a row was removed or inserted"))
        if content_hash(row["prev_hash"], dict(row)) != row["row_hash"]:
            problems.append(Problem(table.name, where, "content altered (its hash does not match)"))
        prev, last_seq = row["row_hash"], row["seq"]
    head = conn.execute(sa.select(chain_heads).where(chain_heads.c.chain == table.name)).first()
    if head is not None and (head.seq != last_seq or head.row_hash != prev):
        problems.append(Problem(table.name, f"seq {head.seq}", "the last row(s) of the chain were removed"))
    elif head is None and last_seq:
        problems.append(Problem(table.name, "chain head", "missing: rows were inserted outside the ledger"))
    return problems


def verify_evidence(conn: sa.Connection, evidence_root: Path | None = None) -> list[Problem]:
    """Every evidence file recorded in the audit trail still has its recorded SHA-256."""
    problems = []
    pruned = {json.loads(r.new).get("path") for r in conn.execute(
        sa.select(audit_events.c.new).where(audit_events.c.what == "evidence_pruned"))}
    for row in conn.execute(sa.select(audit_events).where(audit_events.c.what == "evidence").order_by(audit_events.c.seq)):
        for kind in ("clip", "snapshot"):
            record = json.loads(row.new).get(kind)
            if not record or record["path"] in pruned:
                continue
            path = Path(record["path"])
            path = path if path.is_absolute() or evidence_root is None else evidence_root / path
            if not path.is_file():
                problems.append(Problem("evidence", str(path), f"missing (violation {row.violation_id})"))
            elif sha256_file(path) != record["sha256"]:
                problems.append(Problem("evidence", str(path), f"altered: SHA-256 differs (violation {row.violation_id})"))
    return problems


def verify(conn: sa.Connection, evidence_root: Path | None = None) -> list[Problem]:
    return [p for table in CHAINED.values() for p in verify_chain(conn, table)] + verify_evidence(conn, evidence_root)
