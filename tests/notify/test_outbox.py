"""Notifications through the durable outbox: a real HTTP receiver, the real Mosquitto, a TCP proxy that cuts it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from monitor.backoff import Backoff
from monitor.durablequeue import DurableQueue
from monitor.messages import ViolationEvent
from monitor.notify.mqtt import MqttOutbox
from monitor.notify.payload import notification
from monitor.notify.webhook import WebhookOutbox
from monitor.site.notify import MqttConfig
from support.mqtt import Subscriber, broker, clear_retained, unique_site
from support.tcpproxy import TcpProxy
from support.waiting import wait_until
from support.webhooks import WebhookReceiver

SECRET = "a-webhook-secret-of-some-length"
T0 = 1_700_000_000.25


def event(kind: str, episode: str, camera: str = "line-1", zone: str = "") -> ViolationEvent:
    return ViolationEvent(kind, episode, "no-smoking", "critical", camera, "smoking", 0.91, T0,
                          T0 + 30 if kind == "closed" else None, 0.0, {"sop": "SOP-114"}, "rules-hash", zone)


def records(n: int, site: str = "plant-7") -> list[dict]:
    """n notifications over two cameras: ep-0 opened, ep-0 closed, ep-1 opened ..."""
    out = []
    for i in range(n):
        ev = event("opened" if i % 2 == 0 else "closed", f"ep-{i // 2}", camera=f"line-{i % 3}")
        out.append(notification(ev, site, "gmp-area", "https://qa.plant-7.example"))
    return out


class Counts(Counter):
    def __call__(self, what: str, n: int) -> None:
        if what == "pending":
            self["pending"] = n
        else:
            self[what] += n


def webhook(path: Path, url: str, counts: Counts, secret: str = SECRET) -> WebhookOutbox:
    return WebhookOutbox("shift-leads", url, secret, 5.0, DurableQueue(path, "shift-leads"), Backoff(0.05, 0.2),
                         counts, drain_seconds=0.5)


def test_the_durable_queue_keeps_records_across_a_reopen_and_channels_apart(tmp_path):
    path = tmp_path / "outbox.db"
    a, b = DurableQueue(path, "mqtt"), DurableQueue(path, "hooks")
    for i in range(3):
        a.append({"n": i})
    b.append({"n": "b"})
    a.ack(a.read(1)[0])
    a.close()
    b.close()
    again = DurableQueue(path, "mqtt")
    assert len(again) == 2 and [e.record for e in again.read(10)] == [{"n": 1}, {"n": 2}]
    assert [e.record for e in DurableQueue(path, "hooks").read(10)] == [{"n": "b"}]


def test_the_payload_carries_what_a_shift_lead_needs():
    body = json.loads(notification(event("closed", "ep-9", zone="station-b"), "plant-7", None,
                                   "https://qa.plant-7.example")["body"])
    assert body == {"id": "ep-9", "event": "closed", "site": "plant-7", "camera": "line-1", "zone": "station-b",
                    "rule": "no-smoking", "severity": "critical", "action": "smoking", "confidence": 0.91,
                    "started_at": "2023-11-14T22:13:20.250Z", "ended_at": "2023-11-14T22:13:50.250Z",
                    "labels": {"sop": "SOP-114"},
                    "snapshot_url": "https://qa.plant-7.example/violations/ep-9/snapshot"}
    whole_frame = json.loads(notification(event("opened", "ep-1"), "plant-7", "gmp-area", None)["body"])
    assert whole_frame["zone"] == "gmp-area" and "snapshot_url" not in whole_frame


def test_a_webhook_is_retried_until_the_receiver_takes_it_signed_and_in_order(tmp_path):
    sent = records(6)
    counts = Counts()
    with WebhookReceiver(SECRET, fail_first=3) as hook:
        outbox = webhook(tmp_path / "outbox.db", hook.url, counts)
        outbox.start()
        for r in sent:
            outbox.put(r)
        wait_until(lambda: len(hook.accepted) == 6, 30, "six notifications accepted")
        outbox.stop()
        outbox.join(10)
    assert hook.keys() == [r["key"] for r in sent], "each once, in the order they happened"
    assert [body for _, body in hook.accepted] == [json.loads(r["body"]) for r in sent]
    assert hook.bad_signatures == 0
    assert [status for status, _ in hook.calls[:4]] == [503, 503, 503, 200]
    assert {key for _, key in hook.calls[:4]} == {sent[0]["key"]}, "the same notification again, not the next one"
    assert counts == {"failed": 3, "sent": 6, "pending": 0}


def test_a_wrong_secret_is_refused_by_the_receiver_and_nothing_is_dropped(tmp_path):
    counts = Counts()
    with WebhookReceiver(SECRET) as hook:
        outbox = webhook(tmp_path / "outbox.db", hook.url, counts, secret="not-the-receivers-secret")
        outbox.start()
        outbox.put(records(1)[0])
        wait_until(lambda: hook.bad_signatures >= 2, 30, "the receiver refusing the signature twice")
        outbox.stop()
        outbox.join(10)
    assert hook.accepted == [] and counts["sent"] == 0
    assert len(DurableQueue(tmp_path / "outbox.db", "shift-leads")) == 1, "kept for when the secret is fixed"


def test_notifications_wait_in_the_outbox_across_a_restart_while_the_receiver_is_down(tmp_path):
    sent = records(4)
    with WebhookReceiver(SECRET, fail_first=10**6) as down:
        first = webhook(tmp_path / "outbox.db", down.url, Counts())
        first.start()
        for r in sent:
            first.put(r)
        wait_until(lambda: len(down.calls) >= 1, 30, "a first attempt")
        first.stop()
        assert first.join(10)
    assert len(DurableQueue(tmp_path / "outbox.db", "shift-leads")) == 4
    with WebhookReceiver(SECRET) as up:
        second = webhook(tmp_path / "outbox.db", up.url, Counts())
        second.start()
        wait_until(lambda: len(up.accepted) == 4, 30, "the waiting notifications delivered")
        second.stop()
        second.join(10)
    assert up.keys() == [r["key"] for r in sent]


def mqtt_outbox(tmp_path: Path, site: str, port: int, counts: Counts) -> MqttOutbox:
    cfg = MqttConfig(host="127.0.0.1", port=port, keepalive_seconds=5)
    return MqttOutbox(cfg, site, f"har-monitor-test-{site}", lambda p: tmp_path / p,
                      DurableQueue(tmp_path / "outbox.db", "mqtt"), Backoff(0.05, 0.3), counts, drain_seconds=1.0)


@pytest.fixture
def site():
    broker()
    name = unique_site()
    yield name
    clear_retained(name, [f"har-monitor/{name}/status"]
                   + [f"har-monitor/{name}/cameras/line-{i}/availability" for i in range(3)])


@pytest.mark.mqtt
def test_mqtt_publishes_episodes_retained_availability_and_the_daemon_status(tmp_path, site):
    sent = records(4, site)
    counts = Counts()
    with Subscriber(f"har-monitor/{site}/#") as sub:
        outbox = mqtt_outbox(tmp_path, site, broker()[1], counts)
        outbox.camera_available("line-1", True)
        outbox.start()
        for r in sent:
            outbox.put(r)
        wait_until(lambda: counts["sent"] == 4, 30, "four episodes published")
        outbox.camera_available("line-2", False)
        wait_until(lambda: sub.last(f"har-monitor/{site}/cameras/line-2/availability") == b"offline", 10,
                   "line-2 offline")
        topic = lambda cam: f"har-monitor/{site}/violations/{cam}"
        for cam in ("line-0", "line-1", "line-2"):
            assert sub.payloads(topic(cam)) == [r["body"].encode() for r in sent if r["camera"] == cam]
        assert sub.last(f"har-monitor/{site}/status") == b"online"
        assert sub.last(f"har-monitor/{site}/cameras/line-1/availability") == b"online"
        outbox.stop()
        outbox.join(10)
        wait_until(lambda: sub.last(f"har-monitor/{site}/status") == b"offline", 10, "the goodbye")
        assert sub.last(f"har-monitor/{site}/cameras/line-1/availability") == b"offline"
    with Subscriber(f"har-monitor/{site}/cameras/#") as late:  # a client that connects later still knows
        wait_until(lambda: late.messages, 10, "the retained availability")
        assert all(retained and payload == b"offline" for _, payload, retained in late.messages)


@pytest.mark.mqtt
def test_mqtt_qos1_delivers_what_waited_while_the_broker_connection_was_cut(tmp_path, site):
    sent = records(6, site)
    counts = Counts()
    status = f"har-monitor/{site}/status"
    with Subscriber(f"har-monitor/{site}/#") as sub, TcpProxy(*broker()) as proxy:
        outbox = mqtt_outbox(tmp_path, site, proxy.port, counts)
        outbox.start()
        wait_until(lambda: sub.last(status) == b"online", 20, "the daemon online")
        outbox.put(sent[0])
        wait_until(lambda: counts["sent"] == 1, 20, "the first episode")
        proxy.pause()  # the broker is gone for the daemon: connections cut, new ones refused
        wait_until(lambda: sub.last(status) == b"offline", 20, "the broker publishing the last will")
        for r in sent[1:]:
            outbox.put(r)
        wait_until(lambda: counts["failed"] >= 2, 20, "failed attempts while the broker is away")
        assert counts["sent"] == 1 and counts["pending"] == 5
        proxy.resume()
        wait_until(lambda: counts["sent"] == 6, 60, "every waiting episode delivered")
        wait_until(lambda: sub.last(status) == b"online", 20, "the daemon online again")
        outbox.stop()
        outbox.join(10)
    received = [p for t, p, _ in sub.messages if "/violations/" in t]
    assert received == [r["body"].encode() for r in sent], "nothing lost, nothing twice, in order"
