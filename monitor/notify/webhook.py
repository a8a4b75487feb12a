"""Webhooks: each notification POSTed as JSON, signed, with its idempotency key.

Headers:
- `X-Har-Monitor-Signature: sha256=<hex>`: HMAC-SHA256 of the exact body bytes with the target's secret
  (`hmac.compare_digest` it on the receiving side before trusting anything in the body);
- `Idempotency-Key: <episode id>:<opened|closed>`: the same on every retry, so a receiver that sees it
  twice (delivery is at least once) keeps one;
- `Content-Type: application/json`.

Any 2xx is delivered; anything else (another status, no connection, a timeout) is retried with backoff.
A 4xx is retried too: the usual one is a wrong secret or a receiver's outage page, and dropping the
notification would lose it; the failures are counted and logged until someone fixes it.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from monitor.notify.outbox import DeliveryError, Outbox

SIGNATURE_HEADER = "X-Har-Monitor-Signature"


def signature(secret: str, body: bytes) -> str:
    """The signature header's value.

    >>> signature("0123456789abcdef", b'{"id":"e1"}')
    'sha256=e68e74823193c76edb75fa44a138da74c8d4e70bb806b0a3a08322b961cce3b6'
    """
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookOutbox(Outbox):
    def __init__(self, target: str, url: str, secret: str, timeout: float, *args, **kwargs):
        super().__init__(target, *args, **kwargs)
        self.url = url
        self._secret = secret
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to the receiver

    def deliver(self, record: dict) -> None:
        body = record["body"].encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Idempotency-Key": record["key"],
            SIGNATURE_HEADER: signature(self._secret, body), "User-Agent": "har-monitor"})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:  # a status outside 2xx (redirects are followed)
            raise DeliveryError(f"HTTP {exc.code} from {urlsplit(self.url).hostname}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"{type(reason).__name__} reaching {urlsplit(self.url).hostname}") from None
