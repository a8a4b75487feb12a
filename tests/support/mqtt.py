"""The real Mosquitto on 127.0.0.1:1883, and a subscriber that records what it receives.

    with Subscriber("har-monitor/site-x/#") as sub:   # connected and subscribed (QoS 1) when this returns
        ...
        sub.payloads("har-monitor/site-x/violations/cam")   # [bytes] in arrival order
"""

from __future__ import annotations

import socket
import threading
import uuid

import pytest

from support.waiting import wait_until

BROKER = ("127.0.0.1", 1883)


def broker() -> tuple[str, int]:
    """Mosquitto's address, or skip the test with the reason."""
    try:
        socket.create_connection(BROKER, timeout=2).close()
    except OSError as exc:
        pytest.skip(f"no MQTT broker on {BROKER[0]}:{BROKER[1]} ({exc}): install and start mosquitto")
    return BROKER


def unique_site() -> str:
    """A site name of its own per test: retained messages of other runs never meet it."""
    return f"test-{uuid.uuid4().hex[:10]}"


class Subscriber:
    def __init__(self, topic: str):
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retained)
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}")
        self._client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._message

    def _message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def payloads(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def last(self, topic: str) -> bytes | None:
        found = self.payloads(topic)
        return found[-1] if found else None

    def __enter__(self) -> Subscriber:
        self._client.connect(*broker())
        self._client.loop_start()
        wait_until(self._subscribed.is_set, 10, f"a subscription to {self.topic}")
        return self

    def __exit__(self, *exc) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def clear_retained(site: str, topics: list[str]) -> None:
    """Remove the retained messages a test left on the real broker (an empty retained message does)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(*broker())
    client.loop_start()
    for topic in topics:
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
