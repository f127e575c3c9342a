"""Button presses from Pachca: signature, freshness, replay, each action's effects, refusals."""

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import ClientResponse

from bridge.errors import StoreError
from bridge.rules import load_rules
from bridge.sources.pachca import signature
from bridge.web.state import METRICS, STORE
from tests.conftest import SIGNING_SECRET, Bridge, BridgeFactory, fixture_json
from tests.fake_pachca import FakePachca

ALICE, BOB = 2345, 4242


@pytest.fixture
async def opened(bridge: Bridge) -> tuple[Bridge, str, dict[str, Any]]:
    """A bridge with one delivered DiskFull incident; returns it, the incident ref, the message."""
    bridge.fake.add_user(ALICE, "Алиса", "Петрова", "alice")
    bridge.fake.add_user(BOB, "Bob", "Smith", "bob")
    response = await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    (ref,) = (await response.json())["changed"]
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    return bridge, ref, message


def click_body(
    data: str, user_id: int = ALICE, trigger_id: str | None = None, timestamp: float | None = None
) -> bytes:
    event = fixture_json("pachca/button-click.json")
    event.update(
        data=data,
        user_id=user_id,
        trigger_id=trigger_id or f"trigger-{data}-{user_id}-{time.monotonic_ns()}",
        webhook_timestamp=int(time.time() if timestamp is None else timestamp),
    )
    return json.dumps(event).encode()


async def press(
    bridge: Bridge,
    body: bytes,
    secret: str | None = SIGNING_SECRET,
    headers: dict[str, str] | None = None,
) -> ClientResponse:
    sent = {"Content-Type": "application/json", **(headers or {})}
    if secret is not None:
        sent["Pachca-Signature"] = signature(secret, body)
    return await bridge.client.post("/pachca/webhook", data=body, headers=sent)


def dms(source: Bridge | FakePachca, user_id: int) -> list[str]:
    """Direct messages the fake Pachca holds for a user."""
    fake = source.fake if isinstance(source, Bridge) else source
    return [
        m["content"]
        for m in fake.messages.values()
        if m["entity_type"] == "user" and m["entity_id"] == user_id
    ]


def data_buttons(message: dict[str, Any]) -> list[str]:
    return [b["data"] for row in message["buttons"] or [] for b in row if "data" in b]


async def test_ack_edits_comments_and_confirms_by_dm(
    opened: tuple[Bridge, str, dict[str, Any]],
) -> None:
    bridge, ref, message = opened
    response = await press(bridge, click_body(f"ack:{ref}"))
    assert response.status == 200 and (await response.json())["status"] == "accepted"
    await bridge.deliver()
    assert "👀 Взял в работу: Алиса Петрова," in message["content"]
    assert data_buttons(message)[:2] == [f"unack:{ref}", f"resolve:{ref}"]
    assert bridge.fake.thread_comments(message["id"]) == ["👀 Алиса Петрова взял в работу"]
    assert dms(bridge, ALICE) == ["Вы взяли в работу «DiskFull»."]
    assert len(bridge.fake.channel_messages()) == 1
    assert bridge.app[METRICS].time_to_ack._sum.get() >= 0  # observed once
    text = await (await bridge.client.get("/metrics")).text()
    assert 'bridge_callbacks_total{action="ack",result="acked"} 1.0' in text
    assert "bridge_time_to_ack_seconds_count 1.0" in text


async def test_unack_reverses_ack(opened: tuple[Bridge, str, dict[str, Any]]) -> None:
    bridge, ref, message = opened
    await press(bridge, click_body(f"ack:{ref}"))
    await press(bridge, click_body(f"unack:{ref}"))
    await bridge.deliver()
    assert "Взял в работу" not in message["content"]
    assert data_buttons(message)[0] == f"ack:{ref}"
    assert (
        bridge.fake.thread_comments(message["id"])[-1]
        == "↩️ Алиса Петрова больше не занимается инцидентом"
    )
    assert dms(bridge, ALICE)[-1] == "Вы больше не занимаетесь «DiskFull»."


