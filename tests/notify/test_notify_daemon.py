"""The daemon with a zoned camera, MQTT and a webhook: zone-scoped rules, per-rule routing, payloads on the real
Mosquitto, and nothing lost or duplicated by episode id across a restart while the receiver was down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from support.daemon import RunningDaemon
from support.mqtt import Subscriber, broker, clear_retained, unique_site
from support.sites import write_site
from support.waiting import wait_until
from support.webhooks import WebhookReceiver

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]
SECRET = "shift-leads-signing-secret"


def site(directory: Path, bundle: Path, clip: Path, name: str, hook_url: str) -> Path:
    zones = [{"name": "left", "rect": [0, 0, 0.5, 1]}, {"name": "right", "rect": [0.5, 0, 1, 1]}]
    rules = {"rules": [  # "anything" covers every label: an episode opens at each stream's first window
        {"id": "left-station", "severity": "critical", "applies_to": {"zones": ["left"]},
         "when": {"action": "anything", "min_confidence": 0.5, "for_windows": 2}},
        {"id": "right-station", "severity": "minor", "applies_to": {"zones": ["right"]}, "notify": [],
         "when": {"action": "anything", "min_confidence": 0.5, "for_windows": 2}}]}
    notify = {"console_url": "https://qa.example", "mqtt": {"host": "127.0.0.1", "port": broker()[1]},
              "webhooks": {"shift-leads": {"url": hook_url, "secret": "${HAR_TEST_HOOK_SECRET}"}},
              "retry_initial_seconds": 0.1, "retry_max_seconds": 0.5}
    path = write_site(directory, bundle, [{"id": "line-2", "url": str(clip), "loop": True, "zones": zones}], rules,
                      notify=notify, evidence={"enabled": False})
    path.write_text(path.read_text().replace("site: test-site", f"site: {name}"))
    return path


def stored_episodes(db: Path) -> list[tuple[str, str]]:
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        found = [(r.id, r.rule) for r in conn.execute(sa.text("SELECT id, rule FROM violations ORDER BY seq"))]
    engine.dispose()
    return found


def test_zones_route_and_notify_across_a_restart_with_the_receiver_down(tiny_bundle, clip, tmp_path, monkeypatch,
                                                                        caplog):
    monkeypatch.setenv("HAR_TEST_HOOK_SECRET", SECRET)
    caplog.set_level("DEBUG")  # every line the daemon logs is checked for the secret
    name = unique_site()
    prefix = f"har-monitor/{name}"
    try:
        with Subscriber(f"{prefix}/#") as sub:
            with WebhookReceiver(SECRET, fail_first=10**6) as down:
                path = site(tmp_path, tiny_bundle, clip, name, down.url)
                with RunningDaemon(path) as d:
                    d.wait_for(lambda: d.value("har_monitor_notifications_failed_total", target="shift-leads") >= 2,
                               90, "the webhook failing while the receiver is down")
                    wait_until(lambda: sub.payloads(f"{prefix}/violations/line-2"), 30, "the episode on MQTT")
                    scraped = d.scrape()
                    for zone in ("left", "right"):
                        assert sum(v for (metric, labels), v in scraped.items()
                                   if metric == "har_monitor_zone_predictions_total" and ("zone", zone) in labels) > 0, \
                            f"zone {zone} is classified"
                    assert sub.last(f"{prefix}/cameras/line-2/availability") == b"online"
                    assert sub.last(f"{prefix}/status") == b"online"
                assert down.accepted == []
            with WebhookReceiver(SECRET) as up:
                path = site(tmp_path, tiny_bundle, clip, name, up.url)
                with RunningDaemon(path) as d:
                    wait_until(lambda: len(up.accepted) >= 3, 90, "the first run's notifications and a new one")
                wait_until(lambda: len(up.accepted) >= 4, 30, "the second run's episode closed")
            wait_until(lambda: sub.last(f"{prefix}/status") == b"offline", 10, "the daemon's goodbye")
            mqtt = [json.loads(p) for p in sub.payloads(f"{prefix}/violations/line-2")]
    finally:
        clear_retained(name, [f"{prefix}/status", f"{prefix}/cameras/line-2/availability"])

    episodes = stored_episodes(tmp_path / "violations.db")
    left = [eid for eid, rule in episodes if rule == "left-station"]
    assert len(left) == 2 and len([e for e in episodes if e[1] == "right-station"]) == 2, "one per run and zone"
    expected = [f"{eid}:{kind}" for eid in left for kind in ("opened", "closed")]
    assert up.keys() == expected, "nothing lost, nothing twice, in order: the down run's first"
    bodies = [body for _, body in up.accepted]
    assert {b["zone"] for b in bodies} == {"left"} and {b["rule"] for b in bodies} == {"left-station"}, \
        "the right zone's rule notifies nowhere"
    assert bodies[0]["snapshot_url"] == f"https://qa.example/violations/{left[0]}/snapshot"
    assert bodies[1]["ended_at"] is not None and bodies[1]["event"] == "closed"
    assert [(m["id"], m["event"]) for m in mqtt] == [tuple(k.split(":")) for k in expected], \
        "MQTT had the broker all along: the same episodes, in order"
    assert "event=notification_failed target=shift-leads" in caplog.text
    assert SECRET not in caplog.text + (tmp_path / "site.yaml").read_text()
