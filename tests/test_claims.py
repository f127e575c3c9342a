"""Several replicas on one Redis: an outbox item is owned by one replica until its delivery
ends (claims renewed while it runs), and a replica that lost its claim records nothing."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from bridge.errors import ClaimLost, StoreError
from bridge.model import Delivery
from bridge.store import NewOutboxItem, Store
from bridge.store.redis import RedisStore
from bridge.web.state import METRICS, OUTBOX
from tests.conftest import BridgeFactory, Clock, group, groups_in
from tests.faulty_store import FaultyStore
from tests.redis_server import RedisServer
from tests.test_store_contract import incident


@pytest.fixture
async def two_replicas(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    prefix = f"claims-{uuid.uuid4().hex[:8]}:"
    a = RedisStore(redis_server.url, claim_ttl=0.5, prefix=prefix)
    b = RedisStore(redis_server.url, claim_ttl=0.5, prefix=prefix)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def test_a_held_claim_is_not_taken_and_a_lapsed_one_records_nothing(
    two_replicas: tuple[RedisStore, RedisStore],
) -> None:
    a, b = two_replicas
    await a.save_incident(incident(), None, [NewOutboxItem("create")], 1.0)
    (item,) = await a.due_items(1.0, 8)
    await a.begin_item(item.id, 1.5)
    for _ in range(4):  # a's delivery runs for 1.2 s, renewing its 0.5 s claim
        await asyncio.sleep(0.3)
        assert await a.hold(["r1"]) == ["r1"]
        assert await b.due_items(2.0, 8) == []
    await asyncio.sleep(0.7)  # a stops renewing (it froze): the claim lapses, b takes over
    (taken,) = await b.due_items(3.0, 8)
    assert taken.id == item.id and taken.begun_at == 1.5  # a's call may still land
    assert await a.hold(["r1"]) == []
    with pytest.raises(ClaimLost):
        await a.begin_item(item.id, 3.5)
    with pytest.raises(ClaimLost):
        await a.record_delivery("r1", Delivery(message_id=1))
    with pytest.raises(ClaimLost):
        await a.finish_item(item.id, ("r1", Delivery(message_id=1)))
    with pytest.raises(ClaimLost):
        await a.retry_item(item.id, 10.0, "late")
    stored = await b.load_by_ref("r1")
    assert stored is not None and stored.delivery.message_id is None  # a recorded nothing
    await b.finish_item(taken.id, ("r1", Delivery(message_id=2, rendered_version=1)))
    stored = await b.load_by_ref("r1")
    assert stored is not None and stored.delivery.message_id == 2
    assert (await b.outbox_stats(4.0)).depth == 0


async def test_a_delivery_longer_than_the_claim_ttl_is_not_taken_over(
    make_bridge: BridgeFactory, redis_server: RedisServer
) -> None:
    """Two bridges on one Redis with a 1 s claim; Pachca answers each call after 2.5 s. The
    bridge delivering keeps its claims; the other finds nothing to take; one message each."""
    url = redis_server.url
    env = {"BRIDGE_CLAIM_TTL": "1s", "PACHCA_TIMEOUT": "10s"}
    first = await make_bridge(store_url=url, **env)
    second = await make_bridge(store_url=url, **env)
    assert isinstance(first.store, RedisStore) and isinstance(second.store, RedisStore)
    await first.store._redis.flushdb()
    first.fake.delay = 2.5
    for n in range(3):
        assert (await first.post(group(n))).status == 200
    delivering = asyncio.create_task(first.app[OUTBOX].drain_once())
    for _ in range(5):
        await asyncio.sleep(0.5)
        assert await second.app[OUTBOX].drain_once() == 0, "took over a running delivery"
    assert await delivering == 3
    first.fake.delay = 0.0
    await first.deliver()
    await second.deliver()
    assert groups_in(first.fake) == {f"DiskFull{n}": 1 for n in range(3)}


async def test_a_delivery_whose_claim_cannot_be_renewed_stops_before_another_takes_it(
    make_bridge: BridgeFactory, redis_server: RedisServer
) -> None:
    """Redis refuses the first bridge's renewals while Pachca takes 2.5 s to answer its create
    (performed at once): the delivery is stopped before its 1 s claim lapses (and counted),
    the second bridge takes the item once it lapses, waits out the create in doubt, finds it
    in the chat and adopts it. Never two sends at once; one message."""
    url = redis_server.url
    env = {"BRIDGE_CLAIM_TTL": "1s", "PACHCA_TIMEOUT": "10s"}
    faulty: list[FaultyStore] = []

    def wrap(store: Store) -> FaultyStore:
        faulty.append(FaultyStore(store))
        return faulty[-1]

    first = await make_bridge(store_url=url, wrap_store=wrap, **env)
    clock = Clock(time.time())
    second = await make_bridge(store_url=url, **env)
    second.app[OUTBOX].clock = clock
    assert isinstance(second.store, RedisStore)
    await second.store._redis.flushdb()
    assert (await first.post(group(0))).status == 200
    faulty[0].fail_next("hold", StoreError("injected: Redis unreachable"), times=100)
    first.fake.delay = 2.5
    started = time.monotonic()
    assert await first.app[OUTBOX].drain_once() == 1
    assert time.monotonic() - started < 1.0, "ran on past its claim"
    metrics = first.app[METRICS].registry
    assert metrics.get_sample_value("bridge_deliveries_abandoned_total") == 1
    first.fake.delay = 0.0
    assert await second.app[OUTBOX].drain_once() == 0  # the claim has not lapsed yet
    await asyncio.sleep(0.5)
    clock.now += 31  # 3 x PACHCA_TIMEOUT after the create in doubt: time to look for it
    assert await second.app[OUTBOX].drain_once() == 1
    assert groups_in(second.fake) == {"DiskFull0": 1}
    (stored,) = await second.store.all_incidents()
    assert stored.delivery.message_id == second.fake.channel_messages()[0]["id"]
    assert (await second.store.outbox_stats(clock.now)).depth == 0