async def test_resolve_by_hand_closes_and_a_new_firing_reopens(
    opened: tuple[Bridge, str, dict[str, Any]],
) -> None:
    bridge, ref, message = opened
    await press(bridge, click_body(f"resolve:{ref}", user_id=BOB))
    await bridge.deliver()
    assert message["content"].startswith("✅ **РЕШЕНО**")
    assert "✋ Закрыто вручную: Bob Smith," in message["content"]
    assert data_buttons(message) == []
    # the source still reports the three alerts firing: the thread and the DM say so
    still = (
        "Alertmanager всё ещё сообщает, что горит алертов: 3. Повтор этого уведомления "
        "сообщение не откроет; откроет новое срабатывание."
    )
    assert bridge.fake.thread_comments(message["id"])[-1] == (
        "✋ Bob Smith закрыл инцидент вручную " + still
    )
    assert dms(bridge, BOB)[-1].endswith(still)
    edits = len(bridge.fake.ok_calls("/messages/{id}"))
    # a repeat of what Alertmanager said before the press does not re-open it...
    await bridge.post_fixture("alertmanager/03-group-3-repeat.json")
    await bridge.deliver()
    assert len(bridge.fake.ok_calls("/messages/{id}")) == edits
    # ...a new firing notification of the group does
    await bridge.post_fixture("alertmanager/13-after-silences-expired.json")  # other group: no-op
    await bridge.post_fixture("alertmanager-ha-split/01-firing-from-am-a.json")
    await bridge.deliver()
    assert "ГОРИТ" in message["content"] and "Закрыто вручную" not in message["content"]
    assert data_buttons(message)[0] == f"ack:{ref}"
    assert bridge.fake.thread_comments(message["id"])[-1].startswith("🔥 Снова горит")


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        ("ack:00000000aa", "Инцидент не найден"),
        ("launch:1234567890", "Эта кнопка не от бота алертов"),
        ("ack", "Эта кнопка не от бота алертов"),
        ("ack:../../etc", "Эта кнопка не от бота алертов"),
    ],
)
async def test_unknown_or_malformed_data_changes_nothing_and_says_why(
    opened: tuple[Bridge, str, dict[str, Any]], data: str, reply: str
) -> None:
    bridge, _, message = opened
    before = json.dumps(message, sort_keys=True)
    response = await press(bridge, click_body(data))
    assert response.status == 200
    await bridge.deliver()
    assert json.dumps(message, sort_keys=True) == before
    (dm,) = dms(bridge, ALICE)
    assert dm.startswith(reply)


async def test_refusals_for_state(opened: tuple[Bridge, str, dict[str, Any]]) -> None:
    bridge, ref, _ = opened
    await press(bridge, click_body(f"unack:{ref}"))
    await press(bridge, click_body(f"ack:{ref}"))
    await press(bridge, click_body(f"ack:{ref}", user_id=BOB))
    await press(bridge, click_body(f"resolve:{ref}"))
    await press(bridge, click_body(f"ack:{ref}", user_id=BOB))
    await bridge.deliver()
    assert dms(bridge, ALICE)[0] == "«DiskFull» никто не брал в работу. Ничего не изменено."
    assert dms(bridge, BOB) == [
        f"«DiskFull» уже в работе у <@{ALICE}>. Ничего не изменено.",
        "«DiskFull» уже решён. Ничего не изменено.",
    ]


async def test_user_not_allowed_on_the_route(make_bridge: BridgeFactory, tmp_path: Any) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("routes:\n  - {name: default, chat_id: 7, allowed_users: [4242]}\n")
    bridge = await make_bridge(rules_override=load_rules(path))
    response = await bridge.post_fixture("alertmanager/01-single-firing.json")
    (ref,) = (await response.json())["changed"]
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    await press(bridge, click_body(f"ack:{ref}", user_id=ALICE))
    await bridge.deliver()
    assert "Взял в работу" not in message["content"]
    assert dms(bridge, ALICE) == ["У вас нет прав на действия с «HighCPU». Ничего не изменено."]
    await press(bridge, click_body(f"ack:{ref}", user_id=BOB))
    await bridge.deliver()
    assert "Взял в работу" in message["content"]


async def test_racing_acks_record_one(opened: tuple[Bridge, str, dict[str, Any]]) -> None:
    bridge, ref, message = opened
    responses = await asyncio.gather(
        press(bridge, click_body(f"ack:{ref}", user_id=ALICE)),
        press(bridge, click_body(f"ack:{ref}", user_id=BOB)),
    )
    assert [r.status for r in responses] == [200, 200]
    await bridge.deliver()
    edits = [c for c in bridge.fake.ok_calls("/messages/{id}") if c.method == "PUT"]
    assert len(edits) == 1
    replies = sorted(dms(bridge, ALICE) + dms(bridge, BOB))
    assert len(replies) == 2
    assert replies[0].startswith("Вы взяли в работу") or replies[1].startswith("Вы взяли в работу")
    assert any("уже в работе у" in r for r in replies)
    assert len(bridge.fake.thread_comments(message["id"])) == 1


async def test_replayed_event_changes_nothing(opened: tuple[Bridge, str, dict[str, Any]]) -> None:
    bridge, ref, _ = opened
    body = click_body(f"ack:{ref}", trigger_id="same-trigger")
    first, second = await press(bridge, body), await press(bridge, body)
    assert (await first.json())["status"] == "accepted"
    assert second.status == 200 and (await second.json())["status"] == "duplicate"
    # the same trigger_id in a re-signed body (new timestamp) is the same event
    third = await press(bridge, click_body(f"ack:{ref}", trigger_id="same-trigger"))
    assert (await third.json())["status"] == "duplicate"
    await bridge.deliver()
    assert len(dms(bridge, ALICE)) == 1


