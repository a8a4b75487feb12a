"""Log lines: key=value fields, one line per event, and no secret whatever characters it holds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.ops.logs import kv, redact, redact_url
from support.secrets import MARK, passwords, secret_text

secrets = secret_text()
schemes = st.sampled_from(["rtsp", "rtsps", "http", "https"])
hosts = st.sampled_from(["10.0.0.21", "cam-7.plant.local:554", "[fe80::1]:8554", "127.0.0.1:1"])
paths = st.sampled_from(["", "/", "/stream1", "/cam/realmonitor?channel=1&subtype=0", "/axis-media/media.amp#x"])


@pytest.mark.parametrize("url, shown", [
    ("rtsp://admin:hunter2@10.0.0.21:554/stream1", "rtsp://admin:***@10.0.0.21:554/stream1"),
    ("rtsps://cam.local/live?user=x&password=hunter2", "rtsps://cam.local/live?user=x&password=***"),
    ("http://u:p%40ss@host/mjpeg", "http://u:***@host/mjpeg"),
    ("http://cam/video.cgi?user=a&pwd=se cr#et&res=1", "http://cam/video.cgi?user=a&pwd=***&res=1"),
    ("rtsp://viewer:pa/ss@10.0.0.21/s", "rtsp://viewer:***@10.0.0.21/s"),
    ("rtsp://viewer:pa#ss@10.0.0.21/s", "rtsp://viewer:***@10.0.0.21/s"),
    ("rtsp://viewer:p@ss/x?y#z@10.0.0.21/s", "rtsp://viewer:***@10.0.0.21/s"),
    ("https://TOKEN123@api.cam.example/stream", "https://***@api.cam.example/stream"),  # a bare user may be a token
    ("clips/demo.mp4", "clips/demo.mp4"),
    ("/data/me@work/clip.mp4", "/data/me@work/clip.mp4"),
])
def test_urls_are_redacted(url, shown):
    assert redact_url(url) == shown


def test_urls_inside_error_messages_are_redacted():
    text = "[Errno 111] Connection refused: 'rtsp://admin:hunter2@127.0.0.1:1/s' (no route)"
    assert redact(text) == "[Errno 111] Connection refused: 'rtsp://admin:***@127.0.0.1:1/s' (no route)"
    # Where a URL ends in a text is unknown (a password may hold spaces, quotes, `x://`): the credentials
    # run to the last @, so two URLs with credentials show the last host only, and neither password.
    two = redact("'rtsp://a:hunter2@h1/s' then 'http://b:swordfish@h2/x'")
    assert two == "'rtsp://a:***@h2/x'"
    assert redact("no URL here, user@example.com") == "no URL here, user@example.com"


@given(scheme=schemes, user=secrets, password=passwords(), host=hosts, path=paths)
def test_no_password_survives_redact_url(scheme, user, password, host, path):
    """Whatever a password (or a user name) holds, the URL is shown as scheme://user:***@host/path."""
    url = f"{scheme}://{user}:{password}@{host}{path}"
    assert redact_url(url) == f"{scheme}://{user.partition(':')[0]}:***@{host}{path}"


@given(password=passwords(), quoting=st.sampled_from(["repr", "plain"]),
       message=st.sampled_from(["[Errno 111] Connection refused: {}", "Invalid argument: {} returned 22",
                                "cannot open {} (timeout after 10 s)"]))
def test_no_password_survives_redact_of_an_error_message(password, quoting, message):
    """FFmpeg's errors quote the URL, escaped (repr) or not: the message keeps everything but the password."""
    url = f"rtsp://viewer:{password}@127.0.0.1:1/stream"
    quoted = repr(url) if quoting == "repr" else f"'{url}'"
    shown = redact(message.format(quoted))
    quote = quoted[0]
    assert shown == message.format(f"{quote}rtsp://viewer:***@127.0.0.1:1/stream{quote}")


def test_log_fields_are_key_value():
    assert kv(event="camera_down", camera="line 1", retry_in_s=1.25) == 'event=camera_down camera="line 1" retry_in_s=1.250'


@given(value=secrets, password=passwords())
def test_a_log_line_stays_one_line_and_shows_no_password(value, password):
    line = kv(event="camera_down", url=f"rtsp://viewer:{password}@10.0.0.21/s", reason=value)
    assert "\n" not in line and "\r" not in line
    assert MARK not in line
