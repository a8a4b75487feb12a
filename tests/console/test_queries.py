"""The inbox's reads on SQLite and PostgreSQL: open items first across pages, counts per filter, exports."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from monitor.console import queries
from monitor.console.queries import Filters, Scope
from monitor.record.db import create_engine, upgrade
from monitor.record.review import add_user, sign_review
from monitor.record.writer import write_event
from support.events import PROV, T0, event

SCOPE = Scope("plant-7", {"line-2": ("packing",)})


@pytest.fixture
def inbox_record(db):
    """ep-0 ... ep-4, one a second; ep-1 confirmed, ep-3 needs follow-up."""
    upgrade(db.url)
    engine = create_engine(db.url)
    with engine.begin() as conn:
        add_user(conn, "rita", "reviewer", "correct horse battery")
        for i in range(5):
            write_event(conn, event("opened", f"ep-{i}", 0.7, T0 + i), PROV)
            closed = replace(event("closed", f"ep-{i}", 0.9, T0 + i, T0 + i + 2), trace=((T0 + i, 0.7), (T0 + i + 1, 0.9)))
            write_event(conn, closed, PROV)
        sign_review(conn, "ep-1", "rita", "correct horse battery", "confirmed", "seen on the clip")
        sign_review(conn, "ep-3", "rita", "correct horse battery", "needs_follow_up", "ask the line lead")
    yield engine
    engine.dispose()


def ids(page) -> list[str]:
    return [r["id"] for r in page.rows]


def test_open_items_come_first_newest_first_across_pages(inbox_record, monkeypatch):
    monkeypatch.setattr(queries, "PAGE_SIZE", 2)
    with inbox_record.connect() as conn:
        pages = [queries.inbox(conn, Filters(page=p), SCOPE) for p in (1, 2, 3)]
        assert [ids(p) for p in pages] == [["ep-4", "ep-2"], ["ep-0", "ep-3"], ["ep-1"]]
        assert [r["status"] for p in pages for r in p.rows] == ["open"] * 3 + ["needs_follow_up", "reviewed"]
        assert pages[0].total == 5 and pages[0].pages == 3
        assert ids(queries.inbox(conn, Filters(sort="oldest"), SCOPE)) == ["ep-0", "ep-1"]
        assert ids(queries.inbox(conn, Filters(status="open", page=2), SCOPE)) == ["ep-0"]
        assert ids(queries.inbox(conn, Filters(status="reviewed"), SCOPE)) == ["ep-1"]


def test_counts_per_filter_apply_every_other_filter(inbox_record):
    with inbox_record.connect() as conn:
        page = queries.inbox(conn, Filters(status="open", zone="packing"), SCOPE)
        assert page.total == 3 and page.counts["status"] == {"open": 3, "needs_follow_up": 1, "reviewed": 1}
        assert page.counts["disposition"] == {"none": 3}, "under status=open"
        assert page.counts["zone"] == {"packing": 3} and page.rows[0]["zone"] == "packing"
        assert queries.inbox(conn, Filters(disposition="none"), SCOPE).total == 3
        assert queries.inbox(conn, Filters(zone="cleanroom-a"), SCOPE).total == 0
        assert queries.inbox(conn, Filters(), Scope("another-site", {})).total == 0, "another site's stay hidden"


def test_an_export_keeps_the_record_but_leaves_the_traces_out(inbox_record):
    with inbox_record.connect() as conn:
        (view,) = queries.export(conn, Filters(status="needs_follow_up"), SCOPE)
        closed = next(a for a in view.trail if a["what"] == "closed")
        assert "trace" not in json.loads(closed["new"]) and view.peak_confidence == pytest.approx(0.9)
        assert view.flat()["status"] == "needs_follow_up"
        (shown,) = [a for a in queries.violation(conn, "ep-3", SCOPE).trail if a["what"] == "closed"]
        assert len(json.loads(shown["new"])["trace"]) == 2, "the page has it, for the timeline"


def test_bad_filters_are_named():
    for params, says in (({"severity": "huge"}, "severity: 'huge'"), ({"start": "yesterday"}, "from: 'yesterday'"),
                         ({"since": "soon"}, "since: 'soon'"), ({"page": "x"}, "page: 'x'")):
        with pytest.raises(queries.BadFilterError, match=says):
            Filters.parse(params)


def test_a_camera_with_zones_is_found_under_each_and_shows_the_episodes_own(inbox_record):
    scope = Scope("plant-7", {"line-2": ("filling", "capping")})
    with inbox_record.begin() as conn:
        write_event(conn, replace(event("opened", "ep-z", 0.7, T0 + 10), zone="capping"), PROV)
        write_event(conn, replace(event("closed", "ep-z", 0.8, T0 + 10, T0 + 12), zone="capping"), PROV)
    with inbox_record.connect() as conn:
        page = queries.inbox(conn, Filters(zone="capping"), scope)
        assert page.rows[0]["id"] == "ep-z" and page.rows[0]["zone"] == "capping"
        assert page.counts["zone"] == {"filling": 6, "capping": 6} and page.total == 6
        assert page.rows[1]["zone"] == "filling, capping", "recorded before zones were kept: the camera's"
