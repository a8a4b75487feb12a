"""A durable local spool: records wait here, in order, until the database has them.

An append-only log of JSON lines in segments beside the configured path (`events.jsonl` ->
`events.00000001.jsonl`, `events.00000002.jsonl` ...) and the position of the first record the
database does not have yet (`events.acked`):

- `append` writes one line and fsyncs it before it returns: an acknowledged record survives a
  crash or a power cut. A new segment starts once the last one passes `segment_bytes`.
- `read(n)` returns at most n of the oldest records not yet in the database (memory stays bounded
  whatever the backlog); `ack(entry)` says that everything up to that entry is in the database. An
  ack rewrites a 42-byte position and deletes the segments left behind: its cost does not depend on
  the backlog (the spool this replaces rewrote its whole file on every write).
- The position is not fsync'd: after a power cut it may lag, and a few records are written again,
  which the record ignores (every write is idempotent). Records are never skipped.
- A crash in the middle of an append leaves a torn last line, which was never acknowledged: it is
  cut off at open, before anything is appended after it. A failed append is cut off at once.
- One process per spool (an exclusive lock on `events.lock`); in it, any thread may append while
  another reads and acknowledges.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.errors import UserError
from monitor.fileio import fsync_path
from monitor.ops.logs import kv

log = logging.getLogger(__name__)
SEGMENT_BYTES = 4 << 20
_POSITION = "{:020d} {:020d}\n"  # fixed width: rewritten in place


@dataclass(frozen=True)
class SpoolEntry:
    """One spooled record and where it ends; `record` is None for a line that cannot be read (corrupt)."""

    record: dict[str, Any] | None
    segment: int
    end: int  # byte offset just past its line
    number: int  # records read since the spool was opened, this one included


class Spool:
    def __init__(self, path: Path, segment_bytes: int = SEGMENT_BYTES):
        self.path = Path(path)
        self.segment_bytes = segment_bytes
        self._stem, self._suffix = self.path.stem, self.path.suffix
        self._pattern = re.compile(rf"^{re.escape(self._stem)}\.(\d{{8}}){re.escape(self._suffix)}$")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self._sibling("lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UserError(f"storage.spool: cannot use {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise UserError(f"storage.spool: {self.path} is in use by another har-monitor process "
                            "(each daemon or shard needs its own spool)") from None
        self._append_lock = threading.Lock()  # appends and the tail
        self._read_lock = threading.Lock()  # reads and acks (the drain)
        try:
            self._recover()
        except OSError as exc:
            os.close(self._lock_fd)
            raise UserError(f"storage.spool: cannot use {self.path}: {exc.strerror or exc}") from None

    def _recover(self) -> None:
        """Recover what a previous process left: its position, segments, and a torn last line."""
        self._adopt_old_format()
        segments = self._segments()
        self._acked = self._read_position(segments)
        for number in segments:
            if number < self._acked[0]:  # fully written, its deletion interrupted
                self._segment(number).unlink(missing_ok=True)
        segments = [n for n in segments if n >= self._acked[0]]
        for number in segments:
            self._cut_torn_tail(self._segment(number))
        self._tail = max(segments[-1] if segments else 1, self._acked[0])
        self._fd = self._open_segment(self._tail)
        self._tail_end = _size(self._segment(self._tail))
        self._position_fd = os.open(self._sibling("acked"), os.O_RDWR | os.O_CREAT, 0o600)
        self._appended = self._count_from(self._acked)  # records not yet acknowledged, at open
        self._acked_count = 0  # acknowledged since open (number of the last acked entry)
        self._closed = False

    # -- any thread ----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Records not yet in the database."""
        return self._appended - self._acked_count

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (fsync'd when this returns); OSError if the disk refuses it."""
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        with self._append_lock:
            if self._closed:
                raise OSError("the spool is closed")
            if self._tail_end >= self.segment_bytes:
                with contextlib.suppress(OSError):  # else go on in this segment: the write says if the disk takes it
                    self._next_segment()
            try:
                written = 0
                while written < len(line):
                    written += os.pwrite(self._fd, line[written:], self._tail_end + written)
                os.fdatasync(self._fd)
            except OSError:
                # never leave a partial line for the next record to be glued to (if this fails too, the
                # next append overwrites it: pwrite at the tail; and open cuts it)
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._tail_end)
                raise
            self._tail_end += len(line)
            self._appended += 1

    # -- the drain thread ----------------------------------------------------------------------
    def read(self, limit: int) -> list[SpoolEntry]:
        """The oldest records not yet acknowledged, at most `limit`, in order."""
        with self._read_lock:
            with self._append_lock:
                tail, tail_end = self._tail, self._tail_end
            segment, offset = self._acked
            entries: list[SpoolEntry] = []
            while len(entries) < limit and (segment, offset) < (tail, tail_end):
                path = self._segment(segment)
                end = tail_end if segment == tail else _size(path)
                if offset >= end:
                    segment, offset = segment + 1, 0
                    continue
                with open(path, "rb") as f:
                    f.seek(offset)
                    while len(entries) < limit and offset < end:
                        line = f.readline(end - offset)
                        offset += len(line)
                        entries.append(SpoolEntry(self._parse(line, segment, offset), segment, offset,
                                                  self._acked_count + len(entries) + 1))
            return entries

    def ack(self, entry: SpoolEntry) -> None:
        """Everything up to and including `entry` is in the database."""
        with self._read_lock:
            if self._closed or entry.number <= self._acked_count:
                return
            previous = self._acked[0]
            self._acked = (entry.segment, entry.end)
            self._acked_count = entry.number
            try:  # on disk it may lag (a failed write, a power cut): records are then written again, harmlessly
                os.pwrite(self._position_fd, _POSITION.format(entry.segment, entry.end).encode(), 0)
                for number in range(previous, entry.segment):
                    self._segment(number).unlink(missing_ok=True)
            except OSError as exc:
                log.warning(kv(event="spool_position_not_saved", spool=str(self.path), error=exc.strerror))

    def close(self) -> None:
        with self._read_lock, self._append_lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._fd, self._position_fd, self._lock_fd):
                os.close(fd)

    # -- internals -----------------------------------------------------------------------------
    def _sibling(self, kind: str) -> Path:
        return self.path.with_name(f"{self._stem}.{kind}")

    def _segment(self, number: int) -> Path:
        return self.path.with_name(f"{self._stem}.{number:08d}{self._suffix}")

    def _segments(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.path.parent.iterdir() if (m := self._pattern.match(p.name)))

    def _adopt_old_format(self) -> None:
        """A spool left by an older version (one file at `path`) becomes the oldest segment, replayed from its start."""
        if not self.path.is_file():
            return
        segments = self._segments()
        if segments and segments[0] == 0:
            raise UserError(f"storage.spool: both {self.path} (old format) and {self._segment(0)} exist: "
                            "replay one of them with the version that wrote it")
        os.replace(self.path, self._segment(0))
        self._sibling("acked").unlink(missing_ok=True)
        fsync_path(self.path.parent)
        log.info(kv(event="spool_old_format_adopted", spool=str(self.path)))

    def _read_position(self, segments: list[int]) -> tuple[int, int]:
        first = segments[0] if segments else 1
        try:
            segment, offset = (int(part) for part in self._sibling("acked").read_text().split())
        except (OSError, ValueError):  # none yet, or torn: start from the oldest segment (replays are harmless)
            return first, 0
        if segment < first:  # its segment was deleted after the position was written
            return first, 0
        return segment, min(offset, _size(self._segment(segment)))

    def _cut_torn_tail(self, path: Path) -> None:
        """Cut what follows the last complete line (a crash mid-append)."""
        size = _size(path)
        keep = size
        with open(path, "rb") as f:
            while keep > 0:
                start = max(0, keep - 65536)
                f.seek(start)
                block = f.read(keep - start)
                newline = block.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                keep = start
        if keep < size:
            os.truncate(path, keep)
            log.warning(kv(event="spool_torn_tail_cut", spool=str(path), bytes=size - keep))

    def _count_from(self, position: tuple[int, int]) -> int:
        segment, offset = position
        count = 0
        while segment <= self._tail:
            path = self._segment(segment)
            if path.exists():
                with open(path, "rb") as f:
                    f.seek(offset)
                    count += sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
            segment, offset = segment + 1, 0
        return count

    def _open_segment(self, number: int) -> int:
        """Open (create) a segment for appending; a new file's directory entry is made durable first."""
        path = self._segment(number)
        existed = path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        if not existed:
            try:
                fsync_path(self.path.parent)
            except OSError:
                os.close(fd)
                raise
        return fd

    def _next_segment(self) -> None:
        """Under the append lock: continue in a new segment (if it cannot be created, in the old one)."""
        fd = self._open_segment(self._tail + 1)
        os.close(self._fd)
        self._fd, self._tail, self._tail_end = fd, self._tail + 1, 0

    def _parse(self, line: bytes, segment: int, end: int) -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads(line)
            return record
        except ValueError:  # a complete line that is not JSON: the disk corrupted it
            log.error(kv(event="spool_record_unreadable", segment=str(self._segment(segment)), end=end))
            return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
