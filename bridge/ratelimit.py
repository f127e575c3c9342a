"""One token bucket in front of every Pachca call, so the bridge stays under Pachca's limit
(about 50 requests/s per token) however many incidents change at once, and close to it in a
storm.

The pace adapts (AIMD): it starts at the configured rate; while calls wait for it and Pachca
accepts them, it grows, never beyond the configured maximum; a 429 pauses every caller until
Retry-After has passed and sets the pace a tenth below the calls made in the second before the
refused one (what Pachca counted). One 429 event cuts once, however many calls in flight it
answers. A lone 429 may be calls that reached Pachca bunched (see JITTER): the pace grows back
past it. A second one within ten minutes confirms the limit: for ten minutes after it the pace
stays a call under what it refused, or at the configured rate if that is higher. Calls
someone waits for (`URGENT`: a press's edit and DM) take the next free call ahead of the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

# requests per second: however many 429s come without Retry-After, never slower than this
# (or than the configured rate, if that is lower)
SLOWEST = 1.0
# a wait this long (seconds) is a pause ordered by a 429, reported through `on_pause`
PAUSE_REPORT_THRESHOLD = 1.0
# the pace grows only while calls wait for it: for this long (seconds) after a caller waited
BUSY_FOR = 1.0
# call starts are remembered this long (seconds): the window, and the second before a refused
# call answered a little later (what Pachca counted when it refused)
STARTS_KEPT_FOR = 2.0


# seconds: calls reach Pachca up to this much closer together than they started (this event
# loop and Pachca's busy, the network), so the window is that much longer than the pace alone
# would make it. A call's worth of slack is 20 ms at 50/s: without it, a pace a call under
# Pachca's limit still met a 429 (a one-second pause for every caller) two or three times per
# storm; with it, at 48-49/s, none or one (when calls came more than 30 ms bunched).
JITTER = 0.03


def window(rate: float) -> tuple[int, float]:
    """At most this many calls start in any window of this many seconds at `rate` calls/s: a
    whole number of calls, one at least, over about a second plus JITTER (rate 49.5: 49 in
    1.02 s)."""
    calls = max(1, int(rate))
    return calls, calls / rate + JITTER


def no_report(seconds: float) -> None:
    """The default `on_pause`: nobody is told."""


@dataclass(frozen=True)
class Pace:
    """The arithmetic of the adaptive pace (requests/s), shared by this process's limiter and
    the one all replicas share through Redis (`store.redis.SharedRateLimiter`, in Lua)."""

    start: float  # PACHCA_RATE_LIMIT
    most: float  # PACHCA_RATE_MAX: never faster
    # growth in requests/s per second of accepted calls, as a share of `start` (per second,
    # not per call: Pachca's answer to a pace shows only after a second of it)
    fast: float = 0.1
    cut: float = 0.9  # a 429 sets the pace to this share of what Pachca refused
    # a 429 this long (seconds) after another confirms the limit: the pace stays a call under
    # what it refused for this long; after it, it probes again (the limit may have been
    # raised, or shared with another user)
    memory: float = 600.0

    @property
    def least(self) -> float:
        return min(SLOWEST, self.start)

    def after_success(self, rate: float, ceiling: float) -> float:
        """The pace after an accepted call; `ceiling`: what the last confirmed 429 refused
        (0: none). The pace always grows back to `start`, the rate the operator says Pachca
        allows: a ceiling holds it only above that. (429s with few calls of ours before them,
        Pachca's fault or another user of the token, had halved the pace down to 1/s and
        held it there for ten minutes.)"""
        grown = min(self.most, rate + self.fast * self.start / rate)
        return min(grown, max(rate, ceiling - 1, self.start)) if ceiling else grown

    def after_429(self, rate: float, observed: int) -> tuple[float, float]:
        """(pace, ceiling) after a 429 that came when `observed` calls had started in the
        second before it: Pachca refused that many (or the pace, if lower), so go a cut below
        it. One 429 at most halves the pace: few calls of ours refused means someone else
        spends the token's limit too, which a second 429 will show if it lasts."""
        ceiling = max(self.least, min(rate, max(observed, rate / 2)))
        return max(self.least, ceiling * self.cut), ceiling


