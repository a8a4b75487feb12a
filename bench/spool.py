#!/usr/bin/env python
"""Benchmark of the durable spool (not a test): what an append and an acknowledgement cost, and memory in an outage.

    python bench/spool.py [--backlogs 1000,10000,100000] [--outage-events 10000]

1. Append: a record fsync'd before append() returns, microseconds each (the disk's fsync, mostly).
2. Acknowledge, with a backlog of B records waiting (a database outage of that many events): the
   drain reads a batch and acknowledges it, for 1,000 records at the front. Baseline, in the same run:
   the spool this replaced, which rewrote the rest of its file on every acknowledgement.
   ratio = baseline / new, per backlog; the new cost should not grow with B.
3. Memory through an outage: a StoreWriter whose database is unreachable takes --outage-events
   violation events (the spool grows on disk); the process's RSS before and after, and the
   Python heap (tracemalloc) still held by the writer.
The last line printed is `ratio: X.XX` (the acknowledgement ratio at the largest backlog).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support.events

from monitor.record.spool import Spool

BATCH = 64


def record(n: int) -> dict:
    return {"type": "event", "event": {"kind": "opened", "episode_id": f"{n:036d}", "rule": "no-gloves", "camera": "line-2",
                                       "severity": "major", "action": "touch_product", "confidence": 0.9}}


def append_cost(directory: Path, count: int = 500) -> float:
    spool = Spool(directory / "append" / "events.jsonl")
    start = time.perf_counter()
    for n in range(count):
        spool.append(record(n))
    spool.close()
    return (time.perf_counter() - start) / count * 1e6


def backlog(directory: Path, size: int) -> Path:
    """A spool with `size` records waiting, written as the spool writes them (without an fsync each)."""
    path = directory / f"backlog-{size}" / "events.jsonl"
    spool = Spool(path)
    spool.close()
    lines = [json.dumps(record(n), separators=(",", ":")) + "\n" for n in range(size)]
    per_segment = max(1, (4 << 20) // len(lines[0]))
    for number, start in enumerate(range(0, size, per_segment), 1):
        path.with_name(f"events.{number:08d}.jsonl").write_text("".join(lines[start:start + per_segment]))
    return path


def ack_cost(path: Path, records: int = 1000) -> float:
    spool = Spool(path)
    start = time.perf_counter()
    done = 0
    while done < records:
        entries = spool.read(BATCH)
        spool.ack(entries[-1])
        done += len(entries)
    spool.close()
    return (time.perf_counter() - start) / done * 1e6


def old_ack_cost(directory: Path, size: int, records: int = 200) -> float:
    """The replaced spool: one file; after each batch written, the rest rewritten (tmp file, fsync, rename)."""
    path = directory / f"old-{size}.jsonl"
    path.write_text("".join(json.dumps(record(n), separators=(",", ":")) + "\n" for n in range(size)))
    start = time.perf_counter()
    done = 0
    while done < records:
        rest = [json.loads(line) for line in path.read_text().splitlines()][BATCH:]
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in rest)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        done += BATCH
    return (time.perf_counter() - start) / done * 1e6


def outage_memory(directory: Path, events: int) -> tuple[float, float, float, int]:
    from monitor.record.writer import StoreWriter
    from support.events import PROV, T0, pair

    writer = StoreWriter("postgresql://nobody@127.0.0.1:1/none", PROV, directory / "outage" / "events.jsonl",
                         backoff_max=30)
    writer.thread.start()
    for n in range(10):  # warm up the code paths before measuring
        writer.put(pair(f"warm-{n}", T0)[0])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    for n in range(events // 2):
        for e in pair(f"ep-{n:08d}", T0 + n):
            writer.put(e)
    held = tracemalloc.get_traced_memory()[0] / 1024
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    spooled = len(writer.spool)
    writer.close(1)
    return rss_before, rss_after, held, spooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlogs", default="1000,10000,100000")
    parser.add_argument("--outage-events", type=int, default=10000)
    args = parser.parse_args()
    backlogs = [int(b) for b in args.backlogs.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-spool-") as tmp:
        directory = Path(tmp)
        print(f"append (fsync'd): {append_cost(directory):.0f} µs per record")
        ratio = 0.0
        for size in backlogs:
            new, old = ack_cost(backlog(directory, size)), old_ack_cost(directory, size)
            ratio = old / new
            print(f"backlog {size:>7}: acknowledge {new:8.1f} µs per record; replaced spool {old:10.1f} µs; "
                  f"ratio {ratio:.0f}")
        before, after, held, spooled = outage_memory(directory, args.outage_events)
        print(f"outage of {args.outage_events} events: {spooled} spooled on disk; max RSS {before:.0f} -> {after:.0f} MiB; "
              f"Python heap still held {held:.0f} KiB")
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
