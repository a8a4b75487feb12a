"""MQTT (paho-mqtt): episodes, camera availability and the daemon's status.

Topics (`<p>` = `<topic_prefix>/<site>`):
- `<p>/violations/<camera>`: one JSON message per episode opened and closed (monitor.notify.payload),
  QoS 1, not retained, in order per camera, from the durable outbox;
- `<p>/cameras/<camera>/availability`: `online` / `offline`, QoS 1, retained;
- `<p>/status`: `online` / `offline`, QoS 1, retained; `offline` is also the connection's last will, so
  the broker says it when the daemon vanishes without a word. A camera is available when both its
  topic and the daemon's status say `online`.

paho's own network thread keeps the connection (keepalive, reconnects with its own backoff). A
message is delivered once the broker's PUBACK is back; paho re-sends an unacknowledged one after a
reconnect itself (QoS 1, DUP), so the outbox waits for that same message rather than publishing a
second copy. Credentials and TLS come from site.yaml (`${VAR}` from the environment); only the
broker's host and port are ever logged.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

from monitor.notify.outbox import DeliveryError, Outbox
from monitor.ops.logs import kv
from monitor.site.notify import MqttConfig

log = logging.getLogger(__name__)
PUBACK_WAIT_SECONDS = 2.0  # per attempt; the outbox tries again after its backoff (or at once on reconnect)


def topics(prefix: str, site: str) -> Callable[..., str]:
    """`topic("violations", camera)` -> `<prefix>/<site>/violations/<camera>`."""
    return lambda *levels: "/".join((prefix, site, *levels))


class MqttOutbox(Outbox):
    def __init__(self, cfg: MqttConfig, site: str, client_id: str, resolve: Callable[[str], Path], *args, **kwargs):
        super().__init__("mqtt", *args, **kwargs)
        self.cfg = cfg
        self.topic = topics(cfg.topic_prefix, site)
        self.shown = f"{cfg.host}:{cfg.port}"
        self._availability: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._inflight: tuple[str, mqtt.MQTTMessageInfo] | None = None  # (key, paho's message) awaiting its PUBACK
        self._client = self._make_client(client_id, resolve)

    def _make_client(self, client_id: str, resolve: Callable[[str], Path]) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        client.will_set(self.topic("status"), "offline", qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            path = lambda value: str(resolve(value)) if value else None
            client.tls_set(ca_certs=path(cfg.ca_file), certfile=path(cfg.cert_file), keyfile=path(cfg.key_file))
        client.reconnect_delay_set(min(1, int(self.backoff.initial) or 1), int(self.backoff.maximum))
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        return client

    def camera_available(self, camera: str, up: bool) -> None:
        """Any thread: a camera went up or down (published retained now, or again on every connect)."""
        with self._lock:
            changed = self._availability.get(camera) != up
            self._availability[camera] = up
        if changed and self._client.is_connected():
            self._publish_availability(camera, up)

    # -- the outbox's thread --------------------------------------------------------------------
    def run(self) -> None:
        self._client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_seconds)
        self._client.loop_start()
        super().run()

    def deliver(self, record: dict) -> None:
        if self._inflight is None or self._inflight[0] != record["key"]:
            if not self._client.is_connected():  # paho would queue it, but as failed: publish once connected
                raise DeliveryError(f"not connected ({self.shown})")
            info = self._client.publish(self.topic("violations", record["camera"]), record["body"], qos=1)
            self._inflight = (record["key"], info)
        info = self._inflight[1]
        try:
            info.wait_for_publish(PUBACK_WAIT_SECONDS)
        except (RuntimeError, ValueError) as exc:  # the connection went just as it was published: publish again
            self._inflight = None
            raise DeliveryError(f"{exc} ({self.shown})") from None
        if not info.is_published():
            state = "no PUBACK yet" if self._client.is_connected() else "not connected"
            raise DeliveryError(f"{state} ({self.shown})")
        self._inflight = None

    def finish(self) -> None:
        """Say goodbye: every camera and the daemon offline (a clean disconnect sends no last will)."""
        if self._client.is_connected():
            with self._lock:
                cameras = list(self._availability)
            infos = [self._publish_availability(c, False) for c in cameras]
            infos.append(self._client.publish(self.topic("status"), "offline", qos=1, retain=True))
            for info in infos:
                try:
                    info.wait_for_publish(1.0)
                except (RuntimeError, ValueError):
                    break
            self._client.disconnect()
        self._client.loop_stop()

    # -- paho's thread --------------------------------------------------------------------------
    def _connected(self, client: mqtt.Client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            log.warning(kv(event="mqtt_refused", broker=self.shown, reason=str(reason)))
            return
        log.info(kv(event="mqtt_connected", broker=self.shown))
        client.publish(self.topic("status"), "online", qos=1, retain=True)
        with self._lock:
            states = dict(self._availability)
        for camera, up in states.items():
            self._publish_availability(camera, up)
        self.retry_now()

    def _disconnected(self, client: mqtt.Client, userdata, flags, reason, properties) -> None:
        if not self.stopping.is_set():
            log.warning(kv(event="mqtt_disconnected", broker=self.shown, reason=str(reason)))

    def _publish_availability(self, camera: str, up: bool) -> mqtt.MQTTMessageInfo:
        return self._client.publish(self.topic("cameras", camera, "availability"), "online" if up else "offline",
                                    qos=1, retain=True)


def default_client_id(site: str, shard: tuple[int, int] | None) -> str:
    """Unique per daemon: the broker drops the older of two connections with one id."""
    suffix = f"-shard{shard[0]}of{shard[1]}" if shard else ""
    return f"har-monitor-{site}-{socket.gethostname()}{suffix}"[:128]
