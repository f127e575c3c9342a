"""The global pace of Pachca calls, measured at the fake Pachca's end."""

import asyncio
import json
import time
import uuid

import pytest

from bridge.ratelimit import JITTER, Limiter, Pace, RateLimiter, urgency
from bridge.store.redis import RedisStore, SharedRateLimiter
from bridge.web.state import METRICS, PACHCA
from tests.conftest import BridgeFactory, fixture_json
from tests.redis_server import RedisServer


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_limiter_keeps_any_second_under_rate_plus_burst() -> None:
    limiter = RateLimiter(rate=30, burst=5)
    stamps = []

    async def call() -> None:
        await limiter.acquire()
        stamps.append(time.monotonic())

    await asyncio.gather(*(call() for _ in range(80)))
    assert busiest_second(stamps) <= 35
    assert stamps[-1] - stamps[0] >= (80 - 5) / 30 - 0.05


async def test_429_pauses_everyone_and_cuts_the_pace_once_per_event() -> None:
    limiter = RateLimiter(rate=40, burst=5, most=60)
    now = time.monotonic()
    # forty calls in the second before, all of them older than a second by the next event
    limiter._started.extend(now - 0.99 + 0.005 * n for n in range(40))
    await limiter.rate_limited(retry_after=0.3)
    await limiter.rate_limited(retry_after=0.3)  # another call of the same burst: no second cut
    assert limiter.rate == 36 and limiter.ceiling == 40
    started = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - started >= 0.29
    # a new event after the pause, with only one call of ours in the second before: someone
    # else spends the token's limit too; the pace is at most halved
    await limiter.rate_limited(retry_after=0.01)
    assert limiter.rate == pytest.approx(18 * 0.9)


async def test_the_pace_grows_only_while_calls_wait_for_it() -> None:
    limiter = RateLimiter(rate=40, burst=5, most=60)
    for _ in range(5):  # the burst: nobody waited
        await limiter.acquire()
        await limiter.succeeded()
    assert limiter.rate == 40  # a quiet bridge does not creep up to the maximum
    await limiter.acquire()  # the bucket is empty: this one waits
    for _ in range(1000):
        await limiter.succeeded()
    assert limiter.rate == 60  # never past PACHCA_RATE_MAX


def test_pace_grows_per_second_and_stays_a_call_under_what_a_429_refused() -> None:
    pace = Pace(start=40, most=60)
    assert pace.after_success(40, ceiling=0) == pytest.approx(40.1)  # +4/s over ~40 calls
    assert pace.after_success(45, ceiling=50) == pytest.approx(45 + 4 / 45)
    assert pace.after_success(48.99, ceiling=50) == 49  # a call under what was refused
    assert pace.after_success(49.5, ceiling=50) == 49.5  # never lowered by a success
    assert pace.after_success(59.99, ceiling=0) == 60  # nor raised past PACHCA_RATE_MAX
    # a ceiling under the configured rate does not hold the pace: it grows back to it
    assert pace.after_success(1.0, ceiling=1.0) == pytest.approx(5.0)
    assert pace.after_success(39.95, ceiling=20) == 40
    # a 429 when 50 calls had started in the second before: Pachca's limit is about 50
    assert pace.after_429(54, observed=50) == pytest.approx((45, 50))
    assert pace.after_429(30, observed=50) == pytest.approx((27, 30))  # not above our pace
    assert pace.after_429(40, observed=3) == pytest.approx((18, 20))  # at most halved
    assert Pace(start=0.5, most=1).after_429(0.5, 0) == (0.5, 0.5)  # never below 1/s or start
    assert Pace(start=40, most=60).after_429(1.05, 1) == (1.0, 1.0)


async def test_a_second_429_holds_the_pace_under_it_for_a_while() -> None:
    """A lone 429 cuts the pace, which grows back past it (calls bunched on their way to
    Pachca meet one now and then); a second within ten minutes holds the pace a call under
    what it refused, for ten minutes; then the pace probes again."""
    now = [100.0]
    limiter = RateLimiter(rate=40, burst=5, clock=lambda: now[0], most=60)
    limiter._started.extend(100 - 0.02 * n for n in range(1, 46))  # 45 calls in the last second
    await limiter.rate_limited(retry_after=1, took=0.0)
    assert (limiter.rate, limiter.ceiling) == pytest.approx((36, 40))  # our pace was lower
    assert not limiter.confirmed
    limiter._busy_until = float("inf")
    for _ in range(200):
        await limiter.succeeded()
    assert limiter.rate > 45  # grew back past what the lone 429 refused
    now[0] += 60
    limiter._started.extend(now[0] - 0.02 * n for n in range(1, 46))
    await limiter.rate_limited(retry_after=1, took=0.0)
    assert limiter.confirmed and limiter.ceiling == 45
    for _ in range(200):
        await limiter.succeeded()
    assert limiter.rate == 44  # a call under what was refused
    now[0] += limiter.pace.memory - 1
    await limiter.succeeded()
    assert limiter.rate == 44  # still held, ten minutes after the second 429
    now[0] += 2
    for _ in range(200):
        await limiter.succeeded()
    assert limiter.rate > 46  # probing again
    # a 429 more than ten minutes after the last one is a lone one again
    limiter._started.extend(now[0] - 0.02 * n for n in range(1, 46))
    await limiter.rate_limited(retry_after=1, took=0.0)
    assert not limiter.confirmed


