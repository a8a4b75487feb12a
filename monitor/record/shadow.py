"""Shadow mode's side of the record: a candidate model's would-be violations, the model(s) each run used,
and the report of where the live and the shadow model disagree.

Shadow events are not the regulated record: no hash chain, never reviewed, never notified. They are
written through the same spool as the violations (a database outage loses none of them), idempotently:
an episode's row is inserted when it opens and completed when it closes. Each daemon start records
the model and shadow model it runs (`model_runs`); a start with another model or shadow model than the
site's previous run is a `model_changed` audit event (promotion is a config change, and it is recorded).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

import sqlalchemy as sa

from monitor.messages import ViolationEvent
from monitor.ops.logs import kv
from monitor.record.ledger import audit
from monitor.record.tables import audit_events, model_runs, reviews, shadow_events, violations

log = logging.getLogger(__name__)


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def write_shadow_event(conn: sa.Connection, event: ViolationEvent, site: str, host: str, model_hash: str,
                       live_model_hash: str) -> bool:
    """opened -> a row; closed -> its end and peak confidence. False when already applied (a replay)."""
    if event.kind == "opened":
        if conn.execute(sa.select(shadow_events.c.seq).where(shadow_events.c.id == event.episode_id)).first():
            return False
        conn.execute(shadow_events.insert().values(
            id=event.episode_id, site=site, host=host, camera=event.camera, zone=event.zone, rule=event.rule,
            severity=event.severity, action=event.action, confidence=float(event.confidence),
            started_at=_utc(event.started_at), ended_at=None, model_hash=model_hash, live_model_hash=live_model_hash,
            rules_hash=event.rules_hash, recorded_at=datetime.now(timezone.utc)))
        return True
    if event.kind == "closed":
        done = conn.execute(shadow_events.update().where(shadow_events.c.id == event.episode_id,
                                                         shadow_events.c.ended_at.is_(None))
                            .values(ended_at=_utc(event.ended_at), confidence=float(event.confidence)))
        return bool(done.rowcount)
    return False


def record_run(conn: sa.Connection, run: dict) -> bool:
    """Record a daemon start's models; a `model_changed` audit event when they differ from the site's previous run.

    The site's first recorded run is not a change (there is nothing to compare with). True when this
    run was recorded now (False: a replay).
    """
    if conn.execute(sa.select(model_runs.c.seq).where(model_runs.c.run_id == run["run_id"])).first():
        return False
    last = conn.execute(sa.select(model_runs).where(model_runs.c.site == run["site"])
                        .order_by(model_runs.c.seq.desc()).limit(1)).first()
    started = datetime.fromisoformat(run["started_at"])
    conn.execute(model_runs.insert().values(**{**run, "started_at": started}))
    conn.execute(shadow_events.update().where(  # left open by a run that stopped without closing them
        shadow_events.c.site == run["site"], shadow_events.c.host == run["host"], shadow_events.c.ended_at.is_(None),
        shadow_events.c.started_at < started).values(ended_at=started))
    if last is None or (last.model_hash, last.shadow_hash) == (run["model_hash"], run["shadow_hash"]):
        return True
    keys = ("model_hash", "model_path", "shadow_hash", "shadow_path")
    old, new = {k: getattr(last, k) for k in keys}, {k: run[k] for k in keys}
    what = [name for name, key in (("model", "model_hash"), ("shadow model", "shadow_hash")) if old[key] != new[key]]
    audit(conn, f"model_changed:{run['run_id']}", None, "system", "model_changed", old, new,
          f"the daemon on {run['host']} started with another {' and '.join(what)} than the site's previous run")
    log.info(kv(event="model_changed", site=run["site"], model=(run["model_hash"] or "")[:16],
                shadow=(run["shadow_hash"] or "-")[:16]))
    return True


# -- the report ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Episode:
    id: str
    camera: str
    zone: str
    rule: str
    started_at: datetime
    ended_at: datetime | None
    disposition: str = ""  # live episodes: the latest signature's meaning ("" unreviewed)


@dataclass(frozen=True)
class Period:
    """A span in which a site's daemon ran with a shadow model: from that start to the site's next one."""

    site: str
    start: datetime
    end: datetime | None  # None: still running (or the last run recorded)
    model_hash: str
    shadow_hash: str

    def holds(self, site: str, at: datetime) -> bool:
        return site == self.site and self.start <= at and (self.end is None or at < self.end)


@dataclass
class Tally:
    both: int = 0
    live_only: int = 0
    shadow_only: int = 0
    live_only_confirmed: int = 0  # the shadow would have missed a violation QA confirmed
    live_only_false_positive: int = 0  # the shadow would have spared QA a false positive


@dataclass
class ShadowReport:
    since: datetime | None
    periods: list[Period]
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)  # (rule, camera) ->
    live_only: list[Episode] = field(default_factory=list)
    shadow_only: list[Episode] = field(default_factory=list)

    def total(self) -> Tally:
        t = Tally()
        for each in self.tallies.values():
            for name in vars(t):
                setattr(t, name, getattr(t, name) + getattr(each, name))
        return t

    def verdict(self) -> str:
        if not self.periods:
            return "verdict: no run with a shadow model in this period: nothing to compare"
        t = self.total()
        compared = t.both + t.live_only + t.shadow_only
        if t.live_only_confirmed:
            return (f"verdict: keep the live model: the shadow would have missed {t.live_only_confirmed} confirmed "
                    f"violation(s) ({t.both} of {compared} episodes agreed)")
        if not t.live_only and not t.shadow_only:
            return f"verdict: the two agree on every episode ({t.both}) over the period"
        unreviewed = t.live_only - t.live_only_false_positive
        return (f"verdict: review before promoting: the shadow would have spared {t.live_only_false_positive} false "
                f"positive(s), left out {unreviewed} unreviewed episode(s) and opened {t.shadow_only} the live model "
                f"did not ({t.both} of {compared} episodes agreed)")


def _overlaps(a: Episode, b: Episode, now: datetime) -> bool:
    return a.started_at <= (b.ended_at or now) and b.started_at <= (a.ended_at or now)


def _periods(conn: sa.Connection, since: datetime | None) -> list[Period]:
    """The spans in which a shadow model ran: from each run with one to the site's next run."""
    runs = conn.execute(sa.select(model_runs).order_by(model_runs.c.seq)).all()
    spans = []
    for i, run in enumerate(runs):
        later = [r.started_at for r in runs[i + 1:] if r.site == run.site]
        end = later[0] if later else None
        if run.shadow_hash and (since is None or end is None or end >= since):
            spans.append(Period(run.site, run.started_at, end, run.model_hash, run.shadow_hash))
    return spans


