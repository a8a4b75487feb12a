"""Files the record depends on: content hashes, and writes that a crash cannot leave half done."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes a rename in it survive a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path` to write to; on success it becomes `path` whole, or not at all.

    The temp file is hidden and in the same directory (a rename is atomic only within one file
    system); it is fsync'd before the rename and the directory after it, so a power cut leaves either
    the old file or the new one (`durable=False` skips the fsyncs: still never half a file to a reader,
    for files a power cut may roll back, e.g. a live view). On an exception the temp file is removed
    and `path` is untouched. It keeps `path`'s suffix: writers that choose a format by it (Keras,
    OpenCV, NumPy) work unchanged.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp{path.suffix}")
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes | str, durable: bool = True) -> None:
    """Write `path` whole or not at all (see `atomic_output`)."""
    with atomic_output(path, durable) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
