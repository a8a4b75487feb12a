#!/usr/bin/env python
"""Soak test of the real daemon (not a test in the suite): does anything grow over an hour?

    python bench/soak.py [--minutes 60] [--cameras 8] [--outage-minutes 5] [--reload-every 10] [--dir DIR]

The demo site (a trained GRU on synthetic clips of falls, waves ...) with --cameras looping file
cameras, evidence clips on, SQLite. The daemon runs as `python -m monitor run` in a subprocess. While
it runs, the rules are reloaded (SIGHUP, a changed then restored rule file) every --reload-every
minutes, and in the middle the database is locked for --outage-minutes (a second connection holds an
exclusive transaction, as a backup tool or a stuck QA query would), so the store spools and replays.

Every minute it prints the daemon's RSS, open file descriptors, threads, and from /metrics the store's
pending events and spool depth, open episodes, frames dropped and violations. At the end it prints the
growth of each after the first 10 minutes (the warm-up: TensorFlow's allocator, evidence rings filling),
against the targets: RSS growth < 5 %, file descriptors and threads flat. The last line is `soak: ok`
or `soak: FAILED (...)`.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

WARMUP_MINUTES = 10
RSS_GROWTH_TARGET = 0.05


@dataclass(frozen=True)
class Sample:
    minute: float
    rss_mb: float
    fds: int
    threads: int
    pending: float
    spool: float
    open_episodes: float
    dropped: float
    violations: float


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_site(root: Path, cameras: int) -> Path:
    """The demo site, with `cameras` looping cameras (copies of the demo's two scenes) and a fixed metrics port."""
    from monitor.demo.demo import build_demo_site

    site_path = root / "site.yaml"
    if not site_path.is_file():
        log(f"building the demo site in {root} (about a minute)")
        build_demo_site(root)
    site = yaml.safe_load(site_path.read_text())
    scenes = site["cameras"][:2]
    site["cameras"] = [{**scenes[i % len(scenes)], "id": f"{scenes[i % len(scenes)]['id']}-{i}"} for i in range(cameras)]
    site["metrics"] = {"host": "127.0.0.1", "port": free_port()}
    path = root / "site-soak.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def scrape(port: int) -> dict[str, float]:
    """Sum of each metric family's samples (over cameras, rules ...)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    except OSError:
        return {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            totals[s.name] = totals.get(s.name, 0.0) + s.value
    return totals


def proc_status(pid: int) -> tuple[float, int, int]:
    """(RSS in MB, open file descriptors, threads) of a live process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    rss_kb = float(fields["VmRSS"].split()[0])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"])


class DatabaseLock:
    """An exclusive transaction on the SQLite file from another connection: the daemon's writes fail."""

    def __init__(self, path: Path):
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def hold(self) -> None:
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if self._conn is not None:
            self._conn.execute("ROLLBACK")
            self._conn.close()
            self._conn = None


def flip_rules(rules_file: Path, original: str) -> None:
    """A changed rule set (one severity raised), then the original back a few seconds later, both by SIGHUP."""
    data = yaml.safe_load(original)
    data["rules"][0]["severity"] = "critical" if data["rules"][0].get("severity") != "critical" else "major"
    rules_file.write_text(yaml.safe_dump(data, sort_keys=False))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--outage-minutes", type=float, default=5)
    ap.add_argument("--reload-every", type=float, default=10, help="minutes between rule reloads")
    ap.add_argument("--interval", type=float, default=60, help="seconds between samples")
    ap.add_argument("--dir", type=Path, help="where to build the site (default: a temp dir)")
    args = ap.parse_args()

    root = args.dir or Path(tempfile.mkdtemp(prefix="har-soak-"))
    site_path = build_site(root, args.cameras)
    site = yaml.safe_load(site_path.read_text())
    port = site["metrics"]["port"]
    rules_file = root / site["rules"][0]
    original_rules = rules_file.read_text()
    db = root / site["storage"]["url"].removeprefix("sqlite:///")
    subprocess.run([sys.executable, "-m", "monitor", "db", "upgrade", "--cameras", str(site_path)], check=True)

    stderr = open(root / "daemon.log", "w")  # noqa: SIM115 (open for the daemon's whole life)
    daemon = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--cameras", str(site_path)],
                              stdout=subprocess.DEVNULL, stderr=stderr)
    log(f"daemon pid {daemon.pid}, {args.cameras} cameras, metrics on :{port}, log {root / 'daemon.log'}")
    lock = DatabaseLock(db)
    outage = (args.minutes / 2, args.minutes / 2 + args.outage_minutes)
    samples: list[Sample] = []
    start = time.monotonic()
    next_reload = args.reload_every
    try:
        while (minute := (time.monotonic() - start) / 60) < args.minutes:
            if daemon.poll() is not None:
                log(f"the daemon exited with {daemon.returncode}")
                break
            if outage[0] <= minute < outage[1] and lock._conn is None:
                log("database outage: locked")
                lock.hold()
            elif minute >= outage[1] and lock._conn is not None:
                log("database outage: over")
                lock.release()
            if minute >= next_reload:
                flip_rules(rules_file, original_rules)
                daemon.send_signal(signal.SIGHUP)
                threading.Timer(5, lambda: (rules_file.write_text(original_rules), daemon.send_signal(signal.SIGHUP))).start()
                next_reload += args.reload_every
            rss, fds, threads = proc_status(daemon.pid)
            m = scrape(port)
            samples.append(Sample(minute, rss, fds, threads, m.get("har_monitor_store_pending", -1),
                                  m.get("har_monitor_store_spool_depth", -1), m.get("har_monitor_open_episodes", -1),
                                  m.get("har_monitor_frames_dropped_total", -1), m.get("har_monitor_violations_total", -1)))
            s = samples[-1]
            log(f"{s.minute:5.1f} min  RSS {s.rss_mb:7.1f} MB  fds {s.fds:4d}  threads {s.threads:3d}  pending {s.pending:4.0f}  "
                f"spool {s.spool:4.0f}  open {s.open_episodes:3.0f}  dropped {s.dropped:6.0f}  violations {s.violations:5.0f}")
            time.sleep(args.interval)
    finally:
        lock.release()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
        stderr.close()
    return report(samples, daemon.returncode, args.minutes)