def _in(periods: list[Period], site: str, at: datetime) -> bool:
    return any(p.holds(site, at) for p in periods)


def shadow_report(conn: sa.Connection, since: datetime | None = None, camera: str | None = None) -> ShadowReport:
    """Per rule and camera, the episodes both models opened and those only one of them did (overlapping in time
    on the same camera, zone and rule), over the spans in which a shadow model ran."""
    periods = _periods(conn, since)
    report = ShadowReport(since, periods)
    if not periods:
        return report
    live_q = sa.select(violations).order_by(violations.c.started_at)
    shadow_q = sa.select(shadow_events).order_by(shadow_events.c.started_at)
    if since is not None:
        live_q, shadow_q = live_q.where(violations.c.started_at >= since), shadow_q.where(shadow_events.c.started_at >= since)
    if camera:
        live_q, shadow_q = live_q.where(violations.c.camera == camera), shadow_q.where(shadow_events.c.camera == camera)
    live = [r for r in conn.execute(live_q).all() if _in(periods, r.site, r.started_at)]
    ids = [r.id for r in live]
    ends = {r.violation_id: json.loads(r.new) for r in conn.execute(
        sa.select(audit_events.c.violation_id, audit_events.c.new).where(audit_events.c.what == "closed",
                                                                         audit_events.c.violation_id.in_(ids)))}
    meaning: dict[str, str] = {}
    for r in conn.execute(sa.select(reviews.c.violation_id, reviews.c.meaning).where(reviews.c.violation_id.in_(ids))
                          .order_by(reviews.c.seq)):
        meaning[r.violation_id] = r.meaning  # the latest signature counts
    zones = {vid: end.get("zone", "") for vid, end in ends.items()}
    live_eps = [Episode(r.id, r.camera, zones.get(r.id, ""), r.rule, r.started_at,
                        datetime.fromisoformat(ends[r.id]["ended_at"]) if r.id in ends else None, meaning.get(r.id, ""))
                for r in live]
    shadow_eps = [Episode(r.id, r.camera, r.zone, r.rule, r.started_at, r.ended_at)
                  for r in conn.execute(shadow_q).all() if _in(periods, r.site, r.started_at)]
    _match(report, live_eps, shadow_eps)
    return report


def _match(report: ShadowReport, live: list[Episode], shadow: list[Episode]) -> None:
    now = datetime.now(timezone.utc)
    by_stream: dict[tuple[str, str, str], list[Episode]] = defaultdict(list)
    for s in shadow:
        by_stream[(s.rule, s.camera, s.zone)].append(s)
    matched: set[str] = set()
    for ep in live:
        tally = report.tallies.setdefault((ep.rule, ep.camera), Tally())
        partners = [s for s in by_stream[(ep.rule, ep.camera, ep.zone)] if _overlaps(ep, s, now)]
        if partners:
            tally.both += 1
            matched.update(s.id for s in partners)
            continue
        tally.live_only += 1
        tally.live_only_confirmed += ep.disposition == "confirmed"
        tally.live_only_false_positive += ep.disposition == "false_positive"
        report.live_only.append(ep)
    for s in shadow:
        if s.id not in matched:
            report.tallies.setdefault((s.rule, s.camera), Tally()).shadow_only += 1
            report.shadow_only.append(s)
