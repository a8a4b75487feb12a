#!/usr/bin/env python
"""Chaos run of the real daemon: faults for a bounded time, then the record is checked (not a test; a
short version runs in the test suite, tests/test_end_to_end.py).

    python bench/chaos.py [--seconds 300] [--seed 1] [--site SITE_YAML] [--dir DIR] [--no-postgres]
                          [--gap 2-6] [--hold 3-8] [--faults F1,F2,...]

The demo site (built unless --site names one) runs as `python -m monitor run`, with its two looping
file cameras plus a real RTSP camera (GStreamer, when Debian's server is installed), its record in
PostgreSQL reached through a TCP proxy (or SQLite with --no-postgres, or when PostgreSQL is absent).
One fault at a time, chosen at random (seeded), a random --gap apart, each held for a random --hold:

    camera_stall    the RTSP server is SIGSTOPped for a few seconds, then SIGCONTed
    camera_kill     the RTSP server is SIGKILLed, and restarted a few seconds later
    db_refused      the database refuses connections (the proxy stops listening; SQLite: an exclusive lock)
    db_hung         the database accepts connections and never answers (the proxy hangs; SQLite: a lock)
    rules_broken    a rule file is broken and SIGHUP sent, then fixed and SIGHUP sent again
    sigterm         the daemon is stopped with SIGTERM and started again
    sigkill         the daemon is killed with SIGKILL and started again

Afterwards, with every fault undone and the daemon stopped with SIGTERM: every episode any run
logged as opened must be in the database exactly once, closed exactly once, with its evidence
recorded (or its failure recorded: an episode cut short by SIGKILL has no clip to give), and
`har-monitor violations verify` must pass. It prints the counts; the last line is `chaos: ok` or
`chaos: FAILED (...)`, and the exit status says the same.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the real RTSP server, TCP proxy and database helpers of the tests

from support.databases import PG_HOST, PG_PORT, pg_admin, pg_url  # noqa: E402
from support.rtsp import RtspServer, rtsp_available  # noqa: E402
from support.tcpproxy import TcpProxy  # noqa: E402

OPENED = re.compile(r"event=violation_opened .*?episode=(\S+)")
EVIDENCE_DONE = re.compile(r"event=evidence_(?:written|failed) .*?episode=(\S+)")
START_TIMEOUT = 180.0  # a daemon loads TensorFlow and its models before it says daemon_started
STOP_TIMEOUT = 30.0
SETTLE_SECONDS = 12.0  # at the end, at most this long for the last episodes' post-roll and evidence


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """`python -m monitor run` in a subprocess; every run's stderr kept in its own log file."""

    def __init__(self, site: Path, logs: Path):
        self.site, self.logs = site, logs
        self.runs = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.runs += 1
        path = self.logs / f"run-{self.runs:03d}.log"
        with open(path, "w") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--cameras", str(self.site)],
                                         stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + START_TIMEOUT
        while "event=daemon_started" not in path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start (exit {self.proc.returncode}): see {path}")
            time.sleep(0.2)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9

    def logged_episodes(self) -> list[str]:
        return [m.group(1) for path in sorted(self.logs.glob("run-*.log"))
                for m in OPENED.finditer(path.read_text(errors="replace"))]

    def settle(self, timeout: float) -> None:
        """Wait until this run has opened an episode and every one it opened has its evidence written (or its
        failure logged), at most `timeout` seconds: the last post-rolls end in the running daemon, not at SIGTERM."""
        path = self.logs / f"run-{self.runs:03d}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = path.read_text(errors="replace")
            opened = set(OPENED.findall(text))
            if opened and not opened - set(EVIDENCE_DONE.findall(text)):
                return
            time.sleep(0.2)


