"""A failure stays with the item, request or connection it belongs to: never the loop that
serves the others. Background loops are supervised and their health is visible."""

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from bridge.errors import StoreError
from bridge.inbox import new_ref
from bridge.incidents import Effect, apply_notification
from bridge.metrics import Metrics
from bridge.model import Alert, AlertStatus, Notification
from bridge.outbox import UNEXPECTED_ATTEMPTS, backoff
from bridge.pachca import MAX_RETRY_AFTER, retry_after_seconds
from bridge.ratelimit import RateLimiter
from bridge.store import NewOutboxItem, OutboxItem
from bridge.tasks import Pulse, Supervisor
from bridge.web.state import METRICS, OUTBOX
from tests.conftest import Bridge, BridgeFactory, Clock, group, pending
from tests.fake_pachca import api_error
from tests.faulty_store import FaultyStore
from tests.test_polling import history_event, opened_ref, poller

FIRING = "alertmanager/02-group-3-firing.json"


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# -- one item ---------------------------------------------------------------------------------


async def store_unrenderable_incident(bridge: Bridge, chat_id: int = 1000) -> str:
    """An incident whose alert no time zone can show, put in the store past intake (as one
    recorded by an older version would be)."""
    start = datetime.fromisoformat("9999-12-31T23:59:59-14:00")
    alert = Alert(fingerprint="f1", status=AlertStatus.FIRING, labels={"a": "b"}, starts_at=start)
    note = Notification(
        source="alertmanager", receiver="r", group_key="{}:{a=\"b\"}", status=AlertStatus.FIRING,
        alerts=(alert,), common_labels={"a": "b"},
    )  # fmt: skip
    now = datetime.now(UTC)
    transition = apply_notification(
        None, note, route="default", chat_id=chat_id, now=now,
        resolved_ttl=timedelta(hours=1), new_ref=new_ref(),
    )  # fmt: skip
    assert transition.incident is not None
    items = [NewOutboxItem(e.value) for e in transition.effects if e is Effect.CREATE]
    await bridge.store.save_incident(transition.incident, None, items, now.timestamp())
    return transition.incident.ref


async def test_an_incident_that_cannot_be_rendered_is_dead_lettered_and_the_rest_flows(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(BRIDGE_TIMEZONE="America/Los_Angeles")
    bad = await store_unrenderable_incident(bridge)
    await bridge.post_fixture(FIRING)
    await bridge.deliver()
    (dead,) = await bridge.store.dead_letters()
    assert dead.item.ref == bad and "cannot render" in dead.error
    assert len(bridge.fake.channel_messages()) == 1  # the good incident
    assert await pending(bridge) == 0


def test_backoff_after_a_thousand_attempts_is_the_cap() -> None:
    assert backoff(1024, 300.0, rng=lambda: 0.5) == 300.0
    assert backoff(10**6, 300.0, rng=lambda: 0.5) == 300.0


async def test_an_item_retried_a_thousand_times_is_still_retried(
    bridge: Bridge, clock: Clock
) -> None:
    await bridge.post_fixture(FIRING)
    (item,) = await bridge.store.due_items(clock.now, 8)
    tired = OutboxItem(item.id, item.ref, item.kind, item.content, item.created_at, 1100)
    bridge.fake.fail_next(503)
    await bridge.app[OUTBOX].deliver(tired)
    assert await pending(bridge) == 1  # waiting for its retry, not lost, no exception


async def test_an_error_page_that_is_not_utf8_is_retried_like_any_5xx(
    bridge: Bridge, clock: Clock
) -> None:
    page = "<html>Сервис недоступен</html>".encode("cp1251")
    bridge.fake.fail_next(502, body=page)
    await bridge.post_fixture(FIRING)
    await bridge.deliver()
    assert [c.status for c in bridge.fake.calls] == [502]
    clock.now += 31  # a create answered 5xx may have been done: it is given time to land
    await bridge.deliver()
    assert len(bridge.fake.channel_messages()) == 1


async def test_a_4xx_page_that_is_not_utf8_is_a_readable_dead_letter(
    bridge: Bridge, clock: Clock
) -> None:
    bridge.fake.fail_next(400, body=b"\xff\xfe bad request \x80")
    await bridge.post_fixture(FIRING)
    await bridge.deliver()
    (dead,) = await bridge.store.dead_letters()
    assert "HTTP 400" in dead.error and "bad request" in dead.error


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("inf", None),
        ("nan", None),
        ("1e400", None),
        ("soon", None),
        ("86400", MAX_RETRY_AFTER),
        (None, None),
    ],
)
def test_retry_after_is_clamped_and_garbage_ignored(header: str | None, expected: Any) -> None:
    assert retry_after_seconds(header) == expected


