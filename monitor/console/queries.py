"""What the console's pages read from the record: the inbox (filters, counts, sorting, paging), one
violation, the audit trail, exports and trends. Reads only: every write goes through monitor.record.

A violation's status and disposition come from its newest signature: none -> open; needs_follow_up
-> needs follow-up; confirmed or false_positive -> reviewed (as `violations list --status`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta, timezone
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from monitor.durations import parse_duration
from monitor.record.review import DISPOSITIONS, ViolationView, violation_view
from monitor.record.tables import audit_events, reviews, violations

SEVERITIES = ("critical", "major", "minor", "info")
STATUSES = ("open", "needs_follow_up", "reviewed")
UNSIGNED = "none"  # the disposition filter's value for "never signed"
SORTS = {"open-first": "open first, newest first", "newest": "newest first", "oldest": "oldest first",
         "severity": "most severe first", "confidence": "most confident first"}
PAGE_SIZE = 50
AUDIT_PAGE_SIZE = 100


class BadFilterError(ValueError):
    """A filter value that cannot mean anything (the page says which)."""


def _query_values(cls: type, params: Mapping[str, str]) -> dict:
    """The non-empty query parameters named as the dataclass's fields; `page` as a number."""
    values: dict = {f.name: params[f.name].strip() for f in fields(cls) if params.get(f.name, "").strip()}
    try:
        values["page"] = max(1, int(values.get("page", 1)))
    except ValueError:
        raise BadFilterError(f"page: '{values['page']}' is not a number") from None
    return values


def _date(text: str, name: str, end: bool = False) -> datetime:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise BadFilterError(f"{name}: '{text}' is not a date (YYYY-MM-DD)") from None
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return start + timedelta(days=1) if end else start


@dataclass(frozen=True)
class Filters:
    """The inbox's filters, as the query string carries them (dates are UTC days)."""

    since: str = ""  # a duration back from now: 24h, 7d
    start: str = ""  # YYYY-MM-DD, from the start of that day
    end: str = ""  # YYYY-MM-DD, to the end of that day
    camera: str = ""
    zone: str = ""
    rule: str = ""
    severity: str = ""
    status: str = ""
    disposition: str = ""
    sort: str = "open-first"
    page: int = 1

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Filters:
        filters = cls(**_query_values(cls, params))
        filters.time_range()  # refuse a bad date or duration now
        for name, allowed in (("severity", SEVERITIES), ("status", STATUSES), ("sort", tuple(SORTS)),
                              ("disposition", (*DISPOSITIONS, UNSIGNED))):
            value = getattr(filters, name)
            if value and value not in allowed:
                raise BadFilterError(f"{name}: '{value}' is not one of {', '.join(allowed)}")
        return filters

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        lo = _date(self.start, "from") if self.start else None
        hi = _date(self.end, "to", end=True) if self.end else None
        if self.since:
            try:
                seconds = parse_duration(self.since)
                back = datetime.now(timezone.utc) - timedelta(seconds=seconds)
            except (ValueError, OverflowError):
                raise BadFilterError(f"since: '{self.since}' is not a duration (24h, 7d)") from None
            lo = max(lo, back) if lo else back
        return lo, hi

    def query(self, **changes: object) -> str:
        """The query string of these filters with `changes`; an empty value drops the filter."""
        changed = replace(self, **changes) if changes else self
        pairs = {f.name: getattr(changed, f.name) for f in fields(changed)}
        return urlencode({k: v for k, v in pairs.items()
                          if v and not (k == "page" and v == 1) and not (k == "sort" and v == "open-first")})

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name not in ("sort", "page"))


@dataclass(frozen=True)
class Scope:
    """What this console may show: one site's violations (None: every site in the database), and
    the zones of its cameras (site.yaml's: a camera's `zone`, or the names of its `zones`). A zone filter
    selects the cameras that have that zone."""

    site: str | None
    zones: Mapping[str, tuple[str, ...]]  # camera -> its zone(s)

    def cameras_in(self, zone: str) -> list[str]:
        return sorted(c for c, zones in self.zones.items() if zone in zones)

    def zone_of(self, camera: str, recorded: str | None = None) -> str:
        """The episode's zone as its closing event recorded it, else its camera's."""
        return recorded or ", ".join(self.zones.get(camera, ()))


def _latest_review() -> sa.Subquery:
    """violation_id -> meaning of its newest signature."""
    newest = (sa.select(reviews.c.violation_id, sa.func.max(reviews.c.seq).label("seq"))
              .group_by(reviews.c.violation_id).subquery("newest"))
    return (sa.select(newest.c.violation_id, reviews.c.meaning)
            .join(reviews, reviews.c.seq == newest.c.seq).subquery("latest"))