@pytest.mark.parametrize(
    ("secret", "timestamp_shift", "reason"),
    [
        (None, 0, "Pachca-Signature"),  # unsigned
        ("another-secret", 0, "Pachca-Signature"),  # wrongly signed
        (SIGNING_SECRET, -61, "webhook_timestamp"),  # stale
        (SIGNING_SECRET, +61, "webhook_timestamp"),  # future-dated
    ],
)
async def test_bad_signature_or_time_is_401_and_changes_nothing(
    opened: tuple[Bridge, str, dict[str, Any]],
    secret: str | None,
    timestamp_shift: int,
    reason: str,
) -> None:
    bridge, ref, message = opened
    calls = len(bridge.fake.calls)
    response = await press(
        bridge, click_body(f"ack:{ref}", timestamp=time.time() + timestamp_shift), secret=secret
    )
    assert response.status == 401
    assert reason in (await response.json())["error"]
    await bridge.deliver()
    assert len(bridge.fake.calls) == calls
    assert "Взял" not in message["content"]


async def test_signature_covers_the_raw_bytes(opened: tuple[Bridge, str, dict[str, Any]]) -> None:
    bridge, ref, _ = opened
    body = click_body(f"ack:{ref}")
    tampered = body.replace(str(ALICE).encode(), str(BOB).encode())
    response = await bridge.client.post(
        "/pachca/webhook",
        data=tampered,
        headers={
            "Content-Type": "application/json",
            "Pachca-Signature": signature(SIGNING_SECRET, body),
        },
    )
    assert response.status == 401


async def test_freshness_uses_the_configured_window(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(BRIDGE_CALLBACK_MAX_AGE="5m", clock=lambda: 1_747_574_400 + 290)
    event = fixture_json("pachca/button-click.json")  # webhook_timestamp 1747574400
    response = await press(bridge, json.dumps(event).encode())
    assert response.status == 200


async def test_callbacks_refused_without_a_signing_secret(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(PACHCA_SIGNING_SECRET="")
    response = await press(bridge, click_body("ack:0123456789"), secret="")
    assert response.status == 401


async def test_source_ip_allow_list_and_trusted_proxies(make_bridge: BridgeFactory) -> None:
    strict = await make_bridge(BRIDGE_CALLBACK_ALLOW_IPS="37.200.70.177")
    body = click_body("ack:0123456789")
    assert (await press(strict, body)).status == 403
    spoofed = await press(
        strict, click_body("ack:0123456789"), headers={"X-Forwarded-For": "37.200.70.177"}
    )
    assert spoofed.status == 403  # 127.0.0.1 is not a trusted proxy
    behind = await make_bridge(
        BRIDGE_CALLBACK_ALLOW_IPS="37.200.70.177", BRIDGE_TRUSTED_PROXIES="127.0.0.0/8"
    )
    ok = await press(
        behind, click_body("ack:0123456789"), headers={"X-Forwarded-For": "10.9.9.9, 37.200.70.177"}
    )
    assert ok.status == 200
    outsider = await press(
        behind, click_body("ack:0123456789"), headers={"X-Forwarded-For": "37.200.70.177, 10.9.9.9"}
    )
    assert outsider.status == 403


async def test_body_over_limit_is_413(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(BRIDGE_MAX_BODY="100")
    assert (await press(bridge, click_body("ack:0123456789"))).status == 413


async def test_signed_but_unusable_events_are_acknowledged_and_ignored(bridge: Bridge) -> None:
    for body in (
        b"{not json",
        json.dumps(
            {"type": "button", "event": "click", "webhook_timestamp": int(time.time())}
        ).encode(),
    ):
        response = await press(bridge, body)
        assert response.status == 200 and (await response.json())["status"] == "ignored"
    reaction = fixture_json("pachca/reaction-new.json")
    reaction["webhook_timestamp"] = int(time.time())
    response = await press(bridge, json.dumps(reaction).encode())
    assert (await response.json())["status"] == "ignored"
    await bridge.deliver()
    assert bridge.fake.calls == []


async def test_store_failure_is_503_so_pachca_retries(
    opened: tuple[Bridge, str, dict[str, Any]],
) -> None:
    bridge, ref, _ = opened

    async def broken(*args: object, **kwargs: object) -> None:
        raise StoreError("disk full")

    bridge.app[STORE].save_incident = broken  # type: ignore[method-assign]
    body = click_body(f"ack:{ref}")
    assert (await press(bridge, body)).status == 503
    del bridge.app[STORE].save_incident  # type: ignore[attr-defined]
    response = await press(bridge, body)  # Pachca's retry is processed in full
    assert (await response.json())["status"] == "accepted"


async def test_unknown_user_name_falls_back_to_a_mention(bridge: Bridge) -> None:
    response = await bridge.post_fixture("alertmanager/01-single-firing.json")
    (ref,) = (await response.json())["changed"]
    await press(bridge, click_body(f"ack:{ref}", user_id=999))  # GET /users/999 -> 404
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    assert "👀 Взял в работу: <@999>," in message["content"]