async def test_429s_our_calls_did_not_cause_cut_the_pace_but_it_grows_back() -> None:
    """429s with one call of ours in the second before each (Pachca's fault, or another user
    of the token) halve the pace down to 1/s and confirm one another; once calls are accepted
    it grows back to the configured rate (it had stayed at 1/s for ten minutes: a fault soak
    left 2,376 items behind)."""
    now = [100.0]
    limiter = RateLimiter(rate=200, burst=20, clock=lambda: now[0], most=200)
    for _ in range(12):
        now[0] += 2  # after the last pause
        limiter._started.append(now[0] - 0.5)
        await limiter.rate_limited(retry_after=1, took=0.0)
    assert limiter.rate == 1 and limiter.confirmed
    limiter._busy_until = float("inf")
    for _ in range(2000):
        await limiter.succeeded()
    assert limiter.rate == 200


async def test_a_storm_runs_close_to_pachcas_limit_with_few_429s(
    make_bridge: BridgeFactory,
) -> None:
    """Start at 40/s against a Pachca that allows 50: the pace finds the room (AIMD) and
    pays for it with at most a few 429s, each cutting the pace once."""
    bridge = await make_bridge(
        PACHCA_RATE_LIMIT="40", PACHCA_RATE_MAX="60", BRIDGE_OUTBOX_CONCURRENCY="16"
    )
    bridge.fake.rate_limit = 50
    template = fixture_json("alertmanager/01-single-firing.json")
    for n in range(200):
        body = json.loads(json.dumps(template).replace("HighCPU", f"HighCPU{n}"))
        await bridge.post(body)
    await bridge.deliver()
    assert len(bridge.fake.channel_messages()) == 200
    limited = [c for c in bridge.fake.calls if c.status == 429]
    # counted when they came in, as Pachca counts (answers leave bunched by the fake's own work)
    accepted = sorted(c.arrived for c in bridge.fake.calls if c.status < 300)
    assert len(limited) <= 6, len(limited)  # 3 %: bounded by the in-flight calls of one event
    limiter = bridge.app[PACHCA].limiter  # type: ignore[attr-defined]
    # the pace grew past where it started, and what a 429 taught it is Pachca's limit
    assert 40 < limiter.rate <= 60, limiter.rate
    if limited:  # counted at this end, where calls start: within a call of Pachca's count
        assert 45 <= limiter.ceiling <= 51, limiter.ceiling
    if limiter.confirmed:
        assert limiter.rate <= limiter.ceiling - 1
    assert bridge.app[METRICS].pachca_pace._value.get() == limiter.rate
    assert busiest_second(accepted) <= 50


