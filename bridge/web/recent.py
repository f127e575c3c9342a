"""One read shared by the requests that want it at about the same time: what /stats shows is
read at most once a `fresh_for`, however many people refresh it during a storm."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Recent(Generic[T]):
    """The last value `read` gave, kept `fresh_for` seconds; requests that come while it is
    being read wait for that read instead of starting their own. A failed read is not kept:
    the next request reads again."""

    def __init__(self, fresh_for: float, clock: Callable[[], float]) -> None:
        self.fresh_for = fresh_for
        self.clock = clock
        self._value: tuple[float, T] | None = None
        self._reading: asyncio.Future[T] | None = None

    async def get(self, read: Callable[[], Awaitable[T]]) -> T:
        if self._value is not None and self.clock() - self._value[0] < self.fresh_for:
            return self._value[1]
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read(read))
        # shielded: one request going away does not cancel the read the others wait for
        return await asyncio.shield(self._reading)

    async def _read(self, read: Callable[[], Awaitable[T]]) -> T:
        started = self.clock()
        try:
            value = await read()
        finally:
            self._reading = None
        self._value = (started, value)
        return value