def test_retry_after_as_an_http_date() -> None:
    now = 1_900_000_000.0
    when = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert retry_after_seconds(when, now=now) == pytest.approx(30, abs=1)


async def test_retry_after_inf_does_not_stop_delivery(bridge: Bridge, clock: Clock) -> None:
    bridge.fake.fail_next(429, retry_after="inf")
    await bridge.post_fixture(FIRING)
    await bridge.deliver()
    clock.now += 10  # the ordinary backoff, not for ever
    await bridge.deliver()
    assert len(bridge.fake.channel_messages()) == 1


async def test_429s_without_retry_after_never_slow_the_pace_below_one_per_second() -> None:
    now = [0.0]
    limiter = RateLimiter(40, 5, clock=lambda: now[0])
    for _ in range(50):  # fifty 429 events, each after the pause of the one before
        await limiter.rate_limited(None)
        now[0] += 2.0
    assert limiter.rate == 1.0


# -- one batch --------------------------------------------------------------------------------


async def test_a_store_error_in_one_delivery_lets_the_others_of_its_batch_finish(
    make_bridge: BridgeFactory, clock: Clock
) -> None:
    """An item that fails at once (its store write) while five direct messages are in flight:
    the batch ends only when they have, so none is handed out and sent a second time."""
    faulty: list[FaultyStore] = []

    def wrap(store: Any) -> FaultyStore:
        faulty.append(FaultyStore(store))
        return faulty[0]

    bridge = await make_bridge(wrap_store=wrap)
    bridge.app[OUTBOX].clock = clock
    bridge.fake.delay = 0.2
    await bridge.store.enqueue("gone", [NewOutboxItem(Effect.EDIT.value)], clock.now)
    for n in range(5):
        item = NewOutboxItem(Effect.DM.value, f"reply {n}", actor=100 + n)
        await bridge.store.enqueue(f"ref{n}", [item], clock.now)
    faulty[0].fail_next("finish_item", StoreError("disk full"))
    with pytest.raises(StoreError):
        await bridge.app[OUTBOX].drain_once()
    await bridge.deliver()
    dms = [m for m in bridge.fake.messages.values() if m["entity_type"] == "user"]
    assert sorted(m["content"] for m in dms) == [f"reply {n}" for n in range(5)]
    assert await pending(bridge) == 0


# -- loops ------------------------------------------------------------------------------------


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_pulse_is_stalled_only_past_what_it_announced() -> None:
    ticks = Ticks()
    pulse = Pulse(stall_after=120, clock=ticks)
    pulse.beat(idle=600)  # e.g. pruning, every 10 minutes
    ticks.now += 700
    assert pulse.stalled_for() == 0
    ticks.now += 30
    assert pulse.stalled_for() == pytest.approx(10)
    pulse.beat()
    pulse.excuse(300)  # waiting out a 429
    ticks.now += 400
    assert pulse.stalled_for() == 0


async def test_a_failing_loop_is_restarted_counted_and_reported() -> None:
    metrics = Metrics()
    supervisor = Supervisor(metrics, stall_after=60)
    runs: list[int] = []

    async def flaky(pulse: Pulse) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise OverflowError("date value out of range")
        while True:
            pulse.beat(0.01)
            await asyncio.sleep(0.01)

    supervisor.start("flaky", flaky)
    await asyncio.sleep(0.1)
    assert supervisor.problems() == ["flaky: restarting after a failure"]
    await asyncio.sleep(1.2)  # the first restart comes after 1 s
    assert len(runs) == 2
    assert supervisor.problems() == []
    assert sample(metrics, "bridge_background_restarts_total", task="flaky") == 1
    await supervisor.stop()