async def test_storm_never_exceeds_the_limit_in_any_second(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(  # a fixed pace: PACHCA_RATE_MAX no higher than the start
        PACHCA_RATE_LIMIT="20",
        PACHCA_RATE_MAX="20",
        PACHCA_RATE_BURST="2",
        BRIDGE_OUTBOX_CONCURRENCY="16",
    )
    # Pachca's own limit in this test: 429 above it. The bridge allows 20/s + a burst of 2,
    # the same ~10% margin as the defaults (40 + 5 against ~50): arrival times at the fake,
    # which shares this event loop, bunch up by a request or two.
    bridge.fake.rate_limit = 25
    template = fixture_json("alertmanager/01-single-firing.json")
    for n in range(60):
        body = json.loads(json.dumps(template).replace("HighCPU", f"HighCPU{n}"))
        await bridge.post(body)
    await bridge.deliver()
    assert len(bridge.fake.channel_messages()) == 60
    times = [c.at for c in bridge.fake.calls]
    assert busiest_second(times) <= 25
    assert [c for c in bridge.fake.calls if c.status == 429] == []


async def test_replicas_share_one_adaptive_pace_through_redis(redis_server: RedisServer) -> None:
    """Two replicas' limiters on one Redis: a 429 seen by one pauses both and cuts the pace
    they share to a tenth under what Pachca counted; the other grows it back, by the same
    arithmetic as a lone bridge's (bridge.ratelimit.Pace), past it; after a second 429, a
    call under what that one refused."""
    store = RedisStore(redis_server.url, prefix=f"pace-{uuid.uuid4().hex[:8]}:")
    await store.open()
    try:
        a, b = (SharedRateLimiter(store, rate=40, burst=5, most=60) for _ in range(2))
        for limiter in (a, b) * 15:  # 30 calls between them, over about 0.65 s
            await limiter.acquire()
        await a.rate_limited(retry_after=0.3, took=0.0)
        await a.rate_limited(retry_after=0.3, took=0.0)  # the same event: no second cut
        assert a.rate == pytest.approx(0.9 * 30)  # Pachca counted the 30 calls of both
        started = time.monotonic()
        await b.acquire()  # paused by a's 429
        assert time.monotonic() - started >= 0.25
        b._busy_until = float("inf")  # as if calls were waiting for the pace
        await b.succeeded()
        assert b.rate == pytest.approx(Pace(40, 60).after_success(27, ceiling=0))
        for _ in range(300):
            await b.succeeded()
        assert b.rate > 50  # a lone 429: grown back past what it refused
        for limiter in (a, b) * 30:  # calls at that pace, for about a second
            await limiter.acquire()
        await b.rate_limited(retry_after=0.01, took=0.0)  # a second: Pachca's limit
        refused = float(await store._redis.hget(f"{store.prefix}pace", "c"))
        assert refused > 41  # above the configured rate: it holds the pace
        for _ in range(200):
            await b.succeeded()
        assert b.rate == refused - 1  # a call under what was refused
        a._busy_until = float("inf")
        await a.succeeded()
        assert a.rate == refused - 1  # one pace for both
        # 429s with none of our calls before them halve the pace down to 1/s; it grows back
        # to the configured rate, not a call under what they refused
        await asyncio.sleep(1.05)  # the calls above out of the second before
        for _ in range(10):
            await a.rate_limited(retry_after=0.01, took=0.0)
            await asyncio.sleep(0.02)
        assert a.rate == 1
        b._busy_until = float("inf")
        for _ in range(2000):
            await b.succeeded()
        assert b.rate == 40
    finally:
        await store.close()


async def wait_order(limiter: Limiter, queued: int) -> list[str]:
    """`queued` callers wait for the limiter, then one urgent caller (a press's call): the
    order in which they got their tokens."""
    order: list[str] = []

    async def call(name: str, urgent: bool) -> None:
        with urgency(urgent):
            await limiter.acquire()
        order.append(name)

    waiting = [asyncio.create_task(call(f"q{n}", False)) for n in range(queued)]
    await asyncio.sleep(0.01)  # they queue first
    await asyncio.gather(call("press", True), *waiting)
    return order


async def test_a_press_takes_the_next_call_before_the_queue() -> None:
    """A press's edit and DM (URGENT) go ahead of the calls queued before them: at most the
    ones already under way (the burst, and the caller being served) come first."""
    order = await wait_order(RateLimiter(rate=50, burst=2), 12)
    assert order.index("press") <= 3, order
    assert [n for n in order if n != "press"] == [f"q{n}" for n in range(12)]


async def test_a_press_goes_first_in_its_replica_through_redis(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix=f"urgent-{uuid.uuid4().hex[:8]}:")
    await store.open()
    try:
        order = await wait_order(SharedRateLimiter(store, rate=50, burst=2), 12)
        assert order.index("press") <= 3, order
    finally:
        await store.close()


LATE = 0.029  # seconds: how much later a call may reach Pachca than it started (see JITTER)


async def arrivals_at_pachca(limiter: Limiter, count: int) -> list[float]:
    """When `count` calls queued at once reach Pachca, every third one a little late (this
    event loop or Pachca's busy, the network): the worst the jitter allowance covers."""
    arrivals: list[float] = []

    async def call(n: int) -> None:
        await limiter.acquire()
        arrivals.append(time.monotonic() + (LATE if n % 3 == 0 else 0.0))

    await asyncio.gather(*(call(n) for n in range(count)))
    return arrivals


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "redis"])
async def test_calls_a_little_late_still_keep_every_second_at_pachca_within_the_pace(
    shared: bool, request: pytest.FixtureRequest
) -> None:
    """At a pace of 100/s (and a bucket of 100, so the window decides), 100 calls start in
    1.03 s at most: one arriving 29 ms late and the others on time still leave every second at
    Pachca with 100 calls at most (without the allowance: 103, 429s)."""
    assert JITTER >= LATE
    if shared:
        server: RedisServer = request.getfixturevalue("redis_server")
        store = RedisStore(server.url, prefix=f"jitter-{uuid.uuid4().hex[:8]}:")
        await store.open()
        limiter: Limiter = SharedRateLimiter(store, rate=100, burst=100)
    else:
        limiter = RateLimiter(rate=100, burst=100)
    try:
        arrivals = await arrivals_at_pachca(limiter, 150)
    finally:
        if shared:
            await store.close()
    assert busiest_second(arrivals) <= 100
