"""Supervision of the bridge's background loops (outbox, scheduler, silence watch, poller,
pruning): each runs as a named task that is restarted when it fails, and reports every pass,
so `/healthz` can tell a loop that is down or stuck and Kubernetes restarts the pod.

A loop is given a `Pulse`. It calls `beat(idle)` at the end of each pass, saying how long it
will now sleep; `excuse(seconds)` says it is about to wait for a known reason (a 429 pause).
It is stalled once `BRIDGE_STALL_AFTER` has passed beyond what it announced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bridge.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0

# seconds: a task still running this long after it was cancelled is cancelled again. Python
# 3.11's asyncio.wait_for (used by redis-py for every socket write) loses a cancellation that
# arrives as the call it waits for completes: the task carries on, and a loop (`while True`)
# then runs for ever while whoever stops it waits for it for ever (the outbox of a replica
# being stopped did, and the claim keeper inside every outbox pass).
CANCEL_AGAIN_AFTER = 0.1

Loop = Callable[["Pulse"], Awaitable[None]]


@dataclass
class Pulse:
    """What one loop tells the supervisor: when it finished a pass, and what it waits for."""

    stall_after: float
    clock: Callable[[], float] = time.monotonic
    running: bool = False
    passes: int = 0
    deadline: float = field(init=False)  # stalled past this (monotonic seconds)

    def __post_init__(self) -> None:
        self.deadline = self.clock() + self.stall_after

    def beat(self, idle: float = 0.0) -> None:
        """A pass is done; the next one starts within `idle` seconds."""
        self.passes += 1
        self.deadline = self.clock() + idle + self.stall_after

    def excuse(self, seconds: float) -> None:
        """The loop is about to wait `seconds` for a reason that is not its fault."""
        self.deadline = max(self.deadline, self.clock() + seconds + self.stall_after)

    def stalled_for(self) -> float:
        """Seconds past the deadline (0 while the loop keeps its word)."""
        return max(0.0, self.clock() - self.deadline)


async def in_turns(items: list[T], size: int) -> AsyncIterator[list[T]]:
    """`items`, `size` at a time, the event loop turning between two: a pass over hundreds of
    incidents does not hold the intake's requests for all of them at once."""
    for start in range(0, len(items), size):
        if start:
            await asyncio.sleep(0)
        yield items[start : start + size]


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel `tasks` and return once every one has ended, cancelling again those that carry
    on (see CANCEL_AGAIN_AFTER). Their outcomes are retrieved, not raised. Cancelled while
    waiting, it still waits for them (a task left running could still send), then raises."""
    pending = {task for task in tasks if not task.done()}
    interrupted = False
    while pending:
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_AFTER)
        except asyncio.CancelledError:
            interrupted = True
            pending = {task for task in pending if not task.done()}
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: asyncio would log it as never retrieved
    if interrupted:
        raise asyncio.CancelledError


class Supervisor:
    def __init__(
        self, metrics: Metrics, stall_after: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.metrics = metrics
        self.stall_after = stall_after
        self.clock = clock
        self.pulses: dict[str, Pulse] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping = False  # set on shutdown: a loop that returns now is done, not failed

    def pulse(self, name: str) -> Pulse:
        """The pulse of loop `name` (made on first use, so wiring can hand it out early)."""
        if name not in self.pulses:
            self.pulses[name] = Pulse(self.stall_after, self.clock)
            self.metrics.background_restarts.labels(name)
        return self.pulses[name]

    def start(self, name: str, loop: Loop) -> None:
        pulse = self.pulse(name)
        self._tasks[name] = asyncio.create_task(self._keep(name, loop, pulse), name=name)

    async def _keep(self, name: str, loop: Loop, pulse: Pulse) -> None:
        """Run `loop` for ever: whatever ends it, log it, count it, and start it again after a
        delay that grows while it keeps failing without completing a pass."""
        failures = 0
        while True:
            passes = pulse.passes
            pulse.running = True
            try:
                await loop(pulse)
                if self.stopping:
                    pulse.running = False
                    return
                log.error("background task %s returned; restarting it", name)
            except asyncio.CancelledError:
                pulse.running = False
                raise
            except Exception:
                log.exception("background task %s failed; restarting it", name)
            pulse.running = False
            self.metrics.background_restarts.labels(name).inc()
            failures = 1 if pulse.passes > passes else failures + 1
            await asyncio.sleep(min(MAX_RESTART_DELAY, FIRST_RESTART_DELAY * 2 ** (failures - 1)))

    def task(self, name: str) -> asyncio.Task[None] | None:
        """The running task of loop `name` (None if it was never started or was stopped)."""
        return self._tasks.get(name)

    def problem(self, name: str) -> str | None:
        """What is wrong with loop `name`, or None while it runs and keeps its word."""
        task, pulse = self._tasks.get(name), self.pulses.get(name)
        if task is None or pulse is None:
            return None  # not started (or stopped on shutdown)
        if task.done():
            return f"{name}: not running"
        if not pulse.running:
            return f"{name}: restarting after a failure"
        if (late := pulse.stalled_for()) > 0:
            return f"{name}: no pass completed for {late + self.stall_after:.0f}s"
        return None

    def problems(self) -> list[str]:
        """One line for each loop that is down or stalled; empty when all are well."""
        return [p for name in sorted(self._tasks) if (p := self.problem(name)) is not None]

    async def stop(self, names: list[str] | None = None) -> None:
        """Cancel the named loops (all when None) and wait for them to end."""
        for name in list(self._tasks) if names is None else names:
            task = self._tasks.pop(name, None)
            if task is None:
                continue
            await cancel_and_wait(task)
