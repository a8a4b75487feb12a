"""QA's side of the record: users, electronic signatures (reviews), listing, export, verification.

A review is an electronic signature (21 CFR Part 11): the signer re-authenticates with a
password, and the signature records the printed name, UTC time, meaning (the disposition)
and reason, and binds the hash of the violation row it signs. A second review is a new
signature, never an overwrite. Users are kept in the same database; passwords as argon2id.

Every refused attempt to sign (unknown, disabled or locked user, wrong password, a role that
may not sign) is an audit event, and `lockout_after` wrong passwords in a row lock the account
until an admin unlocks it (audited too). A refusal is recorded in the caller's transaction: use
`sign_or_refuse` and commit, then report the refusal it returns.
"""

from __future__ import annotations

import csv
import getpass
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from monitor.errors import UserError
from monitor.fileio import atomic_output
from monitor.record import ledger
from monitor.record.ledger import audit
from monitor.record.tables import audit_events, reviews, users, violations

ROLES = ("viewer", "reviewer", "admin")
DISPOSITIONS = ("confirmed", "false_positive", "needs_follow_up")
LOCKOUT_AFTER = 5  # wrong passwords in a row
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")  # fullmatch: "$" would let a newline end it
EXPORT_COLUMNS = ["id", "site", "host", "camera", "rule", "severity", "action", "started_at", "ended_at", "confidence",
                  "status", "dispositions", "clip", "clip_sha256", "snapshot", "snapshot_sha256", "model_hash",
                  "engine", "rules_hash", "config_hash", "row_hash", "audit_trail"]


class AuthError(Exception):
    """Wrong password, unknown, disabled or locked user, or a role that may not sign: exit 1."""


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


def os_actor() -> str:
    return f"os:{getpass.getuser()}"


def _printable(text: str) -> bool:
    return bool(text.strip()) and text.isprintable()