def _status(meaning: sa.ColumnElement) -> sa.ColumnElement:
    return sa.case((meaning.is_(None), "open"), (meaning == "needs_follow_up", "needs_follow_up"), else_="reviewed")


class _Inbox:
    """The select of violations with their disposition, and the conditions of each filter."""

    def __init__(self, filters: Filters, scope: Scope):
        self.f, self.scope = filters, scope
        self.latest = _latest_review()
        self.meaning = self.latest.c.meaning
        self.status = _status(self.meaning)
        self.source = violations.outerjoin(self.latest, self.latest.c.violation_id == violations.c.id)

    def base(self) -> list[sa.ColumnElement]:
        """Site and time range: the conditions every count shares."""
        conds = []
        if self.scope.site is not None:
            conds.append(violations.c.site == self.scope.site)
        lo, hi = self.f.time_range()
        if lo:
            conds.append(violations.c.started_at >= lo)
        if hi:
            conds.append(violations.c.started_at < hi)
        return conds

    def facet(self, name: str, value: str) -> sa.ColumnElement | None:
        if not value:
            return None
        if name == "zone":
            return violations.c.camera.in_(self.scope.cameras_in(value))
        if name == "status":
            return self.status == value
        if name == "disposition":
            return self.meaning.is_(None) if value == UNSIGNED else self.meaning == value
        return getattr(violations.c, name) == value

    def conditions(self, facets: tuple[str, ...] = ()) -> list[sa.ColumnElement]:
        """The base conditions and those of the filters (of `facets` only, when given)."""
        chosen = [self.facet(n, getattr(self.f, n)) for n in facets or FACETS]
        return self.base() + [c for c in chosen if c is not None]

    def order(self) -> list[sa.ColumnElement]:
        """The sort's order (open first is read in two parts: see _page)."""
        newest = [violations.c.started_at.desc(), violations.c.seq.desc()]
        sort = self.f.sort
        if sort == "newest":
            return newest
        if sort == "oldest":
            return [violations.c.started_at, violations.c.seq]
        if sort == "severity":
            rank = sa.case(*((violations.c.severity == s, i) for i, s in enumerate(SEVERITIES)), else_=len(SEVERITIES))
            return [rank, *newest]
        if sort == "confidence":
            return [violations.c.confidence.desc(), *newest]
        return newest


FACETS = ("camera", "zone", "rule", "severity", "status", "disposition")


@dataclass
class InboxPage:
    rows: list[dict]  # violations rows, plus disposition, status, zone, ended_at, peak_confidence
    total: int  # matching every filter
    counts: dict[str, Counter]  # facet -> value -> violations matching every OTHER filter

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


def inbox(conn: sa.Connection, filters: Filters, scope: Scope) -> InboxPage:
    q = _Inbox(filters, scope)
    counts, total = _counts(conn, q)
    rows = _page(conn, q, counts["status"]["open"] if filters.status in ("", "open") else 0)
    closing = _closing(conn, [r["id"] for r in rows])
    for r in rows:
        closed = closing.get(r["id"], {})
        r.update(status=_status_of(r["disposition"]), zone=scope.zone_of(r["camera"], closed.get("zone")),
                 ended_at=closed.get("ended_at"), peak_confidence=closed.get("peak_confidence", r["confidence"]))
    return InboxPage(rows, total, counts)


def _page(conn: sa.Connection, q: _Inbox, open_count: int) -> list[dict]:
    """The page's rows. Open first (the default sort) reads the open ones, newest first, then the signed
    ones, each on its own along the index on started_at: no sort of every violation by its status."""
    offset = (q.f.page - 1) * PAGE_SIZE
    rows = lambda select: [dict(r) for r in conn.execute(select).mappings()]
    if q.f.sort != "open-first":
        return rows(sa.select(violations, q.meaning.label("disposition")).select_from(q.source)
                    .where(*q.conditions()).order_by(*q.order()).limit(PAGE_SIZE).offset(offset))
    newest = [violations.c.started_at.desc(), violations.c.seq.desc()]
    found = []
    if offset < open_count:
        unsigned = ~sa.exists().where(reviews.c.violation_id == violations.c.id)
        found = rows(sa.select(violations, sa.null().label("disposition"))
                     .where(*q.conditions(("camera", "zone", "rule", "severity")), unsigned)
                     .order_by(*newest).limit(PAGE_SIZE).offset(offset))
    if len(found) < PAGE_SIZE and q.f.status != "open":
        signed = violations.join(q.latest, q.latest.c.violation_id == violations.c.id)
        found += rows(sa.select(violations, q.meaning.label("disposition")).select_from(signed)
                      .where(*q.conditions()).order_by(*newest)
                      .limit(PAGE_SIZE - len(found)).offset(max(0, offset - open_count)))
    return found