class Database:
    """The record's database, and the two ways it fails: refusing connections and hanging."""

    def __init__(self, root: Path, postgres: bool):
        self.proxy: TcpProxy | None = None
        self.lock: sqlite3.Connection | None = None
        user, why = pg_admin() if postgres else (None, "--no-postgres")
        if user is None:
            log(f"record in SQLite ({why})")
            self.path: Path | None = root / "chaos.db"
            self.url = f"sqlite:///{self.path}"
            return
        import psycopg

        self.path = None
        name = f"har_chaos_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.proxy = TcpProxy(PG_HOST, PG_PORT).start()
        self.url = pg_url(user, self.proxy.port, name, "public").render_as_string(hide_password=False)
        log(f"record in PostgreSQL database {name} through a proxy on port {self.proxy.port}")

    def fail(self, how: str) -> None:
        if self.proxy is None:
            assert self.path is not None
            self.lock = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.lock.execute("BEGIN EXCLUSIVE")
        elif how == "refused":
            self.proxy.pause()
        else:
            self.proxy.hang()

    def recover(self) -> None:
        if self.lock is not None:
            self.lock.execute("ROLLBACK")
            self.lock.close()
            self.lock = None
        if self.proxy is not None:
            self.proxy.resume()


def build_site(demo: Path, root: Path, db: Database, rtsp: RtspServer | None) -> Path:
    """The demo site's model, rules and cameras, with the chaos run's record, spool and evidence in `root`."""
    base = demo.resolve().parent
    site = yaml.safe_load(demo.read_text())
    rules = base / site["rules"][0]
    chaos_rules = root / "rules.yaml"
    chaos_rules.write_text(rules.read_text())
    cameras = [{**c, "url": str(base / c["url"])} for c in site["cameras"]]
    if rtsp is not None:
        cameras.append({"id": "dock-rtsp", "url": rtsp.url, "zone": "packing", "stall_seconds": 3,
                        "open_timeout_seconds": 3})
    site.update(model=str(base / site["model"]), rules=[str(chaos_rules)], cameras=cameras,
                storage={"url": db.url, "evidence_dir": str(root / "evidence"), "spool": str(root / "spool")},
                metrics={"host": "127.0.0.1", "port": free_port()},
                reconnect={"initial_seconds": 0.5, "max_seconds": 2})
    path = root / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def inject(fault: str, rng: random.Random, hold_range: tuple[float, float], daemon: Daemon, db: Database,
           rtsp: RtspServer | None, rules: Path) -> None:
    hold = rng.uniform(*hold_range)
    if fault == "camera_stall" and rtsp is not None:
        rtsp.pause()
        time.sleep(hold)
        rtsp.resume()
    elif fault == "camera_kill" and rtsp is not None:
        rtsp.kill()
        time.sleep(hold)
        rtsp.restart()
    elif fault in ("db_refused", "db_hung"):
        db.fail("refused" if fault == "db_refused" else "hung")
        time.sleep(hold)
        db.recover()
    elif fault == "rules_broken":
        good = rules.read_text()
        rules.write_text(good + "\n  - {id: broken, kind: forbidden}\n")  # no action: refused, the old set runs on
        daemon.send(signal.SIGHUP)
        time.sleep(hold)
        rules.write_text(good)
        daemon.send(signal.SIGHUP)
    elif fault in ("sigterm", "sigkill"):
        daemon.stop(signal.SIGTERM if fault == "sigterm" else signal.SIGKILL)
        daemon.start()


