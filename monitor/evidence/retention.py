"""Evidence retention: files past their retention are deleted (records never are)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from monitor.ops.lifecycle import Worker
from monitor.ops.logs import kv

log = logging.getLogger(__name__)
SWEEP_SECONDS = 3600.0
_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def prune(directory: Path, retention_days: float, now: float | None = None) -> list[Path]:
    """Delete evidence files whose episode day ended more than `retention_days` ago; return them.

    The day is the `<YYYY-MM-DD>` folder (UTC) the file sits in, not its mtime: a restore from
    backup must not reset the clock, and a file is never deleted before its retention (at most a
    day after). Only files in `<camera>/<date>/` are touched, and the folders they leave empty;
    violation records are not.
    """
    if retention_days <= 0:
        raise ValueError("evidence: retention_days must be > 0")
    cutoff = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc) - timedelta(days=retention_days)
    deleted: list[Path] = []
    directory = Path(directory)
    if not directory.is_dir():
        return deleted
    for camera in sorted(p for p in directory.iterdir() if p.is_dir()):
        pruned = False
        for day in sorted(p for p in camera.iterdir() if p.is_dir() and _DATE_DIR.match(p.name)):
            try:
                end = datetime.strptime(day.name, "%Y-%m-%d").replace(tzinfo=timezone.utc) + timedelta(days=1)
            except ValueError:
                continue  # looks like a date, is not one (2024-13-01): not ours
            if end > cutoff:
                continue
            pruned = True
            for path in sorted(day.iterdir()):
                if path.is_file():
                    path.unlink()
                    deleted.append(path)
            if not any(day.iterdir()):
                day.rmdir()
        if pruned and not any(camera.iterdir()):
            camera.rmdir()
    if deleted:
        log.info(kv(event="evidence_pruned", files=len(deleted), retention_days=float(retention_days)))
    return deleted


class RetentionSweeper(Worker):
    """Prunes `directory` every `every` seconds; each deleted file goes to `on_pruned(relative path, days)`
    (the record's audit trail). A failed sweep (a permission, a full disk) is logged and tried again
    at the next one: it never ends the thread."""

    def __init__(self, directory: Path, retention_days: float, on_pruned: Callable[[str, float], None],
                 every: float = SWEEP_SECONDS):
        super().__init__("evidence-retention")
        self.directory, self.retention_days, self.on_pruned, self.every = directory, retention_days, on_pruned, every

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                for path in prune(self.directory, self.retention_days):
                    self.on_pruned(str(path.relative_to(self.directory)), self.retention_days)
            except (OSError, ValueError, OverflowError) as exc:
                log.error(kv(event="evidence_retention_failed", error=f"{type(exc).__name__}: {exc}"))
            self.stopping.wait(self.every)
