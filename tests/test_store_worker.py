"""The SQLite store's thread serves waiting webhooks before queued background work."""

import asyncio
import threading

import pytest

from bridge.store.worker import BACKGROUND, URGENT, PriorityWorker


async def test_urgent_calls_overtake_queued_background_work() -> None:
    worker = PriorityWorker("test-store")
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


async def test_errors_reach_the_caller() -> None:
    worker = PriorityWorker("test-store")

    def fail() -> None:
        raise ValueError("disk on fire")

    with pytest.raises(ValueError, match="disk on fire"):
        await worker.run(fail, URGENT)
    assert await worker.run(lambda: 42) == 42
    worker.stop()
