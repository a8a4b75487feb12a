"""Logging as one line per event with key=value fields, and URL redaction."""

from __future__ import annotations

import logging
import re
import sys
import time

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_PARAM = re.compile(r"(?i)([?&;](?:pass(?:word)?|pwd|token|key|secret|auth|sig(?:nature)?)[^=&]*)=[^&]*")


def redact_url(url: str) -> str:
    """`rtsp://user:secret@host/path` -> `rtsp://user:***@host/path`; also hides secret query values.

    The credentials are everything between `scheme://` and the LAST `@`: a password may hold any
    character, `@`, `/`, `?`, `#`, quotes and spaces included, so neither a URL parser (which ends the
    host at the first `/`, `?` or `#`) nor the first `@` can say where it ends. A path or query with
    an `@` in it is hidden too: less is shown than could be, never more. Without a `:` the whole user
    part may be a token, so it is hidden as well. Text that is not a URL is returned unchanged.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return url
    start, at = scheme.end(), url.rfind("@")
    if at >= start:
        user, colon, _ = url[start:at].partition(":")
        url = url[:start] + (f"{user}:***" if colon else "***") + url[at:]
    return _SECRET_PARAM.sub(r"\1=***", url)


def redact(text: str) -> str:
    """Redact the URLs inside a free text (FFmpeg's errors quote the URL they failed on, escaped).

    Where a URL ends in a text cannot be known either (its password may hold spaces, quotes or
    `scheme://`), so the credentials run from the first `scheme://` to the last `@` of the text.
    """
    scheme = _SCHEME.search(text)
    return text if scheme is None else text[:scheme.start()] + redact_url(text[scheme.start():])


def kv(**fields: object) -> str:
    """Format fields as `key=value`, quoting values with spaces; URLs in values are redacted and line
    breaks escaped, so that whatever a value holds, a log line shows no secret and stays one line."""
    out = []
    for key, value in fields.items():
        text = f"{value:.3f}" if isinstance(value, float) else redact(str(value))
        if not text or any(c in text for c in ' "=\n\r'):
            text = '"' + text.replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'
        out.append(f"{key}={text}")
    return " ".join(out)


class _Formatter(logging.Formatter):
    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"
        line = f"{stamp} level={record.levelname.lower()} logger={record.name} {record.getMessage()}"
        if record.exc_info:
            line += " exc=" + repr(redact(self.formatException(record.exc_info).splitlines()[-1]))
        return line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (it may have been replaced since, e.g. under pytest)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: str = "info") -> None:
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))  # its per-step chatter is not ours
