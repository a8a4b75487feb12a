"""The violation store's writer: one thread writes every event, in order, into the record.

Events go into the hash-chained, append-only record (tables.py, ledger.py). When the database
is unreachable, they wait in a durable local spool (fsync'd) and are replayed in order when it
returns; every write is idempotent by the episode's id, so each event lands exactly once.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from monitor.messages import ViolationEvent
from monitor.ops.logs import kv
from monitor.record import ledger
from monitor.record.db import SchemaOutdated, check_schema, create_engine, shown_url
from monitor.record.ledger import audit
from monitor.record.spool import Spool
from monitor.record.tables import violations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provenance:
    """Which site, host, model, rules and config made a decision (GMP traceability)."""

    site: str
    model_hash: str
    rules_hash: str
    config_hash: str
    host: str = socket.gethostname()


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def write_event(conn: sa.Connection, event: ViolationEvent, prov: Provenance) -> bool:
    """Apply one event to the record; False when it was already there (replays are idempotent).

    opened -> a violations row; closed -> a "closed" audit event with the end time, the peak
    confidence, the confidence trace and the zone of a camera with zones. "updated" events only move the live metrics: the peak
    is kept at closing.
    """
    if event.kind == "opened":
        if conn.execute(sa.select(violations.c.seq).where(violations.c.id == event.episode_id)).first():
            return False
        ledger.append(conn, violations, {
            "id": event.episode_id, "site": prov.site, "host": prov.host, "camera": event.camera, "rule": event.rule,
            "severity": event.severity, "action": event.action, "confidence": float(event.confidence),
            "started_at": _utc(event.started_at), "model_hash": prov.model_hash,
            "rules_hash": event.rules_hash or prov.rules_hash, "config_hash": prov.config_hash,
            "labels": json.dumps(event.labels, sort_keys=True), "recorded_at": datetime.now(timezone.utc)})
        return True
    if event.kind == "closed":
        return audit(conn, f"{event.episode_id}:closed", event.episode_id, "system", "closed",
                     {"status": "open"}, {"status": "closed", "ended_at": _utc(event.ended_at).isoformat(),
                                          "peak_confidence": float(event.confidence),
                                          "trace": [[round(t, 3), round(c, 4)] for t, c in event.trace],
                                          **({"zone": event.zone} if event.zone else {})},
                     "the condition stopped holding (or the daemon stopped)")
    return False


def apply_record(conn: sa.Connection, record: dict, prov: Provenance) -> ViolationEvent | None:
    """Write one spooled record: a violation event, an evidence record, or a pruned evidence file."""
    if record["type"] == "event":
        event = ViolationEvent(**record["event"])
        write_event(conn, event, prov)
        return event
    if record["type"] == "evidence":
        audit(conn, f"{record['violation_id']}:evidence", record["violation_id"], "system", "evidence", {},
              record["evidence"], "evidence clip and snapshot written")
    elif record["type"] == "pruned":
        audit(conn, f"pruned:{record['path']}", None, "system", "evidence_pruned", {}, {"path": record["path"]},
              f"evidence retention of {record['retention_days']:g} days")
    return None


class StoreWriter:
    """One thread owns all writes. `stored(event)` is called after each successful commit.

    While the spool holds anything, new events join it behind the older ones, so the
    database always receives events in the order they happened.
    """

    def __init__(self, url: str, prov: Provenance, spool_path: Path,
                 stored: Callable[[ViolationEvent], None] = lambda e: None, failed: Callable[[], None] = lambda: None,
                 spooled: Callable[[int], None] = lambda depth: None, backoff_max: float = 30.0):
        self.engine = create_engine(url)
        self.prov = prov
        self.spool = Spool(spool_path)
        self.stored = stored
        self.failed = failed
        self.spooled = spooled
        self.backoff_max = backoff_max
        self._queue: queue.Queue[dict | None] = queue.Queue()
        self._schema_ok = False
        self.thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    def put(self, event: ViolationEvent) -> None:
        if event.kind != "updated":
            self._queue.put({"type": "event", "event": asdict(event)})

    def put_evidence(self, violation_id: str, evidence: dict) -> None:
        self._queue.put({"type": "evidence", "violation_id": violation_id, "evidence": evidence})

    def put_pruned(self, path: str, retention_days: float) -> None:
        self._queue.put({"type": "pruned", "path": path, "retention_days": retention_days})

    def pending(self) -> int:
        return self._queue.qsize() + len(self.spool)

    def close(self, timeout: float) -> bool:
        """Finish what is queued; True if everything reached the database within `timeout`.

        Whatever did not is safe in the spool, replayed at the next start.
        """
        self._queue.put(None)
        self.thread.join(timeout)
        done = not self.thread.is_alive() and not len(self.spool)
        self.engine.dispose()
        return done

    def _run(self) -> None:
        delay = min(0.5, self.backoff_max)
        stopping = False
        while True:
            try:
                event = self._queue.get(timeout=delay if len(self.spool) else None)
            except queue.Empty:
                event = "retry"
            if event is None:
                stopping = True
            elif event != "retry":
                self.spool.append(event)  # durable before anything else
            if len(self.spool):
                if self._drain():
                    delay = min(0.5, self.backoff_max)
                else:
                    delay = min(self.backoff_max, delay * 2)
                    if stopping:
                        return
            if stopping and (not len(self.spool) or self._queue.empty()):
                return

    def _drain(self) -> bool:
        """Write the spool to the database in order; False (and everything kept) on failure."""
        records = self.spool.read()
        written = 0
        try:
            if not self._schema_ok:
                check_schema(self.engine)
                self._schema_ok = True
            for record in records:
                with self.engine.begin() as conn:
                    event = apply_record(conn, record, self.prov)
                written += 1
                if event is not None:
                    self.stored(event)
        except (SQLAlchemyError, SchemaOutdated, OSError) as exc:  # retried; the spool keeps the events
            self.failed()
            log.warning(kv(event="store_write_failed", url=shown_url(self.engine.url), spooled=len(records) - written,
                           error=str(exc).splitlines()[0][:200] if isinstance(exc, SchemaOutdated)
                           else type(getattr(exc, "orig", None) or exc).__name__))
            return False
        finally:
            if written:
                self.spool.drop_first(written)
            self.spooled(len(self.spool))
        return True
