"""A real HTTP receiver for webhook tests: checks each signature, fails the first N calls, records everything.

    with WebhookReceiver(secret, fail_first=3) as hook:   # POST to hook.url
        ...
        hook.accepted   # [(idempotency key, parsed body)] of the calls answered 2xx, in order
        hook.calls      # every call: (status answered, idempotency key)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookReceiver:
    def __init__(self, secret: str, fail_first: int = 0, status: int = 503):
        self.secret = secret.encode()
        self.fail_first = fail_first
        self.status = status
        self.calls: list[tuple[int, str]] = []
        self.accepted: list[tuple[str, dict]] = []
        self.bad_signatures = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver._receive(self, body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks/har"

    def _receive(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        key = handler.headers.get("Idempotency-Key", "")
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(handler.headers.get("X-Har-Monitor-Signature", ""), expected)
        with self._lock:
            if not signed:
                self.bad_signatures += 1
                status = 401
            elif self.fail_first > 0:
                self.fail_first -= 1
                status = self.status
            else:
                status = 200
                self.accepted.append((key, json.loads(body)))
            self.calls.append((status, key))
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def keys(self) -> list[str]:
        with self._lock:
            return [key for key, _ in self.accepted]

    def __enter__(self) -> WebhookReceiver:
        # Polled every 50 ms for shutdown(), not 0.5 s: each test leaving its receiver would wait for the poll.
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
