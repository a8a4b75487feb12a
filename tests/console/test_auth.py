"""Sessions expire (idle and absolute) and failed sign-ins are limited per client: the rules alone."""

from __future__ import annotations

from monitor.console.auth import LoginThrottle, SessionStore, same_token
from support.waiting import wait_until


def test_a_session_ends_when_idle_too_long_and_after_its_lifetime():
    idle = SessionStore(idle_seconds=0.3, absolute_seconds=3600)
    session = idle.new("rita")
    assert idle.get(session.id) is session
    wait_until(lambda: idle.get(session.id) is None, 10, "the idle session to expire", interval=0.4)

    lifetime = SessionStore(idle_seconds=3600, absolute_seconds=0.5)
    session = lifetime.new("rita")
    # used all the time (every poll is a use), it still ends
    wait_until(lambda: lifetime.get(session.id) is None, 10, "the session to end at its lifetime")
    assert lifetime.get("made-up-id") is None and lifetime.get(None) is None


def test_sessions_are_random_and_a_disabled_user_is_signed_out_everywhere():
    store = SessionStore()
    a, b, c = store.new("rita"), store.new("rita"), store.new("vic")
    assert len({a.id, b.id, c.id, a.csrf, b.csrf}) == 5 and len(a.id) >= 40
    store.drop_user("rita")
    assert store.get(a.id) is None and store.get(b.id) is None and store.get(c.id) is c
    assert same_token(c.csrf, c.csrf) and not same_token(None, c.csrf) and not same_token(a.csrf, c.csrf)


def test_failed_sign_ins_are_limited_per_client_for_a_window():
    throttle = LoginThrottle(limit=3, window=0.5)
    assert [throttle.failed("10.0.0.1") for _ in range(3)] == [1, 2, 3]
    assert throttle.retry_after("10.0.0.1") > 0 and throttle.retry_after("10.0.0.2") == 0
    wait_until(lambda: throttle.retry_after("10.0.0.1") == 0, 10, "the window to pass")
