"""One thread that runs every SQLite call, in order of urgency, without starving the rest.

Serialising all calls on one thread makes SQLite's compare-and-set trivially safe, but a
notification waiting behind a queue of outbox bookkeeping would keep Alertmanager waiting. So
calls carry a priority: the intake's (is this new? record it) run before queued background work.
But not always: in a storm the intake alone can keep the thread busy, and then nothing would
reach the chat until the storm ends. So a background call that has waited `BACKGROUND_WAIT`
goes next (the outbox keeps delivering during a storm, at a bounded cost to the intake: at
most one background call per `BACKGROUND_WAIT` overtakes a waiting webhook).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

URGENT = 0  # a webhook or a press is waiting for the answer
BACKGROUND = 1  # outbox, housekeeping, scheduler
BACKGROUND_WAIT = 0.02  # seconds: a background call waiting this long goes next

_Call = tuple[Callable[[], Any], "Future[Any] | None", float]  # (call, its future, queued at)


def _stop() -> None:
    """Queued by `stop` behind everything else: the thread ends when it comes to it."""


class PriorityWorker:
    def __init__(self, name: str, background_wait: float = BACKGROUND_WAIT) -> None:
        self.background_wait = background_wait
        self._queues: tuple[deque[_Call], deque[_Call]] = (deque(), deque())
        self._ready = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _next(self) -> _Call:
        with self._ready:
            while True:
                urgent, background = self._queues
                if background and (
                    not urgent or time.monotonic() - background[0][2] >= self.background_wait
                ):
                    return background.popleft()
                if urgent:
                    return urgent.popleft()
                self._ready.wait()

    def _loop(self) -> None:
        while True:
            fn, future, _ = self._next()
            if fn is _stop:
                return
            assert future is not None
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the awaiting caller
                future.set_exception(exc)

    def _put(self, priority: int, call: _Call) -> None:
        with self._ready:
            self._queues[min(priority, BACKGROUND)].append(call)
            self._ready.notify()

    async def run(self, fn: Callable[[], T], priority: int = BACKGROUND) -> T:
        future: Future[T] = Future()
        self._put(priority, (fn, future, time.monotonic()))
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        with self._ready:
            # behind everything queued: the background queue ends with it
            self._queues[BACKGROUND].append((_stop, None, 0.0))
            self._ready.notify()
        self._thread.join()
