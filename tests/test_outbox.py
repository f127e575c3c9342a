"""Delivery against a misbehaving Pachca: what is retried, when, and what is given up."""

import pytest

from bridge.outbox import AUTH_PROBE_SECONDS, backoff
from bridge.web.state import METRICS, OUTBOX, RULES
from tests.conftest import Bridge, Clock, group, groups_in, pending
from tests.fake_pachca import LATE, api_error

FIRING = "alertmanager/02-group-3-firing.json"


async def test_429_waits_for_retry_after(bridge: Bridge, clock: Clock) -> None:
    bridge.fake.fail_next(429, retry_after="1")
    await bridge.post_fixture(FIRING)
    await bridge.deliver()
    assert [c.status for c in bridge.fake.calls] == [429]
    clock.now += 0.9
    await bridge.deliver()
    assert len(bridge.fake.calls) == 1, "retried before Retry-After"
    clock.now += 0.2
    await bridge.deliver()
    # a 429 comes before Pachca does anything: no need to look for an earlier post
    assert [(c.method, c.status) for c in bridge.fake.calls] == [("POST", 429), ("POST", 201)]
    assert len(bridge.fake.channel_messages()) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504, 0])
async def test_server_errors_and_dropped_connections_are_retried(
    bridge: Bridge, clock: Clock, status: int
) -> None:
    bridge.fake.fail_next(status, times=3)
    await bridge.post_fixture(FIRING)
    for _ in range(4):
        await bridge.deliver()
        clock.now += 600  # past any backoff
    assert len(bridge.fake.channel_messages()) == 1
    assert await pending(bridge) == 0


async def test_backoff_grows_with_jitter_and_is_capped() -> None:
    assert backoff(0, 300, rng=lambda: 0.0) == 0.5
    assert backoff(0, 300, rng=lambda: 1.0) == 1.5
    assert backoff(3, 300, rng=lambda: 0.5) == 8.0
    assert backoff(30, 300, rng=lambda: 0.5) == 300.0


# the statuses POST /messages documents with an ApiError body
@pytest.mark.parametrize("status", [400, 402, 422])
async def test_client_errors_are_not_retried_and_kept_as_dead_letters(
    bridge: Bridge, clock: Clock, status: int
) -> None:
    bridge.fake.fail_next(status, body=api_error("entity_id", "Чат не найден", "not_found", "1001"))
    await bridge.post_fixture(FIRING)
    await bridge.deliver()
    clock.now += 3600
    await bridge.deliver()
    assert len(bridge.fake.calls) == 1
    (dead,) = await bridge.store.dead_letters()
    assert dead.item.kind == "create"
    assert f"HTTP {status}" in dead.error and "entity_id: Чат не найден (not_found)" in dead.error
    assert await pending(bridge) == 0


def auth_ok(bridge: Bridge) -> float:
    return bridge.app[METRICS].pachca_auth_ok._value.get()


async def test_a_revoked_token_pauses_delivery_keeps_everything_and_resumes_by_itself(
    bridge: Bridge, clock: Clock
) -> None:
    bridge.fake.token = "rotated"
    for n in range(20):
        assert (await bridge.post(group(n))).status == 200
    await bridge.deliver()
    first_batch = len(bridge.fake.calls)
    assert first_batch <= bridge.app[OUTBOX].concurrency, "the queue did not stop at the 401"
    assert auth_ok(bridge) == 0
    await bridge.deliver()
    clock.now += AUTH_PROBE_SECONDS - 1
    await bridge.deliver()
    assert len(bridge.fake.calls) == first_batch, "no calls while paused"
    clock.now += 2
    await bridge.deliver()
    assert len(bridge.fake.calls) == first_batch + 1, "one probe"
    assert {c.status for c in bridge.fake.calls} == {401}
    assert await bridge.store.dead_letters() == []
    assert await pending(bridge) == 20
    bridge.fake.token = "test-token"  # the token is fixed
    clock.now += AUTH_PROBE_SECONDS + 1
    await bridge.deliver()
    clock.now += AUTH_PROBE_SECONDS + 1  # items refused before the fix wait their retry
    await bridge.deliver()
    assert len(bridge.fake.channel_messages()) == 20
    assert auth_ok(bridge) == 1
    assert await pending(bridge) == 0
    assert await bridge.store.dead_letters() == []


async def test_a_token_without_a_scope_pauses_too(bridge: Bridge, clock: Clock) -> None:
    forbidden = {"error": "insufficient_scope", "error_description": "messages:create"}
    bridge.fake.fail_next(403, body=forbidden)
    await bridge.post_fixture(FIRING)
    await bridge.deliver()
    assert await bridge.store.dead_letters() == []
    assert auth_ok(bridge) == 0
    clock.now += AUTH_PROBE_SECONDS + 1
    await bridge.deliver()
    assert len(bridge.fake.channel_messages()) == 1
    assert auth_ok(bridge) == 1


