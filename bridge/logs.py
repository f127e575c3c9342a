"""Logging set-up: text or JSON lines, and no secret ever printed.

`RedactSecrets` replaces every configured secret value wherever it appears in a record, after
formatting, so a token inside an exception message or a URL is caught too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

REDACTED = "***"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key.startswith("ctx_"):
                entry[key[4:]] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class RedactingFormatter(logging.Formatter):
    """Wraps another formatter and blanks out secrets in its output."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


def setup_logging(level: str, fmt: str, secrets: Iterable[str]) -> None:
    inner: logging.Formatter = (
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(inner, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


# asyncio's words when accept() fails for want of file descriptors or memory; it then pauses
# accepting for a second and tries again, reporting each time
ACCEPT_FAILURE = "socket.accept() out of system resource"
ACCEPT_LOG_EVERY_SECONDS = 60.0


class QuietAcceptErrors:
    """An event loop exception handler that reports accept() failures at most once a minute
    (with how many were not reported) and hands everything else to the loop's default."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.logged_at = float("-inf")
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILURE:
            loop.default_exception_handler(context)
            return
        if self.clock() - self.logged_at < ACCEPT_LOG_EVERY_SECONDS:
            self.suppressed += 1
            return
        self.logged_at = self.clock()
        logging.getLogger("bridge.web").error(
            "cannot accept connections: %s (%d more like it in the last minute); raise the "
            "process's open-file limit or find what holds connections open",
            context.get("exception"),
            self.suppressed,
        )
        self.suppressed = 0
