"""Who is signed in: server-side sessions (idle and absolute expiry), CSRF tokens, and a per-client
limit on failed sign-ins.

The browser holds only a random session id (an HttpOnly, SameSite=Strict cookie, Secure when
served over https); everything else stays in this process. Sessions do not survive a restart of
the console: users sign in again. Every form carries the session's CSRF token (a synchronizer
token): a form posted from another site cannot know it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

COOKIE = "har_console"
MAX_SESSIONS = 10_000  # anonymous sessions (the sign-in page) are evicted first beyond this


@dataclass
class Session:
    id: str
    csrf: str
    created: float  # monotonic
    seen: float
    user: str | None = None  # None: not signed in (the sign-in page's own session, for its CSRF token)
    flash: str | None = None  # a message for the next page shown (after a redirect)
    sign_form: dict = field(default_factory=dict)  # a refused signature's disposition and reason (never its password)


@dataclass
class SessionStore:
    idle_seconds: float = 15 * 60
    absolute_seconds: float = 8 * 3600
    _sessions: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def new(self, user: str | None = None) -> Session:
        now = time.monotonic()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, user)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._evict(now)
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (its idle clock restarted), or None when unknown or expired."""
        if not session_id:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[session_id]
                return None
            session.seen = now
            return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def drop_user(self, user: str) -> None:
        """Sign a user out everywhere (the account was disabled)."""
        with self._lock:
            for sid in [s.id for s in self._sessions.values() if s.user == user]:
                del self._sessions[sid]

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.seen > self.idle_seconds or now - session.created > self.absolute_seconds

    def _evict(self, now: float) -> None:
        """Under the lock: drop expired sessions, then the oldest anonymous ones, until there is room."""
        for sid in [s.id for s in self._sessions.values() if self._expired(s, now)]:
            del self._sessions[sid]
        anonymous = sorted((s for s in self._sessions.values() if s.user is None), key=lambda s: s.seen)
        for s in anonymous[:max(0, len(self._sessions) - MAX_SESSIONS + 1)]:
            del self._sessions[s.id]


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())


@dataclass
class LoginThrottle:
    """At most `limit` failed password checks per client within `window` seconds; then refused until
    the oldest failure leaves the window. A success does not reset the count (one valid account must
    not open the way to guessing another's password)."""

    limit: int = 5
    window: float = 15 * 60
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, client: str) -> float:
        """Seconds until this client may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent(client, now)
            return 0.0 if len(recent) < self.limit else recent[0] + self.window - now

    def failed(self, client: str) -> int:
        """Count a failure; returns the client's failures within the window."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent(client, now)
            recent.append(now)
            if len(self._failures) > MAX_SESSIONS:  # memory stays bounded whatever the number of clients
                for other in [c for c, q in self._failures.items() if not q or q[-1] < now - self.window]:
                    del self._failures[other]
            return len(recent)

    def _recent(self, client: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(client, deque())
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        return recent
