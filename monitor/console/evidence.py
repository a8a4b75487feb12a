"""A violation's evidence files, found by the violation's id (never by a path a browser sends) and
checked against the SHA-256 its audit trail recorded.

The path comes from the record; it must lie inside the evidence directory once resolved (symlinks
included), so neither a tampered record nor a crafted URL can make the console serve another file.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from monitor.fileio import sha256_file

KINDS = {"clip": "video/mp4", "snapshot": "image/jpeg"}


@dataclass(frozen=True)
class EvidenceFile:
    kind: str  # clip | snapshot
    recorded: str  # the path as the audit trail has it
    sha256: str  # as recorded
    path: Path | None  # resolved inside the evidence directory; None when it would lie outside
    state: str  # ok | missing | altered | outside | pruned | unchecked (no evidence directory)

    @property
    def ok(self) -> bool:
        return self.state == "ok"


class EvidenceFiles:
    """Serving a clip (many range requests) re-reads it only when its size, mtime or inode change;
    a page view always hashes it."""

    def __init__(self, root: Path | None):
        self.root = root.resolve() if root is not None else None
        self._checked: dict[tuple, bool] = {}
        self._lock = threading.Lock()

    def of(self, evidence: dict, kind: str, pruned: bool = False, fresh: bool = False) -> EvidenceFile | None:
        """The evidence file of this kind; `fresh`: hash it now whatever was known (a page view)."""
        record = evidence.get(kind)
        if kind not in KINDS or not isinstance(record, dict):
            return None
        recorded, sha = str(record.get("path", "")), str(record.get("sha256", ""))
        if self.root is None:
            return EvidenceFile(kind, recorded, sha, None, "unchecked")
        path = (self.root / recorded).resolve()  # an absolute recorded path stays absolute
        if not path.is_relative_to(self.root):
            return EvidenceFile(kind, recorded, sha, None, "outside")
        if pruned:
            return EvidenceFile(kind, recorded, sha, path, "pruned")
        return EvidenceFile(kind, recorded, sha, path, self._state(path, sha, fresh))

    def _state(self, path: Path, sha: str, fresh: bool) -> str:
        try:
            st = os.stat(path)
        except OSError:
            return "missing"
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino, sha)
        with self._lock:
            known = self._checked.get(key)
        if known is None or fresh:
            known = sha256_file(path) == sha
            with self._lock:
                if len(self._checked) > 10_000:
                    self._checked.clear()
                self._checked[key] = known
        return "ok" if known else "altered"
