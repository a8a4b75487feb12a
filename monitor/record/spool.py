"""A durable local spool: violation events wait here, in order, while the database is unreachable.

An append-only JSON-lines file, fsync'd after every record so that a crash or power cut
loses nothing that was acknowledged. Replay reads it in order; the file is removed only
after every record in it has been written to the database (writes are idempotent, so a
replay interrupted half-way is simply done again).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


class Spool:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._count = len(self.read())

    def __len__(self) -> int:
        return self._count

    def append(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._count += 1

    def read(self) -> list[dict]:
        """Records in order; a torn last line (crash mid-write) is ignored: it was never acknowledged."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    def drop_first(self, n: int) -> None:
        """Forget the first n records (written to the database), atomically."""
        with self._lock:
            rest = self.read()[n:]
            if not rest:
                self.path.unlink(missing_ok=True)
            else:
                tmp = self.path.with_suffix(".tmp")
                with open(tmp, "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in rest)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            self._count = len(rest)
