"""A durable FIFO queue on SQLite: records wait here, in order, until their consumer acknowledges them.

One file holds any number of named channels (e.g. one per notification target). `append` commits
before it returns (rollback journal, `synchronous=FULL`): an acknowledged record survives a crash or a
power cut. `read(limit)` returns the oldest records not yet acknowledged; `ack(entry)` says that
everything up to and including that entry is done, and deletes it. A consumer that dies between
delivering and acknowledging delivers those records again at the next start (at least once).

The interface is the record's spool's (append / read(limit) / ack(entry) / len / close), so either
implementation can back either user. SQLite rather than JSON lines here because one file serves
several channels, each acknowledged on its own, with no segments or position file to manage.

>>> import tempfile, pathlib
>>> q = DurableQueue(pathlib.Path(tempfile.mkdtemp()) / "outbox.db", "mqtt")
>>> q.append({"n": 1}); q.append({"n": 2}); len(q)
2
>>> first = q.read(1)[0]; first.record
{'n': 1}
>>> q.ack(first); [e.record for e in q.read(10)], len(q)
([{'n': 2}], 1)
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class QueueEntry:
    record: dict
    seq: int  # position in the file, rising


class DurableQueue:
    """One channel of a queue file. Thread-safe; one process per file (like the spool)."""

    def __init__(self, path: Path, channel: str = "default"):
        """sqlite3.Error or OSError when the file cannot be used (the caller says which setting names it)."""
        self.path = Path(path)
        self.channel = channel
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            # A rollback journal, no memory map: WAL maps its -shm file, and a storage fault under a map is a
            # SIGBUS that kills the process; this way it is an sqlite3.Error (the record's spool reasons the same)
            self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.execute("PRAGMA mmap_size=0")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit is on the disk when append returns
            self._db.execute("CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "channel TEXT NOT NULL, record TEXT NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS queue_by_channel ON queue (channel, seq)")
            (self._count,) = self._db.execute("SELECT count(*) FROM queue WHERE channel = ?", (channel,)).fetchone()
        except sqlite3.Error:
            self._db.close()
            raise

    def __len__(self) -> int:
        """Records not yet acknowledged."""
        return self._count

    def append(self, record: dict) -> None:
        """Store one record durably (committed when this returns); sqlite3.Error if the disk refuses it."""
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT INTO queue (channel, record) VALUES (?, ?)", (self.channel, text))
            self._count += 1

    def read(self, limit: int) -> list[QueueEntry]:
        """The oldest records not yet acknowledged, at most `limit`, in order."""
        with self._lock:
            rows = self._db.execute("SELECT seq, record FROM queue WHERE channel = ? ORDER BY seq LIMIT ?",
                                    (self.channel, limit)).fetchall()
        return [QueueEntry(json.loads(text), seq) for seq, text in rows]

    def ack(self, entry: QueueEntry) -> None:
        """Everything up to and including `entry` is done."""
        with self._lock:
            done = self._db.execute("DELETE FROM queue WHERE channel = ? AND seq <= ?", (self.channel, entry.seq))
            self._count -= done.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