def add_user(conn: sa.Connection, name: str, role: str, password: str, printed_name: str | None = None,
             actor: str | None = None) -> None:
    """Add a user; `actor` (who did it, in the audit trail) defaults to the OS user running the command."""
    if not USER_NAME.fullmatch(name):
        raise UserError(f"user name {name!r}: 1 to 64 letters, digits, '.', '_', '@' or '-', "
                        "starting with a letter or digit")
    if printed_name is not None and not (_printable(printed_name) and len(printed_name) <= 128):
        raise UserError(f"--printed-name {printed_name!r}: the name signatures show: 1 to 128 printable characters")
    if role not in ROLES:
        raise UserError(f"--role: '{role}' is not one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise UserError("password: at least 8 characters")
    if conn.execute(sa.select(users.c.name).where(users.c.name == name)).first():
        raise UserError(f"user '{name}' exists already")
    shown = printed_name.strip() if printed_name else name
    conn.execute(users.insert().values(name=name, printed_name=shown, role=role, password_hash=_hasher().hash(password),
                                       disabled=False, failed_logins=0, created_at=datetime.now(timezone.utc)))
    audit(conn, f"user_added:{uuid.uuid4()}", None, actor or os_actor(), "user_added", {},
          {"user": name, "role": role, "printed_name": shown}, "users add")


def _user(conn: sa.Connection, name: str) -> sa.Row:
    row = conn.execute(sa.select(users).where(users.c.name == name)).first()
    if row is None:
        raise UserError(f"user '{name}' does not exist")
    return row


def _reason(reason: str) -> str:
    if not _printable(reason):
        raise UserError("--reason: give a reason (it goes into the audit trail)")
    return reason.strip()


def disable_user(conn: sa.Connection, name: str, reason: str, actor: str | None = None) -> None:
    row = _user(conn, name)
    conn.execute(users.update().where(users.c.name == name).values(disabled=True))
    audit(conn, f"user_disabled:{uuid.uuid4()}", None, actor or os_actor(), "user_disabled",
          {"disabled": bool(row.disabled)}, {"user": name, "disabled": True}, _reason(reason))


def unlock_user(conn: sa.Connection, name: str, reason: str, actor: str | None = None) -> None:
    """Unlock an account locked by wrong passwords; `actor`: the admin (default: the OS user running this)."""
    row = _user(conn, name)
    if row.locked_at is None:
        raise UserError(f"user '{name}' is not locked")
    conn.execute(users.update().where(users.c.name == name).values(locked_at=None, failed_logins=0))
    audit(conn, f"user_unlocked:{uuid.uuid4()}", None, actor or os_actor(), "user_unlocked",
          {"locked_at": row.locked_at.isoformat(), "failed_logins": row.failed_logins},
          {"user": name, "locked_at": None, "failed_logins": 0}, _reason(reason))


def _refused(conn: sa.Connection, name: str, known: bool, why: str, purpose: str) -> None:
    """An audit event `<purpose>_refused`. A name that is no user's is not stored: it may be a password typed
    into the wrong field, and a password can look like any user name."""
    shown = name if known else "<unknown>"
    audit(conn, f"{purpose}_refused:{uuid.uuid4()}", None, shown if known else "unknown", f"{purpose}_refused",
          {}, {"user": shown}, why)


def authenticate(conn: sa.Connection, name: str, password: str, lockout_after: int = LOCKOUT_AFTER,
                 purpose: str = "signature") -> sa.Row:
    """The user, if the password is right and the account usable; else AuthError.

    A refusal is recorded on `conn` (an audit event `<purpose>_refused`, e.g. signature_refused or
    login_refused; a wrong password counts towards the lockout): commit it even when this raises.
    """
    from argon2.exceptions import VerificationError

    row = conn.execute(sa.select(users).where(users.c.name == name)).first()
    if row is None or row.disabled:
        _refused(conn, name, row is not None, "unknown user" if row is None else "disabled user", purpose)
        raise AuthError(f"user '{name}' is unknown or disabled")
    if row.locked_at is not None:
        _refused(conn, name, True, "locked user", purpose)
        raise AuthError(f"user '{name}' is locked after {row.failed_logins} wrong passwords: an admin must unlock it "
                        "(har-monitor users unlock)")
    try:
        _hasher().verify(row.password_hash, password)
    except VerificationError:
        conn.execute(users.update().where(users.c.name == name).values(failed_logins=users.c.failed_logins + 1))
        failures = conn.execute(sa.select(users.c.failed_logins).where(users.c.name == name)).scalar_one()
        _refused(conn, name, True, f"wrong password ({failures} in a row)", purpose)
        if failures < lockout_after:
            raise AuthError(f"wrong password ({lockout_after - failures} attempt(s) left before the account is locked)") from None
        conn.execute(users.update().where(users.c.name == name).values(locked_at=datetime.now(timezone.utc)))
        audit(conn, f"user_locked:{uuid.uuid4()}", None, "system", "user_locked", {"locked_at": None},
              {"user": name, "failed_logins": failures}, f"{failures} wrong passwords in a row (lockout after {lockout_after})")
        raise AuthError(f"wrong password: user '{name}' is now locked; an admin must unlock it") from None
    if row.failed_logins:
        conn.execute(users.update().where(users.c.name == name).values(failed_logins=0))
    return row


def sign_review(conn: sa.Connection, violation_id: str, user: str, password: str, disposition: str, reason: str,
                lockout_after: int = LOCKOUT_AFTER) -> dict:
    """Re-authenticate and sign; returns the stored signature. A refusal is recorded on `conn` (see authenticate)."""
    if disposition not in DISPOSITIONS:
        raise UserError(f"--disposition: '{disposition}' is not one of {', '.join(DISPOSITIONS)}")
    if not reason.strip():
        raise UserError("--reason: a signature needs a reason")
    violation = _violation(conn, violation_id)
    signer = authenticate(conn, user, password, lockout_after)
    if signer.role not in ("reviewer", "admin"):
        _refused(conn, signer.name, True, f"a {signer.role} may not sign", "signature")
        raise AuthError(f"user '{user}' is a {signer.role}: only reviewers and admins may sign")
    signature = ledger.append(conn, reviews, {
        "violation_id": violation.id, "user": signer.name, "printed_name": signer.printed_name,
        "signed_at": datetime.now(timezone.utc), "meaning": disposition, "reason": reason.strip(),
        "violation_hash": violation.row_hash})
    audit(conn, f"{violation.id}:review:{signature['seq']}", violation.id, signer.name, "reviewed", {},
          {"disposition": disposition, "signature": signature["row_hash"]}, reason.strip())
    return signature


def authenticate_or_refuse(conn: sa.Connection, name: str, password: str, lockout_after: int = LOCKOUT_AFTER,
                           purpose: str = "login") -> sa.Row | AuthError:
    """`authenticate` (e.g. to sign in), returning a refusal instead of raising it, so that the caller commits it."""
    try:
        return authenticate(conn, name, password, lockout_after, purpose)
    except AuthError as refusal:
        return refusal


def sign_or_refuse(conn: sa.Connection, violation_id: str, user: str, password: str, disposition: str, reason: str,
                   lockout_after: int = LOCKOUT_AFTER) -> dict | AuthError:
    """`sign_review`, returning a refusal instead of raising it, so that the caller commits its audit event."""
    try:
        return sign_review(conn, violation_id, user, password, disposition, reason, lockout_after)
    except AuthError as refusal:
        return refusal


def _violation(conn: sa.Connection, violation_id: str) -> sa.Row:
    """The violation whose id is or starts with `violation_id` (taken literally: '%' and '_' are not wildcards)."""
    prefix = violation_id.strip()
    if not prefix:
        raise UserError("violation id: empty (give the id, or a prefix only one violation has)")
    matches = conn.execute(sa.select(violations).where(violations.c.id.startswith(prefix, autoescape=True)).limit(2)).all()
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
            "model_hash": r["model_hash"], "engine": engine_shown(r), "rules_hash": r["rules_hash"],
            "config_hash": r["config_hash"],
            "row_hash": r["row_hash"],
            "audit_trail": " | ".join(f"{a['at']} {a['actor']} {a['what']}: {a['old']} -> {a['new']} ({a['why']})"
                                      for a in self.trail),
        }


