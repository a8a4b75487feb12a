"""site.yaml's `notify:` section: where violation episodes are pushed (MQTT, webhooks) and which go where.

```yaml
notify:
  console_url: https://qa.plant-7.example        # payloads then carry the episode's snapshot URL
  mqtt: {host: broker.plant-7, port: 8883, tls: true, username: "${MQTT_USER}", password: "${MQTT_PASSWORD}"}
  webhooks:
    shift-leads: {url: "https://hooks.plant-7.example/har", secret: "${SHIFT_LEADS_SECRET}"}
  by_severity: {critical: [mqtt, shift-leads], major: [mqtt]}   # rules without their own `notify:`
```
Target names: `mqtt` (the broker) and each webhook's name. Secrets come from the environment
(`${VAR}`), and none is ever logged.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from monitor.yamlfile import StrictModel

MQTT_TARGET = "mqtt"
TargetName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
TopicPart = Annotated[str, Field(pattern=r"^[^#+/\x00]+(/[^#+/\x00]+)*$", max_length=128)]


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return url


class MqttConfig(StrictModel):
    """The MQTT broker: episodes on `<topic_prefix>/<site>/violations/<camera>` (QoS 1), retained camera
    availability on `<topic_prefix>/<site>/cameras/<camera>/availability`, and the daemon's status (with a
    last will) on `<topic_prefix>/<site>/status`."""

    host: str = Field(min_length=1, max_length=253, description="The broker's host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="The broker's port (1883; 8883 with TLS).")
    tls: bool = Field(default=False, description="Connect with TLS (the broker's certificate is verified).")
    ca_file: str | None = Field(default=None, description="With `tls`: the CA certificates (PEM) that signed the "
                                "broker's certificate (default: the system's). Relative to site.yaml.")
    cert_file: str | None = Field(default=None, description="With `tls`: a client certificate (PEM), for brokers "
                                  "that require one.")
    key_file: str | None = Field(default=None, description="With `cert_file`: its private key (PEM).")
    username: str | None = Field(default=None, max_length=256, description="Broker user: `${MQTT_USER}`.")
    password: str | None = Field(default=None, max_length=1024, description="Broker password: `${MQTT_PASSWORD}` "
                                 "(from the environment; never logged).")
    topic_prefix: TopicPart = Field(default="har-monitor", description="The first levels of every topic.")
    client_id: str | None = Field(default=None, max_length=128, description="MQTT client id (default: "
                                  "`har-monitor-<site>-<host>`, with the shard).")
    keepalive_seconds: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive: the broker publishes "
                                   "the daemon's last will (status `offline`) about 1.5x this long after it vanished.")

    @model_validator(mode="after")
    def _tls_files(self) -> MqttConfig:
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            raise ValueError("ca_file, cert_file and key_file need `tls: true`")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        return self


class WebhookConfig(StrictModel):
    """An HTTP endpoint: each episode opened and closed is POSTed as JSON, signed with HMAC-SHA256."""

    url: str = Field(description="Where to POST (http:// or https://). Keep tokens out of it: use `secret`.")
    secret: str = Field(min_length=16, max_length=1024, description="The HMAC-SHA256 key of the "
                        "`X-Har-Monitor-Signature` header: `${VAR}` from the environment, at least 16 characters.")
    timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="How long one POST may take.")

    _url = field_validator("url")(_http_url)


class NotifyConfig(StrictModel):
    """Violation episodes pushed to the plant's systems through a durable outbox: never lost while a target is
    down, delivered at least once and in order when it returns."""

    outbox: str = Field(default="spool/notify.db", description="The durable outbox (SQLite): notifications wait "
                        "here until their target has them. Relative to site.yaml.")
    console_url: str | None = Field(default=None, description="The QA console's base URL: payloads then carry "
                                    "`snapshot_url` = `<console_url>/violations/<id>/snapshot`.")
    mqtt: MqttConfig | None = Field(default=None, description="The MQTT broker (target name `mqtt`).")
    webhooks: dict[TargetName, WebhookConfig] = Field(default_factory=dict, description="Named webhook targets.")
    by_severity: dict[Literal["info", "minor", "major", "critical"], list[TargetName]] | None = Field(
        default=None, description="Targets per severity, for rules without their own `notify:` (default: every "
        "target gets every episode; a severity left out here goes nowhere).")
    retry_initial_seconds: float = Field(default=1.0, gt=0, le=600, description="First retry delay after a failed "
                                         "delivery; it doubles (with jitter) up to `retry_max_seconds`.")
    retry_max_seconds: float = Field(default=60.0, gt=0, le=3600, description="Longest retry delay.")

    _console = field_validator("console_url")(lambda url: None if url is None else _http_url(url).rstrip("/"))

    @property
    def targets(self) -> list[str]:
        return ([MQTT_TARGET] if self.mqtt else []) + list(self.webhooks)

    @model_validator(mode="after")
    def _names(self) -> NotifyConfig:
        if MQTT_TARGET in self.webhooks:
            raise ValueError(f"webhooks: '{MQTT_TARGET}' names the MQTT broker: give the webhook another name")
        if not self.targets:
            raise ValueError("notify needs `mqtt`, `webhooks` or both")
        for severity, names in (self.by_severity or {}).items():
            unknown = [n for n in names if n not in self.targets]
            if unknown:
                raise ValueError(f"by_severity.{severity}: unknown target {', '.join(map(repr, unknown))} "
                                 f"(defined: {', '.join(self.targets)})")
        if self.retry_initial_seconds > self.retry_max_seconds:
            raise ValueError("retry_initial_seconds must not exceed retry_max_seconds")
        return self

    def route(self, severity: str, rule_targets: list[str] | None) -> list[str]:
        """The targets of an episode: its rule's `notify:` if it has one, else by severity."""
        if rule_targets is not None:
            return [t for t in rule_targets if t in self.targets]
        if self.by_severity is None:
            return self.targets
        return list(self.by_severity.get(severity, []))  # type: ignore[call-overload]
