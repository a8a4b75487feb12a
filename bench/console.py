#!/usr/bin/env python
"""Benchmark of the QA console (not a test): pages and exports over a large record, measured over HTTP.

    python bench/console.py [--violations 100000] [--requests 60] [--exports 5]

What it measures, in one run:
1. A record in a fresh PostgreSQL database on 127.0.0.1:5432 (dropped at the end): N violations over
   90 days on 16 cameras in 4 zones, 10 rules, with their hash-chained audit events (closed, with a
   confidence trace of 60 points, and evidence), a signature on one in ten, and the rule set's text.
   Rows are hashed by monitor.record.ledger and bulk-inserted (the record verifies).
2. The console, `python -m monitor console --cameras site.yaml` in its own process, signed in as a
   reviewer: the inbox with filters (time range, zone, severity, status; each request a different
   combination and page), a violation's page (each a different violation, evidence files on disk,
   an audit event written per view), and a CSV export of 10,000 rows (one rule over the 90 days).
   Median and p95 of each over --requests (--exports) requests, one at a time.
3. Baseline: the console's stylesheet (no database work, no template) over the same HTTP path.
Targets: inbox and violation page p95 < 300 ms, the export < 5 s. The last line printed is
`ratio: X` = the worst page p95 / 300 ms (<= 1 meets the target).
"""

from __future__ import annotations

import argparse
import hashlib
import http.cookiejar
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
import yaml

from monitor.record.db import create_engine, upgrade
from monitor.record.ledger import GENESIS, content_hash
from monitor.record.review import add_user
from monitor.record.rulesets import record_ruleset
from monitor.record.tables import audit_events, chain_heads, reviews, violations

PG = {"host": "127.0.0.1", "port": 5432}
CAMERAS = [f"cam-{i:02d}" for i in range(16)]
ZONES = {cam: f"zone-{i % 4}" for i, cam in enumerate(CAMERAS)}
RULES = [f"rule-{i}" for i in range(10)]
SEVERITIES = ["critical", "major", "minor", "info"]
PASSWORD = "bench password 1"


def chained(rows: list[dict], table: sa.Table) -> tuple[list[dict], str]:
    """Each row with prev_hash and row_hash, as ledger.append would give them; returns the last hash."""
    prev = GENESIS
    names = [c.name for c in table.columns if c.name not in ("seq", "prev_hash", "row_hash")]
    for row in rows:
        full = {n: row.get(n) for n in names}
        full["prev_hash"] = prev
        full["row_hash"] = prev = content_hash(prev, full)
        row.clear()
        row.update(full)
    return rows, prev


