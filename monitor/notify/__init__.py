"""Violation episodes pushed to the plant's systems: MQTT and webhooks, through a durable outbox."""
