"""One token bucket in front of every Pachca call, so the bridge stays under Pachca's limit
(about 50 requests/s per token) however many incidents change at once.

At most `burst + rate` calls start in any one-second window. A 429 pauses every caller until
Retry-After has passed and halves the pace; each success wins back a little of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

RECOVERY_PER_SUCCESS = 0.02  # of the configured rate
# requests per second: however many 429s come without Retry-After, never slower than this
# (or than the configured rate, if that is lower)
SLOWEST = 1.0
# a wait this long (seconds) is a pause ordered by a 429, reported through `on_pause`
PAUSE_REPORT_THRESHOLD = 1.0


def no_report(seconds: float) -> None:
    """The default `on_pause`: nobody is told."""


class Limiter(Protocol):
    """What the Pachca client needs from a rate limiter (this process's, or one shared by
    all replicas through Redis: `store.redis.SharedRateLimiter`)."""

    async def acquire(self) -> None: ...

    async def rate_limited(self, retry_after: float | None) -> None: ...

    async def succeeded(self) -> None: ...

    # called with the seconds a caller is about to wait out a 429 pause, so the loop that
    # waits is known to be waiting rather than stuck
    on_pause: Callable[[float], None]


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configured_rate = rate
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.on_pause: Callable[[float], None] = no_report

    async def acquire(self) -> None:
        """Wait for a token. Callers are served one at a time, in arrival order."""
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    self.on_pause(self._paused_until - now)
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._refill(now)
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def rate_limited(self, retry_after: float | None) -> None:
        """Pachca said 429: stop everyone for Retry-After (1 s if absent) and slow down."""
        now = self._clock()
        self._paused_until = max(self._paused_until, now + (retry_after or 1.0))
        self.rate = max(min(SLOWEST, self.configured_rate), self.rate / 2)
        self._tokens = 0.0
        self._updated = now

    async def succeeded(self) -> None:
        if self.rate < self.configured_rate:
            self.rate = min(
                self.configured_rate, self.rate + self.configured_rate * RECOVERY_PER_SUCCESS
            )
