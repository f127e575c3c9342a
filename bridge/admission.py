"""Admission to work that is costly at once: at most `slots` holders; the others wait, and
the most urgent of them (lowest rank, then the earliest) goes in when a slot frees, unless
the earliest of all has waited `patience` seconds: then it goes first, whatever its rank.

The intake holds one while it records a notification: in a storm the event loop serves a few
notifications at a time instead of hundreds in turn, and a critical's notification goes
ahead of the warnings queued before it (SPEC 6); a stream of criticals never holds a warning
back for longer than `patience` plus its own turn.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

# seconds a waiter waits before it goes ahead of more urgent ones: longer than a storm's
# usual wait for a slot (1-2 s on a 2-core VM), so severity keeps deciding then, and short
# enough that a warning is recorded before its sender gives up and retries
PATIENCE = 5.0


class _Waiter:
    __slots__ = ("future", "since")

    def __init__(self, future: asyncio.Future[None], since: float) -> None:
        self.future = future
        self.since = since


class Admission:
    def __init__(
        self,
        slots: int,
        patience: float = PATIENCE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = slots
        self.patience = patience
        self._clock = clock
        self._by_rank: list[tuple[int, int, _Waiter]] = []  # a heap
        self._by_arrival: deque[_Waiter] = deque()  # the same waiters, oldest first
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._by_arrival if not w.future.done())

    @asynccontextmanager
    async def slot(self, rank: int) -> AsyncIterator[None]:
        await self._acquire(rank)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, rank: int) -> None:
        if self.free > 0:  # then nobody waits: a freed slot goes to a waiter first
            self.free -= 1
            return
        waiter = _Waiter(asyncio.get_running_loop().create_future(), self._clock())
        heapq.heappush(self._by_rank, (rank, next(self._arrivals), waiter))
        self._by_arrival.append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():  # handed a slot
                self._release()
            raise

    def _release(self) -> None:
        """Hand the slot to the next waiter still waiting, else free it."""
        waiter = self._next()
        if waiter is None:
            self.free += 1
        else:
            waiter.future.set_result(None)

    def _next(self) -> _Waiter | None:
        """The earliest waiter if it has run out of patience, else the most urgent one.
        (A waiter that gave up, or went in, is dropped from both orders as it comes up.)"""
        while self._by_arrival and self._by_arrival[0].future.done():
            self._by_arrival.popleft()
        if self._by_arrival and self._clock() - self._by_arrival[0].since >= self.patience:
            return self._by_arrival.popleft()
        while self._by_rank:
            _, _, waiter = heapq.heappop(self._by_rank)
            if not waiter.future.done():
                return waiter
        return None