def report(samples: list[Sample], returncode: int | None, minutes: float) -> int:
    after = [s for s in samples if s.minute >= min(WARMUP_MINUTES, minutes / 3)]
    if len(after) < 2:
        print("soak: FAILED (too few samples after the warm-up)")
        return 1
    first, last = after[0], after[-1]
    growth = (last.rss_mb - first.rss_mb) / first.rss_mb
    fd_range = max(s.fds for s in after) - min(s.fds for s in after)
    thread_range = max(s.threads for s in after) - min(s.threads for s in after)
    print(f"after the warm-up ({first.minute:.0f} -> {last.minute:.0f} min):")
    print(f"  RSS {first.rss_mb:.1f} -> {last.rss_mb:.1f} MB: growth {100 * growth:+.2f} % (target < {100 * RSS_GROWTH_TARGET:.0f} %)")
    print(f"  open file descriptors {min(s.fds for s in after)}..{max(s.fds for s in after)} (range {fd_range})")
    print(f"  threads {min(s.threads for s in after)}..{max(s.threads for s in after)} (range {thread_range})")
    print(f"  store pending at the end {last.pending:.0f}, spool {last.spool:.0f}; daemon exit status {returncode}")
    problems = [what for what, bad in (
        (f"RSS grew {100 * growth:.1f} %", growth >= RSS_GROWTH_TARGET),
        (f"file descriptors moved by {fd_range}", fd_range > 8),
        (f"threads moved by {thread_range}", thread_range > 4),
        (f"daemon exit status {returncode}", returncode not in (0, None))) if bad]
    print("soak: ok" if not problems else f"soak: FAILED ({'; '.join(problems)})")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
