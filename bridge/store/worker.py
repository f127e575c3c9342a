"""One thread that runs every SQLite call, in order of urgency.

Serialising all calls on one thread makes SQLite's compare-and-set trivially safe, but a
notification waiting behind a queue of outbox bookkeeping would keep Alertmanager waiting. So
calls carry a priority: the intake's (is this new? record it) run before queued background work.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

URGENT = 0  # a webhook or a press is waiting for the answer
BACKGROUND = 1  # outbox, housekeeping, scheduler

_STOP = object()


class PriorityWorker:
    def __init__(self, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any, Future[Any] | None]] = (
            queue.PriorityQueue()
        )
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            _, _, fn, future = self._queue.get()
            if fn is _STOP:
                return
            assert future is not None
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the awaiting caller
                future.set_exception(exc)

    async def run(self, fn: Callable[[], T], priority: int = BACKGROUND) -> T:
        future: Future[T] = Future()
        self._queue.put((priority, next(self._order), fn, future))
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        self._queue.put((BACKGROUND + 1, next(self._order), _STOP, None))
        self._thread.join()
