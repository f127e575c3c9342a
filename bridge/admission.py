"""Admission to work that is costly at once: at most `slots` holders; the others wait, and
the most urgent of them (lowest rank, then the earliest) goes in when a slot frees.

The intake holds one while it records a notification: in a storm the event loop serves a few
notifications at a time instead of hundreds in turn, and a critical's notification goes
ahead of the warnings queued before it (SPEC 6).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Admission:
    def __init__(self, slots: int) -> None:
        self.free = slots
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, future in self._waiting if not future.done())

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
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (rank, next(self._arrivals), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # handed a slot, then cancelled
                self._release()
            raise

    def _release(self) -> None:
        """Hand the slot to the most urgent waiter still waiting, else free it."""
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():  # a waiter that gave up has a cancelled future
                future.set_result(None)
                return
        self.free += 1