def _status_of(disposition: str | None) -> str:
    if disposition is None:
        return "open"
    return "needs_follow_up" if disposition == "needs_follow_up" else "reviewed"


def _groups(conn: sa.Connection, q: _Inbox) -> dict[tuple, int]:
    """(camera, rule, severity, newest disposition or None) -> violations, over the site and time range.

    Two grouped counts: every violation, and the signed ones only (an inner join of the few signed
    with their rows); the unsigned are the difference. Cheaper than joining every violation with its
    newest signature, and the groups are few however many violations there are.
    """
    keys = (violations.c.camera, violations.c.rule, violations.c.severity)
    every = conn.execute(sa.select(*keys, sa.func.count()).where(*q.base()).group_by(*keys))
    signed = conn.execute(sa.select(*keys, q.meaning, sa.func.count())
                          .select_from(violations.join(q.latest, q.latest.c.violation_id == violations.c.id))
                          .where(*q.base()).group_by(*keys, q.meaning))
    groups: dict[tuple, int] = {(*key, None): n for *key, n in every}
    for *key, meaning, n in signed:
        signed_key, open_key = (*key, meaning), (*key, None)  # not d[(*k, x)]: mypy reads it as 3.11's d[*k, x]
        groups[signed_key] = n
        groups[open_key] -= n
    return groups


def _counts(conn: sa.Connection, q: _Inbox) -> tuple[dict[str, Counter], int]:
    """Each facet's counts under the other filters, and the total under all of them, from _groups."""
    groups = []
    for (camera, rule, severity, meaning), n in _groups(conn, q).items():
        groups.append(({"camera": (camera,), "zone": q.scope.zones.get(camera, ()), "rule": (rule,),
                        "severity": (severity,), "status": (_status_of(meaning),),
                        "disposition": (meaning or UNSIGNED,)}, n))
    wanted = {name: getattr(q.f, name) for name in FACETS}
    counts: dict[str, Counter] = {name: Counter() for name in FACETS}
    total = 0
    for values, n in groups:  # each facet's value(s): a camera may have several zones
        misses = [name for name in FACETS if wanted[name] and wanted[name] not in values[name]]
        if not misses:
            total += n
        for name in FACETS:
            if not misses or misses == [name]:
                for value in values[name]:
                    counts[name][value] += n
    return counts, total


def _closing(conn: sa.Connection, ids: list[str]) -> dict[str, dict]:
    if not ids:
        return {}
    rows = conn.execute(sa.select(audit_events.c.violation_id, audit_events.c.new)
                        .where(audit_events.c.violation_id.in_(ids), audit_events.c.what == "closed"))
    return {r.violation_id: json.loads(r.new) for r in rows}


def _without_trace(conn: sa.Connection) -> sa.ColumnElement:
    """An audit event's JSON, a closing event's confidence trace left out (read and parsed, 600 points
    per violation would make most of an export's time and size)."""
    if conn.dialect.name == "postgresql":
        trimmed = sa.cast(sa.cast(audit_events.c.new, JSONB).op("-")("trace"), sa.Text)
    else:
        trimmed = sa.func.json_remove(audit_events.c.new, "$.trace")
    return sa.case((audit_events.c.what == "closed", trimmed), else_=audit_events.c.new).label("new")


def views(conn: sa.Connection, select: sa.Select, traces: bool = True) -> list[ViolationView]:
    """Violations (a select of violations rows) with their audit trails and signatures, as the CLI shows them."""
    rows = [dict(r) for r in conn.execute(select).mappings()]
    if not rows:
        return []
    ids = sa.select(select.subquery().c.id)
    trails: dict[str, list[dict]] = {r["id"]: [] for r in rows}
    columns = [c if traces or c.name != "new" else _without_trace(conn) for c in audit_events.columns]
    for a in conn.execute(sa.select(*columns).where(audit_events.c.violation_id.in_(ids))
                          .order_by(audit_events.c.seq)).mappings():
        trails[a["violation_id"]].append({**a, "at": a["at"].isoformat()})
    signed: dict[str, list[dict]] = {r["id"]: [] for r in rows}
    for v in conn.execute(sa.select(reviews).where(reviews.c.violation_id.in_(ids)).order_by(reviews.c.seq)).mappings():
        signed[v["violation_id"]].append({**v, "signed_at": v["signed_at"].isoformat()})
    return [violation_view(r, trails[r["id"]], signed[r["id"]]) for r in rows]


