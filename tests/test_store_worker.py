"""The SQLite store's thread serves waiting webhooks before queued background work, but never
starves it."""

import asyncio
import threading
import time

import pytest

from bridge.store.worker import BACKGROUND, BACKGROUND_WAIT, URGENT, PriorityWorker


async def test_urgent_calls_overtake_queued_background_work() -> None:
    worker = PriorityWorker("test-store", background_wait=60)
    gate = threading.Event()
    order: list[str] = []

    def hold() -> None:
        gate.wait(5)

    def record(name: str) -> None:
        order.append(name)

    busy = asyncio.ensure_future(worker.run(hold, BACKGROUND))
    await asyncio.sleep(0.05)  # the worker is now inside `hold`
    queued = [
        asyncio.ensure_future(worker.run(lambda n=n: record(n), BACKGROUND))
        for n in ("outbox-1", "outbox-2")
    ]
    await asyncio.sleep(0.01)
    urgent = asyncio.ensure_future(worker.run(lambda: record("webhook"), URGENT))
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(busy, *queued, urgent)
    assert order == ["webhook", "outbox-1", "outbox-2"]
    worker.stop()


async def test_background_work_gets_a_turn_in_a_stream_of_urgent_calls() -> None:
    """A storm's webhooks keep the thread busy: a background call that has waited
    BACKGROUND_WAIT goes next, so messages reach the chat during the storm, not after it."""
    worker = PriorityWorker("test-store")
    gate = threading.Event()
    order: list[str] = []

    def hook() -> None:
        time.sleep(BACKGROUND_WAIT / 4)
        order.append("hook")

    busy = asyncio.ensure_future(worker.run(lambda: gate.wait(5), BACKGROUND))
    await asyncio.sleep(0.05)
    calls = [asyncio.ensure_future(worker.run(lambda: order.append("outbox"), BACKGROUND))]
    await asyncio.sleep(BACKGROUND_WAIT * 2)
    calls += [asyncio.ensure_future(worker.run(hook, URGENT)) for _ in range(40)]
    await asyncio.sleep(0.01)
    gate.set()  # the outbox call has waited long enough already: it goes first
    await asyncio.gather(busy, *calls)
    assert order.index("outbox") == 0
    # queued behind a stream of webhooks, another gets its turn after about BACKGROUND_WAIT
    calls = [asyncio.ensure_future(worker.run(hook, URGENT)) for _ in range(40)]
    calls.append(asyncio.ensure_future(worker.run(lambda: order.append("outbox 2"), BACKGROUND)))
    await asyncio.gather(*calls)
    assert 41 + 2 <= order.index("outbox 2") <= 41 + 10, order.index("outbox 2")
    worker.stop()


async def test_errors_reach_the_caller() -> None:
    worker = PriorityWorker("test-store")

    def fail() -> None:
        raise ValueError("disk on fire")

    with pytest.raises(ValueError, match="disk on fire"):
        await worker.run(fail, URGENT)
    assert await worker.run(lambda: 42) == 42
    worker.stop()