async def test_no_access_to_one_chat_is_that_items_dead_letter_only(
    bridge: Bridge, clock: Clock
) -> None:
    no_access = {"error": "forbidden", "error_description": "Нет доступа к чату"}
    bridge.fake.fail_next(403, body=no_access)
    await bridge.post_fixture(FIRING)
    await bridge.deliver()
    (dead,) = await bridge.store.dead_letters()
    assert "HTTP 403" in dead.error
    assert auth_ok(bridge) == 1
    assert (await bridge.post(group(1))).status == 200
    await bridge.deliver()
    assert len(bridge.fake.channel_messages()) == 1


async def test_content_too_long_is_sent_again_smaller(bridge: Bridge, clock: Clock) -> None:
    bridge.fake.fail_next(422, body=api_error("content", "Слишком длинный текст", "too_long"))
    await bridge.post_fixture(FIRING)
    await bridge.deliver()
    statuses = [c.status for c in bridge.fake.calls]
    assert statuses == [422, 201]
    (message,) = bridge.fake.channel_messages()
    assert "…и ещё 2" in message["content"]  # one alert shown instead of three


async def test_edits_wait_for_the_create_in_order(bridge: Bridge, clock: Clock) -> None:
    bridge.fake.fail_next(503)
    await bridge.post_fixture(FIRING)
    await bridge.post_fixture("alertmanager/04-group-1-resolved-2-firing.json")
    await bridge.deliver()
    assert [c.status for c in bridge.fake.calls] == [503]  # the edit did not jump the queue
    clock.now += 600
    await bridge.deliver()
    methods = [(c.method, c.status) for c in bridge.fake.calls]
    # the create renders the latest state, so the queued edit has nothing left to do
    assert methods == [("POST", 503), ("GET", 200), ("POST", 201)]
    (message,) = bridge.fake.channel_messages()
    assert "🔥 2 · ✅ 1" in message["content"]


async def test_create_whose_answer_was_lost_is_adopted_not_repeated(
    bridge: Bridge, clock: Clock
) -> None:
    """Pachca created the message but the bridge never saw the answer (it died, or the
    connection dropped after the request was processed)."""
    await bridge.post_fixture(FIRING)
    (item,) = await bridge.store.due_items(clock.now, 10)
    stored = await bridge.store.load_by_ref(item.ref)
    assert stored is not None
    # what the dying attempt did: record the intent, post, and lose the answer
    await bridge.store.record_delivery(
        item.ref, stored.delivery.model_copy(update={"create_sent_at": 1.0})
    )
    from zoneinfo import ZoneInfo

    from bridge.render import RenderOptions, render_message

    route = bridge.app[RULES].by_name(stored.incident.route).config
    message = render_message(stored.incident, route, RenderOptions(ZoneInfo("UTC")))
    bridge.fake._create(
        {
            "entity_type": "discussion",
            "entity_id": stored.incident.chat_id,
            "content": message.content,
            "buttons": message.buttons,
        }
    )
    await bridge.post_fixture("alertmanager/04-group-1-resolved-2-firing.json")
    await bridge.deliver()
    (only,) = bridge.fake.channel_messages()
    assert "🔥 2 · ✅ 1" in only["content"]  # adopted and brought up to date
    assert bridge.fake.count("POST", "/messages") == 0


async def test_a_slow_answer_holds_up_its_own_incident_only(bridge: Bridge) -> None:
    """A slot is refilled as soon as its delivery ends: while the first create waits 1.5 s
    for Pachca's answer, the other incidents go out through the second slot. (A batch that
    waits for its slowest delivery would send one more and then stand still.)"""
    import asyncio
    import time

    bridge.app[OUTBOX].concurrency = 2
    bridge.fake.fail_next(LATE, hang=1.5)  # performed at once, answered after 1.5 s
    for n in range(6):
        await bridge.post(group(n))
    started = time.monotonic()
    drain = asyncio.create_task(bridge.deliver())
    while len(bridge.fake.channel_messages()) < 6 and time.monotonic() - started < 1.2:
        await asyncio.sleep(0.02)
    others_done = time.monotonic() - started
    assert len(bridge.fake.channel_messages()) == 6, "the other incidents waited for the slow one"
    assert not drain.done(), "the slow answer is still awaited"
    await drain
    assert others_done < 1.2 and await pending(bridge) == 0
    assert sorted(groups_in(bridge.fake).values()) == [1] * 6
