"""Logging as one line per event with key=value fields, and URL redaction.

Every line is `<UTC time> level=... logger=... event=<name> key=value ...`: our code logs
`kv(event=..., ...)`; a line from a library (alembic, TensorFlow, a Python warning) is wrapped as
`event=library message="..."`; what TensorFlow's C++ runtime writes straight to stderr at import is
captured and logged the same way (`native_stderr_logged`). One line per event, whatever the text.

Why the standard library and not structlog: the libraries we run (alembic, TensorFlow, urllib3) log
through stdlib `logging` anyway, so a structlog setup would still need this formatter for them; our own
lines are already structured by `kv()`, and we need none of structlog's processors or context binding.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

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
    r"""Format fields as `key=value`, quoting values with spaces; URLs in values are redacted and line
    breaks escaped, so that whatever a value holds, a log line shows no secret and stays one line.

    >>> print(kv(event="camera_down", camera="line-1", reason='said "no"\nthen hung up', retry_in_s=2.0))
    event=camera_down camera=line-1 reason="said \"no\"\nthen hung up" retry_in_s=2.000
    """
    out = []
    for key, value in fields.items():
        text = f"{value:.3f}" if isinstance(value, float) else redact(str(value))
        if not text or any(c in text for c in ' "=\n\r'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'
        out.append(f"{key}={text}")
    return " ".join(out)


class _Formatter(logging.Formatter):
    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"
        message = record.getMessage()
        if not message.startswith("event="):  # a library's line: still one event per line
            message = kv(event="library", message=message)
        line = f"{stamp} level={record.levelname.lower()} logger={record.name} {message}"
        if record.exc_info:
            line += " exc=" + kv(x=self.formatException(record.exc_info).splitlines()[-1])[2:]  # redacted, quoted
        return line


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is now (it may have been replaced since, e.g. under pytest)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def setup_logging(level: str = "info") -> None:
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a library's warning is a log line too, not a multi-line print
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))  # its per-step chatter is not ours


_NATIVE_LEVEL = {"W": logging.WARNING, "E": logging.WARNING, "F": logging.ERROR}


@contextmanager
def native_stderr_logged(event: str) -> Iterator[None]:
    """Log what C/C++ code writes straight to file descriptor 2 inside the block, one `event=` line each.

    TensorFlow's runtime prints its startup notes to stderr at import, before Python logging can see
    them (TF_CPP_MIN_LOG_LEVEL no longer silences them). absl's prefixes set the level: notes (`I`) are
    debug; `W` and `E` are warnings, since an import that really fails raises (on a machine without a GPU
    TensorFlow says `E ... failed call to cuInit`, which is expected there).
    """
    native = logging.getLogger("native")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for text in captured.read().decode(errors="replace").splitlines():
                if text.strip():
                    level = _NATIVE_LEVEL.get(text[0], logging.DEBUG) if re.match(r"[IWEF]\d{4} ", text) else logging.DEBUG
                    native.log(level, kv(event=event, line=text))


def import_tensorflow() -> None:
    """Import TensorFlow with its runtime's stderr notes logged as events (commands that use it call this first)."""
    with native_stderr_logged("tensorflow_native"):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # CUDA reports what it finds (or not) now, into the log