def violation(conn: sa.Connection, violation_id: str, scope: Scope) -> ViolationView | None:
    """One violation by its exact id, if this console may show it."""
    select = sa.select(violations).where(violations.c.id == violation_id)
    if scope.site is not None:
        select = select.where(violations.c.site == scope.site)
    found = views(conn, select)
    return found[0] if found else None


def export(conn: sa.Connection, filters: Filters, scope: Scope, limit: int | None = None) -> list[ViolationView]:
    """Every violation matching the filters, oldest first (as `violations export`; confidence traces left out)."""
    q = _Inbox(filters, scope)
    select = (sa.select(violations).select_from(q.source).where(*q.conditions())
              .order_by(violations.c.started_at, violations.c.seq))
    return views(conn, select.limit(limit) if limit else select, traces=False)


# -- the audit trail -------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditFilters:
    violation: str = ""
    actor: str = ""
    what: str = ""
    start: str = ""
    end: str = ""
    page: int = 1

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> AuditFilters:
        filters = cls(**_query_values(cls, params))
        filters.conditions()
        return filters

    def conditions(self) -> list[sa.ColumnElement]:
        conds = []
        for name in ("violation", "actor", "what"):
            value = getattr(self, name)
            if value:
                conds.append(getattr(audit_events.c, "violation_id" if name == "violation" else name) == value)
        if self.start:
            conds.append(audit_events.c.at >= _date(self.start, "from"))
        if self.end:
            conds.append(audit_events.c.at < _date(self.end, "to", end=True))
        return conds

    def query(self, **changes: object) -> str:
        changed = replace(self, **changes) if changes else self
        return urlencode({f.name: getattr(changed, f.name) for f in fields(changed)
                          if getattr(changed, f.name) and not (f.name == "page" and getattr(changed, f.name) == 1)})


def audit_trail(conn: sa.Connection, filters: AuditFilters, scope: Scope) -> tuple[list[dict], int, list[str]]:
    """A page of audit events, newest first; the number matching; the kinds of event there are."""
    conds = filters.conditions()
    if scope.site is not None:  # another site's violations' events stay hidden; events of no violation are shared
        mine = sa.select(violations.c.id).where(violations.c.site == scope.site)
        conds.append(sa.or_(audit_events.c.violation_id.is_(None), audit_events.c.violation_id.in_(mine)))
    total = conn.execute(sa.select(sa.func.count()).select_from(audit_events).where(*conds)).scalar_one()
    rows = conn.execute(sa.select(audit_events).where(*conds).order_by(audit_events.c.seq.desc())
                        .limit(AUDIT_PAGE_SIZE).offset((filters.page - 1) * AUDIT_PAGE_SIZE)).mappings()
    kinds = [k for (k,) in conn.execute(sa.select(audit_events.c.what).distinct().order_by(audit_events.c.what))]
    return [dict(r) for r in rows], total, kinds


# -- trends ------------------------------------------------------------------------------------------

@dataclass
class Trends:
    days: list[str]  # YYYY-MM-DD, oldest first
    per_rule_day: dict[str, list[int]]  # rule -> a count per day
    dispositions: dict[str, Counter]  # rule -> newest disposition (or "none") -> violations

    def false_positive_rate(self, rule: str) -> float | None:
        c = self.dispositions.get(rule, Counter())
        judged = c["confirmed"] + c["false_positive"]
        return c["false_positive"] / judged if judged else None


def trends(conn: sa.Connection, scope: Scope, days: int) -> Trends:
    today = datetime.now(timezone.utc).date()
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
    if conn.dialect.name == "postgresql":
        day = sa.func.to_char(sa.func.timezone("UTC", violations.c.started_at), "YYYY-MM-DD")
    else:  # SQLite keeps UTC datetimes as ISO text
        day = sa.func.substr(violations.c.started_at, 1, 10)
    conds = [violations.c.started_at >= since] + ([violations.c.site == scope.site] if scope.site else [])
    labels = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    index = {d: i for i, d in enumerate(labels)}
    per_rule: dict[str, list[int]] = {}
    for rule, d, n in conn.execute(sa.select(violations.c.rule, day, sa.func.count()).where(*conds)
                                   .group_by(violations.c.rule, day)):
        if d in index:
            per_rule.setdefault(rule, [0] * days)[index[d]] += n
    latest = _latest_review()
    dispositions: dict[str, Counter] = {}
    for rule, meaning, n in conn.execute(
            sa.select(violations.c.rule, latest.c.meaning, sa.func.count())
            .select_from(violations.outerjoin(latest, latest.c.violation_id == violations.c.id))
            .where(*conds).group_by(violations.c.rule, latest.c.meaning)):
        dispositions.setdefault(rule, Counter())[meaning or UNSIGNED] += n
    return Trends(labels, dict(sorted(per_rule.items())), dispositions)