async def test_a_stuck_loop_makes_healthz_fail_but_not_readyz(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(BRIDGE_STALL_AFTER="1s")
    from bridge.web.state import SUPERVISOR

    supervisor = bridge.app[SUPERVISOR]

    async def stuck(pulse: Pulse) -> None:
        await asyncio.sleep(3600)

    supervisor.start("stuck", stuck)
    assert (await bridge.client.get("/healthz")).status == 200
    await asyncio.sleep(1.2)
    response = await bridge.client.get("/healthz")
    assert response.status == 503
    assert (await response.json())["problems"] == ["stuck: no pass completed for 1s"]
    assert (await bridge.client.get("/readyz")).status == 200  # intake still records
    metrics = await (await bridge.client.get("/metrics")).text()
    assert 'bridge_background_stalled{task="stuck"} 1.0' in metrics
    await supervisor.stop(["stuck"])


async def test_the_outbox_loop_survives_what_used_to_end_it(make_bridge: BridgeFactory) -> None:
    """The running bridge (background loops on): a failure nobody foresaw, raised inside the
    outbox's own pass, restarts the loop; delivery then goes on."""
    faulty: list[FaultyStore] = []

    def wrap(store: Any) -> FaultyStore:
        faulty.append(FaultyStore(store))
        faulty[0].fail_next("due_items", OverflowError("date value out of range"))
        return faulty[0]

    bridge = await make_bridge(wrap_store=wrap, run_outbox=True)
    await bridge.post_fixture(FIRING)
    for _ in range(60):
        if bridge.fake.channel_messages():
            break
        await asyncio.sleep(0.1)
    assert len(bridge.fake.channel_messages()) == 1
    metrics = bridge.app[METRICS]
    assert sample(metrics, "bridge_background_restarts_total", task="outbox") == 1
    assert (await bridge.client.get("/healthz")).status == 200


async def test_backlog_gauges_are_true_when_the_outbox_is_not_running(bridge: Bridge) -> None:
    for n in range(19):
        assert (await bridge.post(group(n))).status == 200
    await asyncio.sleep(0.05)
    text = await (await bridge.client.get("/metrics")).text()
    assert "bridge_outbox_depth 19.0" in text
    age = next(line for line in text.splitlines() if line.startswith("bridge_outbox_oldest_age"))
    assert float(age.split()[1]) > 0


# -- poller -----------------------------------------------------------------------------------


async def test_one_bad_event_never_stops_the_page(bridge: Bridge) -> None:
    ref = await opened_ref(bridge)
    bridge.fake.validate = False  # this history is off Pachca's spec on purpose
    good = [history_event(n, f"ack:{ref}", user_id=100 + n) for n in range(1, 4)]
    no_id = {k: v for k, v in history_event(9, f"ack:{ref}").items() if k != "id"}
    bridge.fake.events = [no_id, good[0], "not an object", good[1], good[2]]  # type: ignore[list-item]
    polling = poller(bridge)
    real_delete = polling.history.delete_event
    deleted: list[str] = []

    async def gone_already(event_id: str) -> None:
        deleted.append(event_id)
        if len(deleted) == 1:  # another replica deleted it first: Pachca says 404
            bridge.fake.events = [e for e in bridge.fake.events if e is not good[0]]
        await real_delete(event_id)

    polling.history.delete_event = gone_already  # type: ignore[method-assign]
    assert await polling.poll_once() == 3
    assert deleted == [e["id"] for e in good]
    assert len(bridge.fake.events) == 2  # the two malformed entries, skipped


# -- dead letters -----------------------------------------------------------------------------


async def test_dead_letters_are_counted_and_pruned_after_their_retention(
    bridge: Bridge, clock: Clock
) -> None:
    from bridge.housekeeping import prune_once

    bridge.fake.fail_next(422, body=api_error("entity_id", "Чат не найден", "not_found"))
    await bridge.post_fixture(FIRING)
    await bridge.deliver()
    assert len(await bridge.store.dead_letters()) == 1
    text = await (await bridge.client.get("/metrics")).text()
    assert "bridge_dead_letters 1.0" in text
    day = 86400.0
    await prune_once(bridge.store, 7 * day, clock.now + 13 * day, dead_letter_retention=14 * day)
    assert len(await bridge.store.dead_letters()) == 1
    await prune_once(bridge.store, 7 * day, clock.now + 15 * day, dead_letter_retention=14 * day)
    assert await bridge.store.dead_letters() == []


async def test_an_item_that_keeps_failing_unexpectedly_is_dead_lettered_in_the_end(
    bridge: Bridge, clock: Clock
) -> None:
    await bridge.store.enqueue("-", [NewOutboxItem(Effect.UNFURL.value, "{not json")], clock.now)
    for _ in range(UNEXPECTED_ATTEMPTS):
        await bridge.deliver()
        clock.now += 3600
    (dead,) = await bridge.store.dead_letters()
    assert "JSONDecodeError" in dead.error
    assert await pending(bridge) == 0


def test_accept_failures_are_reported_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from bridge.logs import ACCEPT_FAILURE, QuietAcceptErrors

    ticks = Ticks()
    handler = QuietAcceptErrors(clock=ticks)
    loop = asyncio.new_event_loop()
    context = {"message": ACCEPT_FAILURE, "exception": OSError(24, "Too many open files")}
    with caplog.at_level("ERROR", logger="bridge.web"):
        for _ in range(300):  # two and a half minutes of failures, two a second
            handler(loop, context)
            ticks.now += 0.5
    loop.close()
    assert len([r for r in caplog.records if r.name == "bridge.web"]) == 3  # at 0, 60, 120 s
    assert handler.suppressed == 59