def build_record(url: str, n: int, evidence: Path, rng: random.Random) -> tuple[list[str], str]:
    """The violations (their ids, oldest first) and the rule set's hash."""
    upgrade(url)
    rules_text = "# file: rules.yaml\n" + yaml.safe_dump({"rules": [
        {"id": r, "title": f"Rule {r}", "severity": SEVERITIES[i % 4], "when": {"action": f"act-{i}", "min_confidence": 0.6},
         "labels": {"sop": f"SOP-{i:03d}"}} for i, r in enumerate(RULES)]})
    rules_hash = hashlib.sha256(rules_text.encode()).hexdigest()[:16]
    now = datetime.now(timezone.utc)
    start = now - timedelta(days=90)
    ids, rows, events, signatures = [], [], [], []
    for i in range(n):
        vid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        at = start + timedelta(seconds=90 * 86400 * i / n)
        rule = RULES[i % len(RULES)]
        cam = CAMERAS[rng.randrange(len(CAMERAS))]
        ids.append(vid)
        rows.append({"id": vid, "site": "bench-plant", "host": "edge-1", "camera": cam, "rule": rule,
                     "severity": SEVERITIES[RULES.index(rule) % 4], "action": f"act-{RULES.index(rule)}",
                     "confidence": 0.6 + 0.4 * rng.random(), "started_at": at, "model_hash": "m" * 16,
                     "rules_hash": rules_hash, "config_hash": "c" * 64, "labels": json.dumps({"sop": "SOP-001"}),
                     "recorded_at": at})
        t0 = at.timestamp()
        trace = [[round(t0 + k * 0.5, 3), round(0.6 + 0.3 * rng.random(), 4)] for k in range(60)]
        day = at.strftime("%Y-%m-%d")
        events.append({"event_key": f"{vid}:closed", "violation_id": vid, "at": at + timedelta(seconds=30),
                       "actor": "system", "what": "closed", "old": json.dumps({"status": "open"}),
                       "new": json.dumps({"status": "closed", "ended_at": (at + timedelta(seconds=30)).isoformat(),
                                          "peak_confidence": 0.9, "trace": trace}, sort_keys=True),
                       "why": "the condition stopped holding"})
        events.append({"event_key": f"{vid}:evidence", "violation_id": vid, "at": at + timedelta(seconds=40),
                       "actor": "system", "what": "evidence", "old": "{}",
                       "new": json.dumps({"clip": {"path": f"{cam}/{day}/{vid}.mp4", "sha256": "0" * 64},
                                          "snapshot": {"path": f"{cam}/{day}/{vid}.jpg", "sha256": "0" * 64}},
                                         sort_keys=True), "why": "evidence clip and snapshot written"})
        if i % 10 == 0:
            signatures.append({"violation_id": vid, "user": "rita", "printed_name": "Rita Meyer",
                               "signed_at": at + timedelta(hours=1), "meaning": rng.choice(["confirmed", "false_positive",
                                                                                             "needs_follow_up"]),
                               "reason": "checked on the clip", "violation_hash": ""})
    rows, last_v = chained(rows, violations)
    by_id = {r["id"]: r["row_hash"] for r in rows}
    for s in signatures:
        s["violation_hash"] = by_id[s["violation_id"]]
    events, last_a = chained(events, audit_events)
    signatures, last_r = chained(signatures, reviews)
    engine = create_engine(url)
    with engine.begin() as conn:
        for table, batch in ((violations, rows), (audit_events, events), (reviews, signatures)):
            for k in range(0, len(batch), 5000):
                conn.execute(table.insert(), batch[k:k + 5000])
        for name, table, last in (("violations", violations, last_v), ("audit_events", audit_events, last_a),
                                  ("reviews", reviews, last_r)):
            seq = conn.execute(sa.select(sa.func.max(table.c.seq))).scalar_one()
            conn.execute(chain_heads.insert().values(chain=name, seq=seq, row_hash=last))
        record_ruleset(conn, rules_hash, rules_text)
        add_user(conn, "rita", "reviewer", PASSWORD, "Rita Meyer", actor="bench")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")  # as autovacuum does to a table that stops growing: statistics, hint bits
    engine.dispose()
    return ids, rules_hash


def write_evidence(evidence: Path, url: str, ids: list[str]) -> None:
    """Real clip and snapshot files for the violations whose pages are measured, with their true hashes
    (the page hashes them on every view): the evidence events are re-pointed by an UPDATE, so the audit
    chain does not verify afterwards, which this benchmark does not need."""
    import numpy as np

    from monitor.evidence.media import encode_jpeg, write_video
    from monitor.fileio import sha256_file

    frames = [(k / 5, np.full((270, 480, 3), 40 + 4 * k, np.uint8)) for k in range(50)]
    clip, snap = evidence / "sample.mp4", evidence / "sample.jpg"
    evidence.mkdir(parents=True, exist_ok=True)
    write_video(clip, [rgb for _, rgb in frames], 5.0, times=[t for t, _ in frames])
    snap.write_bytes(encode_jpeg(frames[25][1]))
    record = json.dumps({"clip": {"path": "sample.mp4", "sha256": sha256_file(clip)},
                         "snapshot": {"path": "sample.jpg", "sha256": sha256_file(snap)}}, sort_keys=True)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(audit_events.update().where(audit_events.c.violation_id.in_(ids),
                                                 audit_events.c.what == "evidence").values(new=record))
    engine.dispose()


