"""A cancellation can be lost: Python 3.11's asyncio.wait_for (redis-py waits for every socket
write with it) returns the call's result when the call completes as the cancellation comes, and
the task carries on. Whatever stops a task must still end it: a replica's loops when it stops,
the claim keeper after every outbox pass, a delivery whose claim was lost (it would send on
while another replica holds its item)."""

import asyncio
from collections.abc import Awaitable
from typing import Any

from bridge.errors import StoreError
from bridge.metrics import Metrics
from bridge.store import Store
from bridge.tasks import Pulse, Supervisor, cancel_and_wait
from bridge.web.state import METRICS, OUTBOX
from tests.conftest import BridgeFactory, group, groups_in
from tests.faulty_store import FaultyStore
from tests.redis_server import RedisServer

STOPPED_WITHIN = 3.0  # seconds; a stop that loses the race never ends


async def ended(awaitable: Awaitable[Any], seconds: float = STOPPED_WITHIN) -> asyncio.Task[Any]:
    """The task of `awaitable`, once it has ended; fails if it runs past `seconds` (waited for
    without cancelling anything: a stop that never ends fails here rather than hangs)."""
    task = asyncio.ensure_future(awaitable)
    await asyncio.wait({task}, timeout=seconds)
    assert task.done(), f"still running after {seconds} s"
    return task


async def stubborn(pulse: Pulse) -> None:
    """A loop whose first cancellation is lost, as on a wait_for that completed meanwhile."""
    lost = False
    while True:
        try:
            pulse.beat(0.05)
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True


async def test_a_task_that_loses_its_cancellation_is_cancelled_until_it_ends() -> None:
    task = asyncio.create_task(stubborn(Pulse(stall_after=60)))
    await asyncio.sleep(0.01)
    await ended(cancel_and_wait(task))
    assert task.cancelled()


async def test_stopping_the_stopper_still_waits_for_what_it_stops() -> None:
    """Cancelled while it waits, it goes on stopping its tasks, then raises."""
    task = asyncio.create_task(stubborn(Pulse(stall_after=60)))
    await asyncio.sleep(0.01)
    stopper = asyncio.create_task(cancel_and_wait(task))
    await asyncio.sleep(0)
    stopper.cancel()
    assert (await ended(stopper)).cancelled()
    assert task.cancelled()


async def test_the_supervisor_stops_a_loop_that_lost_a_cancellation() -> None:
    supervisor = Supervisor(Metrics(), stall_after=60)
    supervisor.start("stubborn", stubborn)
    await asyncio.sleep(0.05)
    await ended(supervisor.stop())
    assert supervisor.task("stubborn") is None


async def test_the_outbox_stops_when_woken_as_it_is_cancelled(make_bridge: BridgeFactory) -> None:
    """The inbox wakes the idle outbox in the same moment the replica stops it: on 3.11 a
    wait_for around the wake-up would return and the outbox would poll on for ever."""
    bridge = await make_bridge()
    outbox = bridge.app[OUTBOX]
    running = asyncio.create_task(outbox.run())
    await asyncio.sleep(0.2)  # idle: nothing due
    outbox.wake()
    running.cancel()
    assert (await ended(running)).cancelled()


class LosesACancellation:
    """Wraps `inner` (a store, a Pachca client): its `method` answers `linger` seconds late
    and loses the first cancellation that comes meanwhile, carrying on to the answer."""

    def __init__(self, inner: Any, method: str, linger: float = 0.0) -> None:
        self.inner = inner
        self.method = method
        self.linger = linger
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)
        if name != self.method:
            return real

        async def call(*args: Any, **kwargs: Any) -> Any:
            answer = asyncio.ensure_future(self._late(real(*args, **kwargs)))
            while True:
                try:
                    return await asyncio.shield(answer)
                except asyncio.CancelledError:
                    if self.lost:
                        answer.cancel()
                        raise
                    self.lost += 1  # lost: waits on for the answer

        return call

    async def _late(self, call: Awaitable[Any]) -> Any:
        answer = await call
        await asyncio.sleep(self.linger)
        return answer


async def test_an_outbox_pass_ends_when_its_claim_keeper_loses_a_cancellation(
    make_bridge: BridgeFactory, redis_server: RedisServer
) -> None:
    """The pass's delivery ends while the keeper renews claims (1 s claims: every 0.33 s);
    the keeper, cancelled then, carries on: the pass must still end."""
    wrapped: list[LosesACancellation] = []

    def wrap(store: Store) -> LosesACancellation:
        wrapped.append(LosesACancellation(store, "hold", linger=1.0))
        return wrapped[-1]

    bridge = await make_bridge(store_url=redis_server.url, wrap_store=wrap, BRIDGE_CLAIM_TTL="1s")
    await wrapped[0].inner._redis.flushdb()
    assert (await bridge.post(group(0))).status == 200
    bridge.fake.delay = 0.6  # answered while the keeper waits for its renewal
    assert (await ended(bridge.app[OUTBOX].drain_once())).result() == 1
    assert wrapped[0].lost == 1
    assert groups_in(bridge.fake) == {"DiskFull0": 1}


async def test_a_delivery_that_lost_its_claim_is_stopped_even_if_a_cancellation_is_lost(
    make_bridge: BridgeFactory, redis_server: RedisServer
) -> None:
    """Redis refuses the renewals while Pachca takes 2.5 s over the create: the delivery is
    stopped before its 1 s claim lapses, though the first cancellation is lost."""
    faulty: list[FaultyStore] = []

    def wrap(store: Store) -> FaultyStore:
        faulty.append(FaultyStore(store))
        return faulty[-1]

    bridge = await make_bridge(
        store_url=redis_server.url, wrap_store=wrap, BRIDGE_CLAIM_TTL="1s", PACHCA_TIMEOUT="10s"
    )
    await faulty[0].inner._redis.flushdb()  # type: ignore[attr-defined]
    outbox = bridge.app[OUTBOX]
    client = LosesACancellation(outbox.pachca, "create_message")
    outbox.pachca = client
    assert (await bridge.post(group(0))).status == 200
    faulty[0].fail_next("hold", StoreError("injected: Redis unreachable"), times=100)
    bridge.fake.delay = 2.5
    started = asyncio.get_running_loop().time()
    assert await outbox.drain_once() == 1
    assert asyncio.get_running_loop().time() - started < 1.0, "sent on past its claim"
    assert client.lost == 1
    metrics = bridge.app[METRICS].registry
    assert metrics.get_sample_value("bridge_deliveries_abandoned_total") == 1
