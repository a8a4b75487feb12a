"""From QA's reviews back to training: the evidence clips of reviewed violations as a training folder.

The layout is the one `har-monitor train` reads (one subfolder of videos per class): a violation QA
confirmed goes under its action's label, a false positive under the negative class (`other`, or the
folder named); one needing follow-up is left out until it is decided. Beside each clip, a sidecar
`<clip>.json` says where it came from (violation, reviewer, disposition, reason, signing time, the
clip's SHA-256). Each clip is checked against the SHA-256 the record holds: a missing or altered clip
is skipped and reported, never trained on. A rerun writes only what changed (a new review, a clip
moved to another class by a later signature).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from monitor.errors import UserError
from monitor.fileio import atomic_output, atomic_write, sha256_file
from monitor.record.review import ViolationView, query
from monitor.record.tables import rule_sets
from monitor.yamlfile import parse_yaml

LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a class folder's name
SIDECAR = ".json"


@dataclass(frozen=True)
class Skipped:
    violation_id: str
    why: str


@dataclass
class ReviewSet:
    """What `from_reviews` did: clips written (or moved), clips already in place, violations left out."""

    out: Path
    written: list[tuple[str, str]] = field(default_factory=list)  # (violation id, label)
    unchanged: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        per_label: dict[str, int] = {}
        for _, label in self.written + self.unchanged:
            per_label[label] = per_label.get(label, 0) + 1
        return per_label


def from_reviews(conn: sa.Connection, evidence_root: Path, out: Path, since: datetime | None = None,
                 negative_class: str = "other", camera: str | None = None,
                 label_of: Callable[[str], str | None] = lambda action: action) -> ReviewSet:
    """Write the reviewed violations' clips under `out`; `label_of(action)`: the class of a rule's action (None:
    it names no single label, the violation is skipped)."""
    if not LABEL.match(negative_class):
        raise UserError(f"--negative-class: '{negative_class}' is not a folder name (letters, digits, '.', '_', '-')")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out: cannot create {out}: {exc.strerror or exc}") from None
    result = ReviewSet(out)
    kinds = _RuleKinds(conn)
    for view in query(conn, since=since, camera=camera):
        if not view.reviews:
            continue
        signature = view.reviews[-1]  # a later signature supersedes an earlier one
        why = _unusable(view, signature, kinds)
        label = None
        if why is None:
            label = negative_class if signature["meaning"] == "false_positive" else label_of(view.row["action"])
            if label is None or not LABEL.match(label):
                why = f"its action '{view.row['action']}' names no single label of the model"
        if why is not None or label is None:
            result.skipped.append(Skipped(view.row["id"], why or "no label"))
            continue
        _place(view, signature, label, evidence_root, out, result)
    return result


def _unusable(view: ViolationView, signature: dict, kinds: _RuleKinds) -> str | None:
    if signature["meaning"] == "needs_follow_up":
        return "needs follow-up (not decided yet)"
    if not view.evidence.get("clip"):
        return "no evidence clip recorded"
    if signature["meaning"] == "confirmed" and kinds.of(view.row["rules_hash"], view.row["rule"]) == "absence":
        return "an absence rule: its clip shows what did not happen, not an action"
    return None


def _place(view: ViolationView, signature: dict, label: str, root: Path, out: Path, result: ReviewSet) -> None:
    vid = view.row["id"]
    clip = view.evidence["clip"]
    source = Path(clip["path"])
    source = source if source.is_absolute() else root / source
    if not source.is_file():
        result.skipped.append(Skipped(vid, f"clip missing: {source}"))
        return
    digest = sha256_file(source)
    if digest != clip["sha256"]:
        result.skipped.append(Skipped(vid, f"clip altered (its SHA-256 differs from the record's): {source}"))
        return
    name = f"{view.row['camera']}__{vid}{source.suffix.lower() or '.mp4'}"
    target = out / label / name
    sidecar = _sidecar(view, signature, label, digest, source)
    stale = [p for p in out.glob(f"*/{name}*") if p.parent != target.parent]  # a later signature moved it
    if (target.is_file() and sha256_file(target) == digest and not stale
            and _read_json(target.with_name(name + SIDECAR)) == sidecar):
        result.unchanged.append((vid, label))
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(target) as tmp:
            shutil.copyfile(source, tmp)
        atomic_write(target.with_name(name + SIDECAR), json.dumps(sidecar, indent=1, sort_keys=True) + "\n")
        for path in stale:
            path.unlink()
        for folder in {p.parent for p in stale}:
            if not any(folder.iterdir()):  # an empty class folder would stop `train`
                folder.rmdir()
    except OSError as exc:
        raise UserError(f"--out: cannot write {target}: {exc.strerror or exc}") from None
    result.written.append((vid, label))


def _sidecar(view: ViolationView, signature: dict, label: str, digest: str, source: Path) -> dict:
    r = view.row
    return {"violation_id": r["id"], "label": label, "disposition": signature["meaning"],
            "reviewer": signature["user"], "reviewer_name": signature["printed_name"], "reason": signature["reason"],
            "signed_at": signature["signed_at"], "signature": signature["row_hash"], "clip_sha256": digest,
            "source_clip": str(source), "rule": r["rule"], "action": r["action"], "camera": r["camera"],
            "started_at": r["started_at"].isoformat(), "model_hash": r["model_hash"]}


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class _RuleKinds:
    """The kind of a rule in the rule set a violation was judged by (from rule_sets; "" when unknown)."""

    def __init__(self, conn: sa.Connection):
        self.conn = conn
        self._cache: dict[str, dict[str, str]] = {}

    def of(self, rules_hash: str, rule: str) -> str:
        if rules_hash not in self._cache:
            text = self.conn.execute(sa.select(rule_sets.c.text).where(rule_sets.c.hash == rules_hash)).scalar()
            self._cache[rules_hash] = _kinds(text or "")
        return self._cache[rules_hash].get(rule, "")


def _kinds(text: str) -> dict[str, str]:
    kinds = {}
    for part in re.split(r"^# file: .*$", text, flags=re.MULTILINE):
        try:
            data, _ = parse_yaml(part, Path("<stored rule set>"))
        except UserError:  # it was valid when the daemon ran it; unreadable now: the kind is unknown
            continue
        for rule in (data or {}).get("rules", []) if isinstance(data, dict) else []:
            if isinstance(rule, dict) and "id" in rule:
                kinds[str(rule["id"])] = str(rule.get("kind", "forbidden"))
    return kinds
