"""The violation store's writer: every record reaches the database in order, exactly once, whatever the database does.

- `put`, `put_evidence`, `put_evidence_failed`, `put_pruned`, `put_ruleset` and `close_orphans` append the record to
  the durable spool (fsync'd) and return: acknowledged means on disk. They never touch the database.
- One drain thread writes the spool to the database in order, a batch per transaction, and then
  acknowledges the batch in the spool. After a failure it waits on its own backoff, whatever arrives
  meanwhile; every database call is bounded (db.create_engine), so a database that hangs holds it
  for seconds, not forever. Every write is idempotent (by episode id or audit key): a record written
  twice (a crash between the commit and the acknowledgement) lands once.
- If the spool itself refuses a record (a full or read-only disk), the record waits in memory
  (at most MAX_UNSPOOLED), the fault is logged and counted, and the drain thread retries the spool,
  or writes such records straight to the database once the spool is empty.
- The drain thread also touches a heartbeat file (when this run was last known alive: the next run
  closes the episodes this one left open at that time) and writes the anchors (anchor.py).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from monitor.backoff import Backoff
from monitor.messages import ViolationEvent
from monitor.ops.logs import kv, redact
from monitor.record import ledger
from monitor.record.anchor import Anchor, AnchorLog
from monitor.record.db import SchemaOutdated, check_schema, create_engine, describe_error, shown_url
from monitor.record.ledger import audit
from monitor.record.rulesets import record_ruleset
from monitor.record.shadow import record_run, write_shadow_event
from monitor.record.spool import Spool
from monitor.record.tables import audit_events, violations

log = logging.getLogger(__name__)
WRITER_CALL_SECONDS = 10.0  # one statement of the drain; a batch of records is a few milliseconds
BATCH = 64  # records per transaction
MAX_UNSPOOLED = 10_000  # records kept in memory while the spool's disk refuses them
HEARTBEAT_SECONDS = 10.0
ORPHAN_WHY = "the daemon stopped without closing it (a crash or a kill); closed when it started again"
EVIDENCE_LOST = "the daemon stopped before the evidence was written"


@dataclass(frozen=True)
class Provenance:
    """Which site, host, model, rules and config made a decision (GMP traceability)."""

    site: str
    model_hash: str
    rules_hash: str
    config_hash: str
    host: str = socket.gethostname()
    engine: str | None = None  # what ran the backbone: tensorflow | openvino (None: not told, rows before 0005)
    precision: str | None = None  # fp32 | bf16 | int8
    engine_forced: bool | None = None  # a conversion that failed its accuracy check, used because forced
    engine_hash: str | None = None  # the converted model's identity (None for TensorFlow: the bundle's backbone)


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def write_event(conn: sa.Connection, event: ViolationEvent, prov: Provenance, evidence: str | None = None) -> bool:
    """Apply one event to the record; False when it was already there (replays are idempotent).

    opened -> a violations row; closed -> a "closed" audit event with the end time, the peak
    confidence, the confidence trace, the zone of a camera with zones, and `evidence: expected` when
    evidence recording was on (`verify` then wants an evidence record for it). "updated" events only
    move the live metrics: the peak is kept at closing.
    """
    if event.kind == "opened":
        if conn.execute(sa.select(violations.c.seq).where(violations.c.id == event.episode_id)).first():
            return False
        ledger.append(conn, violations, {
            "id": event.episode_id, "site": prov.site, "host": prov.host, "camera": event.camera, "rule": event.rule,
            "severity": event.severity, "action": event.action, "confidence": float(event.confidence),
            "started_at": _utc(event.started_at), "model_hash": prov.model_hash,
            "rules_hash": event.rules_hash or prov.rules_hash, "config_hash": prov.config_hash,
            "labels": json.dumps(event.labels, sort_keys=True), "recorded_at": datetime.now(timezone.utc),
            "engine": prov.engine, "precision": prov.precision, "engine_forced": prov.engine_forced,
            "engine_hash": prov.engine_hash})
        return True
    if event.kind == "closed":
        ended_at = _utc(event.ended_at)
        assert ended_at is not None  # a closed event has its end
        new = {"status": "closed", "ended_at": ended_at.isoformat(), "peak_confidence": float(event.confidence),
               "trace": [[round(t, 3), round(c, 4)] for t, c in event.trace], **({"zone": event.zone} if event.zone else {}),
               **({"evidence": evidence} if evidence else {})}
        return audit(conn, f"{event.episode_id}:closed", event.episode_id, "system", "closed", {"status": "open"}, new,
                     "the condition stopped holding (or the daemon stopped)")
    return False


def close_orphans(conn: sa.Connection, site: str, host: str, cameras: list[str] | None, before: datetime,
                  last_alive: datetime | None, evidence_expected: bool = False) -> int:
    """Close the episodes of `site` and `host` (and `cameras`) that started before `before` and are still open.

    They were left by a run that stopped without closing them. Their end is `last_alive`, the last
    heartbeat of that run: they cannot have been seen after it, and the time of the restart would
    add the whole downtime (days, maybe) to them. Without a heartbeat, the restart time, and the
    audit event says which. An episode closed with evidence expected and none recorded gets an
    evidence_failed event: that run can no longer write it. So does an orphan without evidence when
    evidence is recorded (`evidence_expected`): its clip was due after the episode began, from that run.
    """
    mine = [violations.c.site == site, violations.c.host == host, violations.c.started_at < before]
    if cameras is not None:
        mine.append(violations.c.camera.in_(cameras))
    other = audit_events.alias("other")
    closing = sa.select(other.c.seq).where(other.c.violation_id == violations.c.id, other.c.what == "closed")
    evidence = sa.select(other.c.seq).where(other.c.violation_id == violations.c.id,
                                            other.c.what.in_(("evidence", "evidence_failed")))
    ended_at = last_alive or before
    basis = ("the last heartbeat of the run that left it open" if last_alive
             else "the restart: no heartbeat of the run that left it open was found")
    orphans = conn.execute(sa.select(violations, evidence.exists().label("has_evidence"))
                           .where(*mine, ~closing.exists()).order_by(violations.c.seq)).all()
    for row in orphans:
        new = {"status": "closed", "ended_at": max(ended_at, row.started_at).isoformat(),
               "peak_confidence": row.confidence, "ended_at_is": basis}
        audit(conn, f"{row.id}:closed", row.id, "system", "closed", {"status": "open"},
              new | ({} if row.has_evidence else {"evidence": f"none: {EVIDENCE_LOST}"}), ORPHAN_WHY)
        if evidence_expected and not row.has_evidence:
            _evidence_lost(conn, row.id)
    closed = sa.select(audit_events.c.violation_id, audit_events.c.new).join(
        violations, violations.c.id == audit_events.c.violation_id).where(
        *mine, audit_events.c.what == "closed", ~evidence.exists())
    for violation_id, new in conn.execute(closed).all():
        if json.loads(new).get("evidence") == "expected":
            _evidence_lost(conn, violation_id)
    return len(orphans)


def _evidence_lost(conn: sa.Connection, violation_id: str) -> None:
    audit(conn, f"{violation_id}:evidence", violation_id, "system", "evidence_failed", {},
          {"error": EVIDENCE_LOST}, "recorded when the daemon started again")


def apply_record(conn: sa.Connection, record: dict, prov: Provenance) -> ViolationEvent | None:
    """Write one spooled record; the violation event it carried, if any."""
    kind = record["type"]
    if kind == "event":
        event = ViolationEvent(**record["event"])
        write_event(conn, event, prov, record.get("evidence"))
        return event
    if kind == "evidence":
        audit(conn, f"{record['violation_id']}:evidence", record["violation_id"], "system", "evidence", {},
              record["evidence"], "evidence clip and snapshot written")
    elif kind == "evidence_failed":  # the same key: an episode has one evidence outcome
        audit(conn, f"{record['violation_id']}:evidence", record["violation_id"], "system", "evidence_failed", {},
              {"error": record["error"]}, "the evidence could not be written")
    elif kind == "pruned":
        audit(conn, f"pruned:{record['path']}", None, "system", "evidence_pruned", {}, {"path": record["path"]},
              f"evidence retention of {record['retention_days']:g} days")
    elif kind == "shadow":  # a shadow model's would-be violation: its own table, never the chain
        write_shadow_event(conn, ViolationEvent(**record["event"]), prov.site, prov.host, record["model_hash"],
                           prov.model_hash)
    elif kind == "model_run":
        record_run(conn, record["run"])
    elif kind == "ruleset":
        record_ruleset(conn, record["hash"], record["text"])
    elif kind == "close_orphans":
        count = close_orphans(conn, record["site"], record["host"], record["cameras"],
                              datetime.fromisoformat(record["before"]),
                              datetime.fromisoformat(record["last_alive"]) if record["last_alive"] else None,
                              record.get("evidence_expected", False))  # absent from spools of older versions
        if count:
            log.warning(kv(event="orphaned_episodes_closed", count=count, ended_at=record["last_alive"] or record["before"]))
    return None


class StoreWriter:
    """The spool in front, one drain thread behind. `stored(event)` is called after each event's commit.

    `anchors`: sign a checkpoint of the chains every `anchors.every` seconds and when stopping;
    `anchored(anchor)` after each, `anchor_failed()` when one could not be written or shipped.
    `evidence_expected`: evidence recording is on, so every closed episode should get an evidence
    record (or a recorded failure); `verify` checks it.
    """

    def __init__(self, url: str, prov: Provenance, spool_path: Path,
                 stored: Callable[[ViolationEvent], None] = lambda e: None, failed: Callable[[], None] = lambda: None,
                 spooled: Callable[[int], None] = lambda depth: None, backoff_max: float = 30.0,
                 anchors: AnchorLog | None = None, anchored: Callable[[Anchor], None] = lambda a: None,
                 anchor_failed: Callable[[], None] = lambda: None, evidence_expected: bool = False,
                 call_seconds: float = WRITER_CALL_SECONDS):
        self.engine = create_engine(url, call_seconds)
        self.prov = prov
        self.spool = Spool(spool_path)
        self.stored, self.failed, self.spooled = stored, failed, spooled
        self.anchors, self.anchored, self.anchor_failed = anchors, anchored, anchor_failed
        self.evidence_expected = evidence_expected
        self._retry = Backoff(min(0.5, backoff_max), backoff_max)
        self.heartbeat = spool_path.with_name(f"{spool_path.stem}.alive")
        self.previous_run_alive = _modified(self.heartbeat)  # read before this run touches it
        self._last_beat = float("-inf")
        self._anchor_due = 0.0  # at the first successful drain
        self._unspooled: deque[dict] = deque()
        self._put_lock = threading.Lock()  # keeps the spool and the unspooled records in put order
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._schema_ok = False
        self.thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    # -- producers (any thread): durable when they return, never wait on the database -----------
    def put(self, event: ViolationEvent) -> None:
        if event.kind == "updated":
            return
        record = {"type": "event", "event": asdict(event)}
        if event.kind == "closed" and self.evidence_expected:
            record["evidence"] = "expected"
        self._put(record)

    def put_shadow(self, event: ViolationEvent, model_hash: str) -> None:
        """A shadow model's episode event (durable like every record; written to shadow_events only)."""
        if event.kind != "updated":
            self._put({"type": "shadow", "event": asdict(event), "model_hash": model_hash})

    def put_run(self, model_path: str, shadow_hash: str | None = None, shadow_path: str | None = None) -> None:
        """At start: the model (and shadow model) this run uses; a change from the previous run is audited."""
        self._put({"type": "model_run", "run": {
            "run_id": str(uuid.uuid4()), "site": self.prov.site, "host": self.prov.host,
            "started_at": datetime.now(timezone.utc).isoformat(), "model_hash": self.prov.model_hash,
            "model_path": model_path, "shadow_hash": shadow_hash, "shadow_path": shadow_path}})

    def put_ruleset(self, hash: str, text: str) -> None:
        """At start and at each reload: the text of the rule set that violations will name by its hash."""
        self._put({"type": "ruleset", "hash": hash, "text": text})

    def put_evidence(self, violation_id: str, evidence: dict) -> None:
        self._put({"type": "evidence", "violation_id": violation_id, "evidence": evidence})

    def put_evidence_failed(self, violation_id: str, error: str) -> None:
        log.warning(kv(event="evidence_failed", episode=violation_id, error=error[:300]))
        self._put({"type": "evidence_failed", "violation_id": violation_id, "error": error[:300]})

    def put_pruned(self, path: str, retention_days: float) -> None:
        self._put({"type": "pruned", "path": path, "retention_days": retention_days})

    def close_orphans(self, cameras: list[str] | None = None) -> None:
        """At start, before any event: close the episodes a previous run of this site and host left open.

        The request is spooled behind whatever that run left in the spool, so it is applied once all
        of it is in the database (whenever the database is reachable), and before this run's events.
        `cameras`: only theirs (a shard); None: every camera of this site and host.
        """
        last_alive = self.previous_run_alive
        self._put({"type": "close_orphans", "site": self.prov.site, "host": self.prov.host, "cameras": cameras,
                   "before": datetime.now(timezone.utc).isoformat(),
                   "last_alive": last_alive.isoformat() if last_alive else None,
                   "evidence_expected": self.evidence_expected})

    def pending(self) -> int:
        return len(self.spool) + len(self._unspooled)

    def close(self, timeout: float) -> bool:
        """Write what is pending; True if all of it reached the database within `timeout`.

        Whatever did not is safe in the spool and written at the next start.
        """
        if self.thread.ident is None:
            self.thread.start()
        self._closing.set()
        self._wake.set()
        self.thread.join(timeout)
        return not self.thread.is_alive() and not self.pending()

    def _put(self, record: dict) -> None:
        with self._put_lock:
            if not self._unspooled:
                try:
                    self.spool.append(record)
                    self._wake.set()
                    self.spooled(self.pending())
                    return
                except OSError as exc:
                    self.failed()
                    log.error(kv(event="spool_write_failed", spool=str(self.spool.path), error=exc.strerror or str(exc),
                                 kept_in_memory=f"up to {MAX_UNSPOOLED}"))
            if len(self._unspooled) >= MAX_UNSPOOLED:
                self.failed()
                log.error(kv(event="record_dropped", type=record["type"], reason="the spool's disk refuses writes "
                             f"and {MAX_UNSPOOLED} records wait in memory already"))
                return
            self._unspooled.append(record)
        self._wake.set()

    # -- the drain thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                written = self._drain()
                self._beat()
                if written:
                    self._anchor(final=self._closing.is_set())
                if self._closing.is_set():
                    return
                if written:
                    self._retry.reset()
                    self._wake.wait(self._idle_seconds())
                else:  # its own backoff: new records do not cut it short
                    self._closing.wait(self._retry.next())
        finally:
            self._beat(force=True)
            self.spool.close()
            self.engine.dispose()

    def _drain(self) -> bool:
        """Write the spool (then any record it refused) to the database, in order; False on a failure."""
        try:
            if not self._schema_ok:
                check_schema(self.engine)
                self._schema_ok = True
            while True:
                if entries := self.spool.read(BATCH):
                    self._write([e.record for e in entries if e.record is not None])
                    self.spool.ack(entries[-1])
                elif not self._unspooled:
                    break
                elif not self._respool():  # the spool's disk still refuses them: straight to the database
                    with self._put_lock:
                        records = list(itertools.islice(self._unspooled, BATCH))
                    self._write(records)
                    with self._put_lock:
                        for _ in records:
                            self._unspooled.popleft()
                self.spooled(self.pending())
        except Exception as exc:  # retried on the backoff; the records stay where they are
            self.failed()
            unexpected = not isinstance(exc, (SQLAlchemyError, SchemaOutdated, OSError))
            (log.exception if unexpected else log.warning)(kv(
                event="store_write_failed", url=shown_url(self.engine.url), spooled=self.pending(),
                error=type(getattr(exc, "orig", None) or exc).__name__, detail=redact(describe_error(exc))))
            self.spooled(self.pending())
            return False
        return True

    def _write(self, records: list[dict]) -> None:
        events = []
        with self.engine.begin() as conn:
            for record in records:
                event = apply_record(conn, record, self.prov)
                if event is not None:
                    events.append(event)
        for event in events:
            self.stored(event)

    def _respool(self) -> bool:
        """Move the records the spool refused into it, in order; True once none is left."""
        with self._put_lock:
            while self._unspooled:
                try:
                    self.spool.append(self._unspooled[0])
                except OSError:
                    return False
                self._unspooled.popleft()
        log.info(kv(event="spool_writable_again", spool=str(self.spool.path)))
        return True

    def _idle_seconds(self) -> float:
        due = self._anchor_due - time.monotonic() if self.anchors else HEARTBEAT_SECONDS
        return max(0.05, min(HEARTBEAT_SECONDS, due))

    def _beat(self, force: bool = False) -> None:
        """Touch the heartbeat file, every HEARTBEAT_SECONDS at most."""
        now = time.monotonic()
        if force or now - self._last_beat >= HEARTBEAT_SECONDS / 2:
            self._last_beat = now
            try:
                self.heartbeat.touch()
            except OSError as exc:
                log.debug(kv(event="heartbeat_not_written", path=str(self.heartbeat), error=exc.strerror))

    def _anchor(self, final: bool) -> None:
        if self.anchors is None or (not final and time.monotonic() < self._anchor_due):
            return
        self._anchor_due = time.monotonic() + self.anchors.every
        try:
            with self.engine.connect() as conn:
                anchor = self.anchors.write(conn, f"daemon@{self.prov.host}")
        except (SQLAlchemyError, OSError) as exc:
            self.anchor_failed()
            log.warning(kv(event="anchor_failed", log=str(self.anchors.path), error=redact(describe_error(exc))))
            return
        self.anchored(anchor)
        if not anchor.shipped:
            self.anchor_failed()


def _modified(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime, timezone.utc)
    except OSError:
        return None