class Client:
    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[float, bytes]:
        started = time.perf_counter()
        with self.opener.open(self.base + path, timeout=120) as response:
            body = response.read()
        return time.perf_counter() - started, body

    def sign_in(self) -> None:
        _, page = self.get("/login")
        csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
        data = urllib.parse.urlencode({"csrf": csrf, "user": "rita", "password": PASSWORD, "next": "/"}).encode()
        with self.opener.open(self.base + "/login", data=data, timeout=30) as response:
            assert b"Violations" in response.read(), "signed in"


def summary(name: str, seconds: list[float]) -> float:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"{name:<34} median {statistics.median(ordered) * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms   "
          f"(n={len(ordered)})", flush=True)
    return p95


def main() -> None:
    import psycopg

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--violations", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--exports", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    dbname = f"har_monitor_bench_{uuid.uuid4().hex[:10]}"
    user = next(u for u in ("postgres", "root") if _can_connect(psycopg, u))
    with psycopg.connect(**PG, user=user, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    url = f"postgresql://{user}@{PG['host']}:{PG['port']}/{dbname}"
    work = Path(tempfile.mkdtemp(prefix="har-bench-console-"))
    proc = None
    try:
        started = time.perf_counter()
        ids, _ = build_record(url, args.violations, work / "evidence", rng)
        measured = rng.sample(ids, args.requests)
        write_evidence(work / "evidence", url, measured)
        print(f"record: {args.violations} violations, {2 * args.violations} audit events, "
              f"{args.violations // 10} signatures in {time.perf_counter() - started:.0f} s", flush=True)
        site = work / "site.yaml"
        site.write_text(yaml.safe_dump({"site": "bench-plant", "model": str(work / "models" / "none"),
                                        "storage": {"url": url, "evidence_dir": str(work / "evidence")},
                                        "metrics": {"port": 0},
                                        "cameras": [{"id": c, "url": f"{c}.mp4", "zone": ZONES[c]} for c in CAMERAS]}))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "--log-level", "warning", "console", "--cameras",
                                 str(site), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Client(f"http://127.0.0.1:{port}")
        _wait_up(client)
        client.sign_in()
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
        baseline = summary("stylesheet (baseline)", [client.get("/static/console.css")[0] for _ in range(args.requests)])
        filters = [{"since": rng.choice(["7d", "30d", "90d"]), "zone": rng.choice(list(set(ZONES.values()))),
                    "severity": rng.choice([*SEVERITIES, ""]), "status": rng.choice(["", "open", "reviewed"]),
                    "page": rng.choice([1, 1, 2, 5])} for _ in range(args.requests)]
        inbox = summary("inbox with filters", [client.get("/?" + urllib.parse.urlencode(f))[0] for f in filters])
        page = summary("violation page", [client.get(f"/violations/{vid}")[0] for vid in measured])
        exports = []
        for _ in range(args.exports):
            seconds, body = client.get(f"/export.csv?rule={RULES[3]}")
            exports.append(seconds)
        rows = body.count(b"\n") - 1 - body.count(b"\n\"")  # CSV lines (no field here spans lines)
        export = summary(f"CSV export ({rows} rows)", exports)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"targets: pages p95 < 300 ms ({'met' if max(inbox, page) < 0.3 else 'MISSED'}), "
              f"export < 5 s ({'met' if export < 5 else 'MISSED'}); pages / baseline p95: "
              f"{max(inbox, page) / baseline:.1f}x")
        print(f"ratio: {max(inbox, page) / 0.3:.2f}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        with psycopg.connect(**PG, user=user, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def _can_connect(psycopg, user: str) -> bool:
    try:
        psycopg.connect(**PG, user=user, dbname="postgres", connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


def _wait_up(client: Client) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            client.get("/login")
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the console did not start")


if __name__ == "__main__":
    main()
