"""Several bridge processes behind one Redis and one (fake) Pachca."""

import asyncio
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.sources.pachca import signature
from tests.conftest import fixture_bytes
from tests.fake_pachca import FakePachca
from tests.redis_server import RedisServer
from tests.test_callbacks import ALICE, click_body, dms
from tests.test_durability import BridgeProcess, group, groups_in, wait_for
from tests.test_ratelimit import busiest_second

SECRET = "replica-signing-secret"


@pytest.fixture
async def replicas(
    slow_pachca: tuple[FakePachca, str], redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[list[BridgeProcess]]:
    fake, url = slow_pachca
    client = aioredis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    bridges = [
        BridgeProcess(
            url,
            fake.token,
            tmp_path / f"replica{n}",
            store=redis_server.url,
            PACHCA_SIGNING_SECRET=SECRET,
            BRIDGE_CLAIM_TTL="2s",
            PACHCA_RATE_LIMIT="20",
            PACHCA_RATE_BURST="2",  # ~10% below the fake's 25, as the defaults are below 50
            PACHCA_RATE_MAX="20",  # a fixed pace (the adaptive one: tests/test_ratelimit.py)
        )
        for n in range(3)
    ]
    await asyncio.gather(*(b.start() for b in bridges))
    yield bridges
    for bridge in bridges:
        if bridge.proc is not None and bridge.proc.returncode is None:
            await bridge.stop(signal.SIGTERM)


async def post(
    url: str,
    body: bytes,
    path: str = "/webhook/alertmanager",
    headers: dict[str, str] | None = None,
) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url + path, data=body, headers={"Content-Type": "application/json", **(headers or {})}
        ) as resp,
    ):
        return resp.status


async def test_ha_copies_racing_to_two_replicas_make_one_message(
    replicas: list[BridgeProcess], slow_pachca: tuple[FakePachca, str]
) -> None:
    fake, _ = slow_pachca
    a = fixture_bytes("alertmanager-ha/10-unclustered-firing-from-am-0.json")
    b = fixture_bytes("alertmanager-ha/11-unclustered-firing-from-am-1.json")
    for _ in range(5):  # several rounds of the same pair, each at the same instant
        statuses = await asyncio.gather(
            post(replicas[0].url, a), post(replicas[1].url, b), post(replicas[2].url, a)
        )
        assert statuses == [200, 200, 200]
    await wait_for(lambda: len(fake.channel_messages()) >= 1, 10)
    await asyncio.sleep(1.5)
    assert len(fake.channel_messages()) == 1
    assert fake.count("POST", "/messages") == 1


async def test_a_click_on_another_replica_works(
    replicas: list[BridgeProcess], slow_pachca: tuple[FakePachca, str]
) -> None:
    fake, _ = slow_pachca
    fake.add_user(ALICE, "Алиса", "Петрова", "alice")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            replicas[0].url + "/webhook/alertmanager",
            data=fixture_bytes("alertmanager/01-single-firing.json"),
            headers={"Content-Type": "application/json"},
        ) as resp,
    ):
        (ref,) = (await resp.json())["changed"]
    await wait_for(lambda: len(fake.channel_messages()) == 1, 10)
    body = click_body(f"ack:{ref}")
    status = await post(
        replicas[2].url, body, "/pachca/webhook", {"Pachca-Signature": signature(SECRET, body)}
    )
    assert status == 200
    (message,) = fake.channel_messages()
    await wait_for(lambda: "👀 Взял в работу: Алиса Петрова" in message["content"], 10)
    await wait_for(lambda: len(dms(fake, ALICE)) == 1, 10)
    # the same press redelivered to a third replica changes nothing
    assert (
        await post(
            replicas[1].url, body, "/pachca/webhook", {"Pachca-Signature": signature(SECRET, body)}
        )
        == 200
    )
    await asyncio.sleep(1)
    assert len(dms(fake, ALICE)) == 1


async def test_kill_9_of_one_replica_mid_storm_loses_and_doubles_nothing(
    replicas: list[BridgeProcess], slow_pachca: tuple[FakePachca, str]
) -> None:
    fake, _ = slow_pachca
    fake.delay = 0.2
    storm = [json.dumps(group(n)).encode() for n in range(60)]
    for n, body in enumerate(storm):  # spread over the replicas, every copy twice
        await asyncio.gather(post(replicas[n % 3].url, body), post(replicas[(n + 1) % 3].url, body))
    await wait_for(lambda: len(fake.channel_messages()) >= 10 and fake.posts_in_flight > 0, 30)
    assert await replicas[0].stop(signal.SIGKILL) == -signal.SIGKILL
    # its claims lapse after BRIDGE_CLAIM_TTL (2 s) and the others take over
    await wait_for(lambda: len(fake.channel_messages()) >= 60, 60)
    await asyncio.sleep(2)
    assert groups_in(fake) == Counter({f"DiskFull{n}": 1 for n in range(60)})


async def test_the_rate_limit_holds_across_replicas(
    replicas: list[BridgeProcess], slow_pachca: tuple[FakePachca, str]
) -> None:
    fake, _ = slow_pachca
    fake.delay = 0.0
    await asyncio.gather(
        *(post(replicas[n % 3].url, json.dumps(group(n)).encode()) for n in range(75))
    )
    await wait_for(lambda: len(fake.channel_messages()) >= 75, 30)
    times = [c.at for c in fake.calls]
    assert busiest_second(times) <= 25  # PACHCA_RATE_LIMIT 20 + burst 5, for all three together
    assert [c for c in fake.calls if c.status == 429] == []


async def test_redis_down_means_503_and_not_ready_then_recovery(
    slow_pachca: tuple[FakePachca, str], tmp_path: Path
) -> None:
    fake, url = slow_pachca
    server = RedisServer(tmp_path)
    server.start()
    bridge = BridgeProcess(url, fake.token, tmp_path / "replica", store=server.url)
    await bridge.start()
    body = fixture_bytes("alertmanager/02-group-3-firing.json")
    try:
        server.stop()
        assert await post(bridge.url, body) == 503
        async with aiohttp.ClientSession() as http, http.get(bridge.url + "/readyz") as resp:
            assert resp.status == 503
        server.start()  # same port, empty
        await wait_for(lambda: True, 0.1)
        for _ in range(50):
            if await post(bridge.url, body) == 200:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("did not recover")
        await wait_for(lambda: len(fake.channel_messages()) == 1, 10)
    finally:
        await bridge.stop(signal.SIGTERM)
        server.stop()
