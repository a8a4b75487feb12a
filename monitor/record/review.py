"""QA's side of the record: users, electronic signatures (reviews), listing, export, verification.

A review is an electronic signature (21 CFR Part 11): the signer re-authenticates with a
password, and the signature records the printed name, UTC time, meaning (the disposition)
and reason, and binds the hash of the violation row it signs. A second review is a new
signature, never an overwrite. Users are kept in the same database; passwords as argon2id.
"""

from __future__ import annotations

import contextlib
import csv
import getpass
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from monitor.errors import UserError
from monitor.record import ledger
from monitor.record.ledger import audit
from monitor.record.tables import audit_events, reviews, users, violations

ROLES = ("viewer", "reviewer", "admin")
DISPOSITIONS = ("confirmed", "false_positive", "needs_follow_up")
EXPORT_COLUMNS = ["id", "site", "host", "camera", "rule", "severity", "action", "started_at", "ended_at", "confidence",
                  "status", "dispositions", "clip", "clip_sha256", "snapshot", "snapshot_sha256", "model_hash",
                  "rules_hash", "config_hash", "row_hash", "audit_trail"]


class AuthError(Exception):
    """Wrong password, unknown or disabled user, or a role that may not sign: exit 1."""


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


def _os_actor() -> str:
    return f"os:{getpass.getuser()}"