def engine_shown(row: dict) -> str:
    """`openvino int8 <converted model hash>`, `FORCED` when it failed its check; empty on rows before 0005."""
    if not row.get("engine"):
        return ""
    parts = [row["engine"], row.get("precision") or "", row.get("engine_hash") or "",
             "FORCED (failed its accuracy check)" if row.get("engine_forced") else ""]
    return " ".join(p for p in parts if p)


def query(conn: sa.Connection, since: datetime | None = None, camera: str | None = None, rule: str | None = None,
          severity: str | None = None, status: str | None = None, violation_id: str | None = None) -> list[ViolationView]:
    q = sa.select(violations).order_by(violations.c.started_at)
    if violation_id is not None:
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
    evidence: dict[str, Any] = next((json.loads(a["new"]) for a in trail if a["what"] == "evidence"), {})
    return ViolationView(row, closed["ended_at"] if closed else None,
                         closed["peak_confidence"] if closed else row["confidence"], evidence, signed, trail)


def write_csv(views: list[ViolationView], path: Path | None, out) -> None:
    """Write the views as CSV to `out`, or to the file `path`: whole or not at all (UserError if it cannot be)."""
    if path is None:
        _csv(views, out)
        return
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise UserError(f"--out: {path} is {'a directory' if path.is_dir() else 'not a regular file'}")
    if not path.parent.is_dir():
        raise UserError(f"--out: {path.parent} {'is not a directory' if path.parent.exists() else 'does not exist'}")
    try:
        with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8-sig") as handle:  # BOM: spreadsheets read UTF-8
            _csv(views, handle)
    except OSError as exc:
        raise UserError(f"--out: cannot write {path}: {exc.strerror or exc}") from None


def _csv(views: list[ViolationView], handle) -> None:
    writer = csv.DictWriter(handle, EXPORT_COLUMNS)
    writer.writeheader()
    writer.writerows(v.flat() for v in views)
