"""Hash-chained, append-only tables: appending rows and verifying the chains.

row_hash = SHA-256(prev_hash + canonical JSON of the row's content). The first row's
prev_hash is GENESIS. chain_heads holds each chain's last seq and hash, and is locked while
appending so that two writers (the daemon, a reviewer's command) cannot fork a chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from monitor.fileio import sha256_file
from monitor.record.tables import CHAINED, audit_events, chain_heads

GENESIS = "0" * 64
EVIDENCE_GRACE_SECONDS = 600.0  # an episode's clip is written within seconds of its post-roll
closed_events = audit_events.alias("closed")
_NOT_CONTENT = {"seq", "prev_hash", "row_hash"}
_HASHED_WHEN_SET = {c.name for t in CHAINED.values() for c in t.columns if c.info.get("hashed_when_set")}


def _canonical(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, float):
        return repr(value)
    return value


def content_hash(prev_hash: str, row: dict) -> str:
    content = {k: _canonical(v) for k, v in row.items()
               if k not in _NOT_CONTENT and not (v is None and k in _HASHED_WHEN_SET)}
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
    # (a column hashed only when set is left out when unset: NULL all the same, and a schema from before it still takes the row)
    row = {c.name: values.get(c.name) for c in table.columns
           if c.name not in _NOT_CONTENT and not (c.name in _HASHED_WHEN_SET and values.get(c.name) is None)}
    row["prev_hash"] = prev
    row["row_hash"] = content_hash(prev, row)
    key = conn.execute(table.insert().values(row)).inserted_primary_key
    assert key is not None  # an INSERT of one row
    seq = key[0]
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
    kind: str = "ALTERED"  # ALTERED: the record was changed; MISSING: something the record should hold is not there

    def __str__(self) -> str:
        return f"{self.chain}: {self.where}: {self.what}"


def _where(row) -> str:
    return f"seq {row.seq}" + (f" (id {row.id})" if "id" in row._fields else "")


def verify_chain(conn: sa.Connection, table: sa.Table) -> list[Problem]:
    """Recompute a chain row by row (streamed) and name each row altered, inserted, or removed.

    The chain is the path of prev_hash links from GENESIS to the row chain_heads names. Rows after
    that row were not written by the ledger (inserted); a missing link is told apart from an inserted
    row by looking for the row that links over it. Rows removed from the end with the head moved back
    leave a consistent, shorter chain: only an anchor (monitor.record.anchor) tells that.
    """
    name = table.name
    head = conn.execute(sa.select(chain_heads).where(chain_heads.c.chain == name)).first()
    last = conn.execute(sa.select(sa.func.max(table.c.seq))).scalar()
    if head is None:
        return [] if last is None else [Problem(name, "chain head", "missing: rows were written outside the ledger, "
                                                                   "or the head was deleted")]
    problems: list[Problem] = []
    prev, prev_seq, inserted_until = GENESIS, 0, 0
    rows = conn.execute(sa.select(table).order_by(table.c.seq).execution_options(yield_per=1000))  # streamed
    for row in rows:
        if row.seq > head.seq:
            problems.append(Problem(name, _where(row), "inserted after the chain head: not written by the ledger"))
            continue
        if content_hash(row.prev_hash, row._asdict()) != row.row_hash:
            problems.append(Problem(name, _where(row), "content altered (its hash does not match)"))
        if row.seq <= inserted_until:
            problems.append(Problem(name, _where(row), "inserted: the chain links over it"))
            continue
        if row.prev_hash != prev:
            linked_over = conn.execute(sa.select(sa.func.min(table.c.seq)).where(
                table.c.prev_hash == prev, table.c.seq > row.seq)).scalar() if prev_seq else None
            linked_to = conn.execute(sa.select(sa.func.max(table.c.seq)).where(
                table.c.row_hash == row.prev_hash, table.c.seq < row.seq)).scalar()
            if linked_over is not None:  # a later row links to the row before this one: this one was inserted
                problems.append(Problem(name, _where(row), "inserted: the chain links over it"))
                inserted_until = linked_over - 1
                continue
            if linked_to is not None:  # this row links to an earlier one: those in between were inserted
                for between in conn.execute(sa.select(table).where(table.c.seq > linked_to, table.c.seq < row.seq)
                                            .order_by(table.c.seq)):
                    problems.append(Problem(name, _where(between), "inserted: the chain links over it"))
            else:
                problems.append(Problem(name, _where(row), f"row(s) removed before this one (after seq {prev_seq})"))
        prev, prev_seq = row.row_hash, row.seq
    if prev_seq != head.seq:
        problems.append(Problem(name, f"seq {head.seq}", f"the last row(s) of the chain were removed "
                                                         f"(the head names seq {head.seq}, the chain ends at seq {prev_seq})"))
    elif prev != head.row_hash:
        problems.append(Problem(name, f"seq {head.seq}", "the chain head does not match its row (altered)"))
    return problems


def verify_evidence_recorded(conn: sa.Connection, grace: float = EVIDENCE_GRACE_SECONDS) -> list[Problem]:
    """Every episode closed with evidence expected has an evidence record, or a recorded failure.

    An episode closed less than `grace` seconds ago may still be waiting for its clip (it is
    written after the post-roll, or the record is behind in the spool): it is not a problem yet.
    """
    recorded = sa.select(audit_events.c.seq).where(audit_events.c.violation_id == closed_events.c.violation_id,
                                                   audit_events.c.what.in_(("evidence", "evidence_failed")))
    due = datetime.now(timezone.utc) - timedelta(seconds=grace)
    problems = []
    for row in conn.execute(sa.select(closed_events).where(closed_events.c.what == "closed", closed_events.c.at < due,
                                                           ~recorded.exists()).order_by(closed_events.c.seq)):
        if json.loads(row.new).get("evidence") == "expected":
            problems.append(Problem("evidence", f"violation {row.violation_id}",
                                    f"no evidence recorded (closed at {row.at.isoformat()}, evidence expected)", "MISSING"))
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
    """The chains, that evidence was recorded, and (given where they are) the evidence files' hashes.

    Without `evidence_root` the files are not checked: a folder guessed wrong would call every file missing.
    """
    problems = [p for table in CHAINED.values() for p in verify_chain(conn, table)] + verify_evidence_recorded(conn)
    return problems + (verify_evidence(conn, evidence_root) if evidence_root is not None else [])
