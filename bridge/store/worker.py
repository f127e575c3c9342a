"""One thread that runs every SQLite call, in order of urgency, without starving the rest.

Serialising all calls on one thread makes SQLite's compare-and-set trivially safe, but a
notification waiting behind a queue of outbox bookkeeping would keep Alertmanager waiting. So
calls carry a priority: the intake's (is this new? record it) run before queued background work.
But not always: in a storm the intake alone can keep the thread busy, and then nothing would
reach the chat until the storm ends. So a background call that has waited `BACKGROUND_WAIT`
goes next (the outbox keeps delivering during a storm, at a bounded cost to the intake: at
most one background call per `BACKGROUND_WAIT` overtakes a waiting webhook).

Calls that queue up while the thread is busy run together: `together` (the store's one
transaction, one commit: in a storm most of a write's cost is its commit) takes them one after
another, in the same order as above, for at most `GROUP_MAX` calls or `GROUP_SECONDS`. Each
caller gets its own result or exception, and only once the whole group is done, so nobody sees
a write that might still be undone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

URGENT = 0  # a webhook or a press is waiting for the answer
BACKGROUND = 1  # outbox, housekeeping, scheduler
BACKGROUND_WAIT = 0.02  # seconds: a background call waiting this long goes next
# a group of calls ends after this many, or once it has run this long (its first caller
# waits for the rest)
GROUP_MAX = 32
GROUP_SECONDS = 0.005

Outcome = tuple[Any, BaseException | None]  # a call's result, or what it raised
# runs the calls it takes from the iterator, returns an outcome for each; raises if all failed
Together = Callable[[Iterator[Callable[[], Any]]], list[Outcome]]


class _Call:
    __slots__ = ("alone", "fn", "future", "loop", "outcome", "queued_at")

    def __init__(
        self,
        fn: Callable[[], Any],
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[Any] | None,
        alone: bool,
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future
        self.queued_at = time.monotonic()
        self.alone = alone  # run by itself, outside `together` (opening, closing)
        self.outcome: Outcome = (None, None)  # set on the thread once it has run


def one_by_one(fns: Iterable[Callable[[], Any]]) -> list[Outcome]:
    """Run each call by itself: a failure is its own."""
    outcomes: list[Outcome] = []
    for fn in fns:
        try:
            outcomes.append((fn(), None))
        except BaseException as exc:  # handed to the awaiting caller
            outcomes.append((None, exc))
    return outcomes


def _settle(calls: list[_Call]) -> None:
    """On the callers' event loop: hand each caller its outcome (unless it stopped waiting)."""
    for call in calls:
        result, error = call.outcome
        future = call.future
        if future is None or future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


_STOP = _Call(lambda: None, None, None, alone=True)  # queued by `stop` behind everything


class PriorityWorker:
    def __init__(
        self,
        name: str,
        background_wait: float = BACKGROUND_WAIT,
        together: Together = one_by_one,
        group_max: int = GROUP_MAX,
    ) -> None:
        self.background_wait = background_wait
        self.together = together
        self.group_max = group_max
        self._queues: tuple[deque[_Call], deque[_Call]] = (deque(), deque())
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _next_queue(self) -> deque[_Call] | None:
        """The queue whose head runs next; None if both are empty."""
        urgent, background = self._queues
        if background and (
            not urgent or time.monotonic() - background[0].queued_at >= self.background_wait
        ):
            return background
        return urgent or None

    def _take(self) -> _Call:
        """The next call; waits for one."""
        with self._ready:
            while (queue := self._next_queue()) is None:
                self._ready.wait()
            return queue.popleft()

    def _more(self, taken: list[_Call]) -> Iterator[Callable[[], Any]]:
        """`taken`'s call, then each call that would run next, while they may run together;
        every call yielded is appended to `taken`."""
        yield taken[0].fn
        began = time.monotonic()
        while len(taken) < self.group_max and time.monotonic() - began < GROUP_SECONDS:
            with self._ready:
                queue = self._next_queue()
                if queue is None or queue[0].alone:
                    return
                call = queue.popleft()
            if call.future is not None and call.future.cancelled():
                continue
            taken.append(call)
            yield call.fn

    def _loop(self) -> None:
        while True:
            first = self._take()
            if first is _STOP:
                return
            if first.future is not None and first.future.cancelled():
                continue
            taken = [first]
            try:
                if first.alone:
                    outcomes = one_by_one([first.fn])
                else:
                    outcomes = self.together(self._more(taken))
            except BaseException as exc:  # the whole group failed (the thread lives on)
                outcomes = [(None, exc)] * len(taken)
            for call, outcome in zip(taken, outcomes, strict=True):
                call.outcome = outcome
            for loop in {call.loop for call in taken if call.loop is not None}:
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                    loop.call_soon_threadsafe(_settle, [c for c in taken if c.loop is loop])

    def _put(self, priority: int, call: _Call) -> None:
        with self._ready:
            self._queues[min(priority, BACKGROUND)].append(call)
            self._ready.notify()

    async def run(self, fn: Callable[[], T], priority: int = BACKGROUND, alone: bool = False) -> T:
        """`fn`'s result, run on the thread; `alone`: never together with other calls."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put(priority, _Call(fn, loop, future, alone))
        return await future

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        with self._ready:
            # behind everything queued: the background queue ends with it
            self._queues[BACKGROUND].append(_STOP)
            self._ready.notify()
        self._thread.join()