class Limiter(Protocol):
    """What the Pachca client needs from a rate limiter (this process's, or one shared by
    all replicas through Redis: `store.redis.SharedRateLimiter`)."""

    async def acquire(self) -> None: ...

    # `took`: seconds from the refused call's start to its answer
    async def rate_limited(self, retry_after: float | None, took: float = 0.0) -> None: ...

    async def succeeded(self) -> None: ...

    # the pace in requests/s, as last known (exported as bridge_pachca_pace)
    rate: float

    # called with the seconds a caller is about to wait out a 429 pause, so the loop that
    # waits is known to be waiting rather than stuck
    on_pause: Callable[[float], None]


# set by the outbox for the calls of a delivery someone waits for (a press's edit and DM): they
# take the next free call before everyone queued, not after them
URGENT: ContextVar[bool] = ContextVar("pachca_call_urgent", default=False)


@contextmanager
def urgency(urgent: bool) -> Iterator[None]:
    """Pachca calls made inside go ahead of the queued ones when `urgent` (see URGENT)."""
    token = URGENT.set(urgent)
    try:
        yield
    finally:
        URGENT.reset(token)


class RateLimiter:
    """This process's pace: a token bucket (`burst` calls at once, then one per 1/pace s) that
    also never lets more calls start in a window than the pace allows (`window`), so a bucket
    refilled while calls were answered adds no overshoot on top of a full second."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        most: float | None = None,
    ) -> None:
        self.pace = Pace(rate, max(rate, most or rate))
        self.rate = rate
        self.ceiling = 0.0  # what the last 429 refused (0: none remembered)
        self.confirmed = False  # a 429 came within `memory` before that one: the pace stays under
        self._ceiling_at = 0.0
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._updated = clock()
        self._paused_until = 0.0
        self._busy_until = 0.0
        self._started: deque[float] = deque()  # when the calls of the last 2 s started
        self._lock = asyncio.Lock()
        self._urgent = 0  # URGENT callers waiting: the caller being served lets them go first
        self.on_pause: Callable[[float], None] = no_report

    async def acquire(self) -> None:
        """Wait for a token. Callers are served one at a time, in arrival order, except
        `URGENT` ones: they take the next token before the caller being served."""
        if URGENT.get():
            self._urgent += 1
            try:
                await self._take(urgent=True)
            finally:
                self._urgent -= 1
            return
        async with self._lock:
            await self._take(urgent=False)

    async def _take(self, urgent: bool) -> None:
        while True:
            now = self._clock()
            if now < self._paused_until:
                self.on_pause(self._paused_until - now)
                await asyncio.sleep(self._paused_until - now)
                continue
            self._refill(now)
            calls, seconds = window(self.rate)
            while self._started and self._started[0] <= now - STARTS_KEPT_FOR:
                self._started.popleft()
            recent = [t for t in self._started if t > now - seconds]
            free = self._tokens >= 1 and len(recent) < calls
            if free and (urgent or not self._urgent):
                self._tokens -= 1
                self._started.append(now)
                return
            self._busy_until = now + BUSY_FOR  # the pace is what holds calls back
            wait = (1 - self._tokens) / self.rate
            if len(recent) >= calls:
                wait = max(wait, recent[0] + seconds - now)
            await asyncio.sleep(max(wait, 0.001))

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def rate_limited(self, retry_after: float | None, took: float = 0.0) -> None:
        """Pachca said 429, `took` seconds after the refused call started: stop everyone for
        Retry-After (1 s if absent) and slow down, once per event (a 429 answering a call
        sent before the pause began cuts nothing more)."""
        now = self._clock()
        if now >= self._paused_until:
            sent = now - took  # what Pachca counted: the calls of the second before this one
            observed = sum(1 for started in self._started if sent - 1.0 < started < sent)
            self.confirmed = bool(self.ceiling) and now <= self._ceiling_at + self.pace.memory
            self.rate, self.ceiling = self.pace.after_429(self.rate, observed)
            self._ceiling_at = now
        self._paused_until = max(self._paused_until, now + (retry_after or 1.0))
        self._tokens = 0.0
        self._updated = now

    async def succeeded(self) -> None:
        """Pachca accepted a call: a little faster, if the pace is what holds calls back."""
        now = self._clock()
        if self.ceiling and now > self._ceiling_at + self.pace.memory:
            self.ceiling, self.confirmed = 0.0, False  # probe again
        if now < self._busy_until:
            held = self.ceiling if self.confirmed else 0.0
            self.rate = self.pace.after_success(self.rate, held)