def check(site: Path, db: Database, logged: list[str]) -> tuple[dict[str, int], list[str]]:
    """The record against what the runs logged: (counts, problems)."""
    import sqlalchemy as sa

    engine = sa.create_engine(db.url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        stored = Counter(r.id for r in conn.execute(sa.text("SELECT id FROM violations")))
        events = Counter((r.violation_id, r.what) for r in conn.execute(
            sa.text("SELECT violation_id, what FROM audit_events WHERE violation_id IS NOT NULL")))
    engine.dispose()
    counts = {"episodes logged": len(set(logged)), "stored": len(stored),
              "closed": sum(1 for i in stored if events[i, "closed"]),
              "with evidence": sum(1 for i in stored if events[i, "evidence"]),
              "evidence failure recorded": sum(1 for i in stored if not events[i, "evidence"] and events[i, "evidence_failed"])}
    problems = [f"episode {i} logged but not stored" for i in sorted(set(logged) - set(stored))]
    problems += [f"episode {i} stored {n} times" for i, n in stored.items() if n != 1]
    problems += [f"episode {i} closed {events[i, 'closed']} times" for i in stored if events[i, "closed"] != 1]
    problems += [f"episode {i} has no evidence and no recorded evidence failure" for i in stored
                 if not events[i, "evidence"] and not events[i, "evidence_failed"]]
    verify = subprocess.run([sys.executable, "-m", "monitor", "violations", "verify", "--cameras", str(site)],
                            capture_output=True, text=True)
    if verify.returncode != 0:
        problems.append("verify: " + " | ".join((verify.stdout + verify.stderr).strip().splitlines()[-5:]))
    return counts, problems


def seconds_range(text: str) -> tuple[float, float]:
    """`LO-HI` (or one number) in seconds, for --gap and --hold."""
    try:
        lo, hi = (float(v) for v in (text.split("-", 1) if "-" in text else (text, text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO-HI seconds (e.g. 3-8)") from None
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 <= LO <= HI")
    return lo, hi


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300, help="how long faults are injected")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--site", type=Path, help="a demo site.yaml to use (default: build one)")
    ap.add_argument("--dir", type=Path, help="work directory (default: a temp dir)")
    ap.add_argument("--no-postgres", action="store_true", help="keep the record in SQLite")
    ap.add_argument("--gap", type=seconds_range, default=(2.0, 6.0), metavar="LO-HI",
                    help="seconds between faults, drawn at random: episodes open and close between them")
    ap.add_argument("--hold", type=seconds_range, default=(3.0, 8.0), metavar="LO-HI",
                    help="seconds a fault lasts, drawn at random (a stall over the RTSP camera's stall_seconds, 3, "
                         "is noticed as one)")
    ap.add_argument("--faults", help="these faults, in this order, instead of random ones for --seconds "
                                     "(e.g. db_hung,sigkill: the test suite's short run)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = args.dir or Path(tempfile.mkdtemp(prefix="har-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    if args.site is None:
        from monitor.demo.demo import build_demo_site

        log(f"building the demo site in {root} (about a minute)")
        args.site = build_demo_site(root / "demo")
    db = Database(root, postgres=not args.no_postgres)
    rtsp = None
    if rtsp_available() is None:  # a real RTSP camera serving one of the demo's scenes
        rtsp = RtspServer(file=next((args.site.resolve().parent / "clips").glob("*.mp4")), loop=True).start()
    site = build_site(args.site, root, db, rtsp)
    subprocess.run([sys.executable, "-m", "monitor", "db", "upgrade", "--cameras", str(site)], check=True,
                   capture_output=True)
    daemon = Daemon(site, root)
    faults = ["db_refused", "db_hung", "rules_broken", "sigterm", "sigkill"]
    faults += ["camera_stall", "camera_kill"] if rtsp is not None else []
    injected: Counter[str] = Counter()
    try:
        daemon.start()
        planned = args.faults.split(",") if args.faults else None
        end = time.monotonic() + args.seconds
        while (planned if planned is not None else time.monotonic() < end):
            time.sleep(rng.uniform(*args.gap))  # let episodes open and close between faults
            fault = planned.pop(0) if planned is not None else rng.choice(faults)
            if fault not in faults:
                raise SystemExit(f"--faults: unknown or unavailable fault {fault!r} (available: {', '.join(faults)})")
            log(f"fault: {fault}")
            inject(fault, rng, args.hold, daemon, db, rtsp, root / "rules.yaml")
            injected[fault] += 1
        daemon.settle(SETTLE_SECONDS)
        daemon.stop(signal.SIGTERM)
    finally:
        db.recover()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop(signal.SIGTERM)
        if rtsp is not None:
            rtsp.stop()
    counts, problems = check(site, db, daemon.logged_episodes())
    print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(injected.items())))
    print(f"daemon runs: {daemon.runs}")
    print("record: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for problem in problems[:20]:
        print(f"  problem: {problem}")
    print(json.dumps({"faults": injected, "runs": daemon.runs, **counts, "problems": len(problems)}))
    print("chaos: ok" if not problems else f"chaos: FAILED ({len(problems)} problems)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