def add_user(conn: sa.Connection, name: str, role: str, password: str, printed_name: str | None = None,
             actor: str | None = None) -> None:
    """Add a user; `actor` (who did it, in the audit trail) defaults to the OS user running the command."""
    if role not in ROLES:
        raise UserError(f"--role: '{role}' is not one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise UserError("password: at least 8 characters")
    if conn.execute(sa.select(users.c.name).where(users.c.name == name)).first():
        raise UserError(f"user '{name}' exists already")
    conn.execute(users.insert().values(name=name, printed_name=printed_name or name, role=role,
                                       password_hash=_hasher().hash(password), disabled=False,
                                       created_at=datetime.now(timezone.utc)))
    audit(conn, f"user:{name}:added:{uuid.uuid4()}", None, actor or _os_actor(), "user_added", {},
          {"user": name, "role": role, "printed_name": printed_name or name}, "users add")


def disable_user(conn: sa.Connection, name: str, reason: str, actor: str | None = None) -> None:
    row = conn.execute(sa.select(users).where(users.c.name == name)).first()
    if row is None:
        raise UserError(f"user '{name}' does not exist")
    conn.execute(users.update().where(users.c.name == name).values(disabled=True))
    audit(conn, f"user:{name}:disabled:{uuid.uuid4()}", None, actor or _os_actor(), "user_disabled",
          {"disabled": bool(row.disabled)}, {"user": name, "disabled": True}, reason)


def authenticate(conn: sa.Connection, name: str, password: str) -> sa.Row:
    from argon2.exceptions import VerificationError

    row = conn.execute(sa.select(users).where(users.c.name == name)).first()
    if row is None or row.disabled:
        raise AuthError(f"user '{name}' is unknown or disabled")
    try:
        _hasher().verify(row.password_hash, password)
    except VerificationError:
        raise AuthError("wrong password") from None
    return row


def sign_review(conn: sa.Connection, violation_id: str, user: str, password: str, disposition: str, reason: str) -> dict:
    """Re-authenticate and sign; returns the stored signature."""
    if disposition not in DISPOSITIONS:
        raise UserError(f"--disposition: '{disposition}' is not one of {', '.join(DISPOSITIONS)}")
    if not reason.strip():
        raise UserError("--reason: a signature needs a reason")
    signer = authenticate(conn, user, password)
    if signer.role not in ("reviewer", "admin"):
        raise AuthError(f"user '{user}' is a {signer.role}: only reviewers and admins may sign")
    violation = _violation(conn, violation_id)
    signature = ledger.append(conn, reviews, {
        "violation_id": violation.id, "user": signer.name, "printed_name": signer.printed_name,
        "signed_at": datetime.now(timezone.utc), "meaning": disposition, "reason": reason.strip(),
        "violation_hash": violation.row_hash})
    audit(conn, f"{violation.id}:review:{signature['seq']}", violation.id, signer.name, "reviewed", {},
          {"disposition": disposition, "signature": signature["row_hash"]}, reason.strip())
    return signature


def _violation(conn: sa.Connection, violation_id: str) -> sa.Row:
    matches = conn.execute(sa.select(violations).where(violations.c.id.startswith(violation_id))).all()
    if len(matches) != 1:
        raise UserError(f"violation '{violation_id}': {'not found' if not matches else 'ambiguous prefix'}")
    return matches[0]


@dataclass(frozen=True)
class ViolationView:
    """A violation as QA sees it: the immutable row plus what its audit trail and signatures say."""

    row: dict
    ended_at: str | None
    peak_confidence: float
    evidence: dict
    reviews: list[dict]
    trail: list[dict]

    @property
    def status(self) -> str:
        """open (never signed), needs_follow_up (the latest signature says so) or reviewed."""
        if not self.reviews:
            return "open"
        return "needs_follow_up" if self.reviews[-1]["meaning"] == "needs_follow_up" else "reviewed"

    def flat(self) -> dict:
        r = self.row
        clip, snap = self.evidence.get("clip") or {}, self.evidence.get("snapshot") or {}
        return {
            "id": r["id"], "site": r["site"], "host": r["host"], "camera": r["camera"], "rule": r["rule"],
            "severity": r["severity"], "action": r["action"], "started_at": r["started_at"].isoformat(),
            "ended_at": self.ended_at or "", "confidence": round(self.peak_confidence, 4), "status": self.status,
            "dispositions": "; ".join(f"{v['meaning']} by {v['printed_name']} at {v['signed_at']}: {v['reason']}"
                                      for v in self.reviews),
            "clip": clip.get("path", ""), "clip_sha256": clip.get("sha256", ""),
            "snapshot": snap.get("path", ""), "snapshot_sha256": snap.get("sha256", ""),
            "model_hash": r["model_hash"], "rules_hash": r["rules_hash"], "config_hash": r["config_hash"],
            "row_hash": r["row_hash"],
            "audit_trail": " | ".join(f"{a['at']} {a['actor']} {a['what']}: {a['old']} -> {a['new']} ({a['why']})"
                                      for a in self.trail),
        }


def query(conn: sa.Connection, since: datetime | None = None, camera: str | None = None, rule: str | None = None,
          severity: str | None = None, status: str | None = None, violation_id: str | None = None) -> list[ViolationView]:
    q = sa.select(violations).order_by(violations.c.started_at)
    if violation_id:
        q = q.where(violations.c.id == _violation(conn, violation_id).id)
    for column, value in ((violations.c.camera, camera), (violations.c.rule, rule), (violations.c.severity, severity)):
        if value:
            q = q.where(column == value)
    if since:
        q = q.where(violations.c.started_at >= since)
    rows = [dict(r) for r in conn.execute(q).mappings()]
    ids = [r["id"] for r in rows]
    trails: dict[str, list[dict]] = {i: [] for i in ids}
    for a in conn.execute(sa.select(audit_events).where(audit_events.c.violation_id.in_(ids)).order_by(audit_events.c.seq)).mappings():
        trails[a["violation_id"]].append({**a, "at": a["at"].isoformat()})
    signed: dict[str, list[dict]] = {i: [] for i in ids}
    for v in conn.execute(sa.select(reviews).where(reviews.c.violation_id.in_(ids)).order_by(reviews.c.seq)).mappings():
        signed[v["violation_id"]].append({**v, "signed_at": v["signed_at"].isoformat()})
    views = [violation_view(r, trails[r["id"]], signed[r["id"]]) for r in rows]
    return [v for v in views if status is None or v.status == status]


def violation_view(row: dict, trail: list[dict], signed: list[dict]) -> ViolationView:
    """A violation row with its audit events and signatures (each in `seq` order)."""
    closed = next((json.loads(a["new"]) for a in trail if a["what"] == "closed"), None)
    evidence = next((json.loads(a["new"]) for a in trail if a["what"] == "evidence"), {})
    return ViolationView(row, closed["ended_at"] if closed else None,
                         closed["peak_confidence"] if closed else row["confidence"], evidence, signed, trail)


def write_csv(views: list[ViolationView], path: Path | None, out) -> None:
    rows = [v.flat() for v in views]
    with open(path, "w", newline="", encoding="utf-8-sig") if path else contextlib.nullcontext(out) as handle:  # BOM: spreadsheets read UTF-8
        writer = csv.DictWriter(handle, EXPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
