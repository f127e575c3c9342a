"""End to end with a real Alertmanager: grouping, resolution, and silences from the chat."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.web.state import INBOX, METRICS, SILENCER
from tests.conftest import Bridge, BridgeFactory
from tests.e2e.conftest import INTAKE_TOKEN, Alertmanager, AlertmanagerProcess, alert, settle
from tests.test_callbacks import ALICE, click_body, data_buttons, dms, press


def message_of(bridge: Bridge, name: str) -> dict[str, Any]:
    (found,) = [m for m in bridge.fake.channel_messages() if f"**{name}**" in m["content"]]
    return found


def ref_of(message: dict[str, Any]) -> str:
    return data_buttons(message)[0].split(":")[1]


def received(bridge: Bridge) -> float:
    counter = bridge.app[METRICS].notifications
    return sum(counter.labels("alertmanager", s)._value.get() for s in ("firing", "resolved"))


async def check_silences(bridge: Bridge) -> None:
    """One round of the periodic silence check, then delivery."""
    silencer = bridge.app[SILENCER]
    assert silencer is not None
    await silencer.check_once(bridge.store)
    await bridge.deliver()


async def opened(bridge: Bridge, am: Alertmanager, name: str, *instances: str) -> dict[str, Any]:
    await am.push(*(alert(name, i) for i in instances))
    await settle(
        bridge, lambda: any(f"**{name}**" in m["content"] for m in bridge.fake.channel_messages())
    )
    message = message_of(bridge, name)
    await settle(bridge, lambda: f"🔥 {len(instances)} ·" in message_of(bridge, name)["content"])
    return message


async def test_pushed_alerts_become_one_message_per_group_and_resolve_in_place(
    wired: tuple[Bridge, Alertmanager],
) -> None:
    bridge, am = wired
    db = await opened(bridge, am, "DiskFull", "db-1:9100", "db-2:9100", "db-3:9100")
    await opened(bridge, am, "HighCPU", "web-1:9100")
    assert len(bridge.fake.channel_messages()) == 2
    await am.push(alert("DiskFull", "db-1:9100", resolved=True))
    await settle(bridge, lambda: "🔥 2 · ✅ 1" in db["content"])
    await am.push(*(alert("DiskFull", f"db-{i}:9100", resolved=True) for i in (2, 3)))
    await settle(bridge, lambda: db["content"].startswith("✅ **РЕШЕНО**"))
    assert len(bridge.fake.channel_messages()) == 2
    assert bridge.fake.thread_comments(db["id"])[-1].startswith("✅ Решено: DiskFull")


async def test_silence_button_silences_in_alertmanager_and_unsilence_expires_it(
    wired: tuple[Bridge, Alertmanager],
) -> None:
    bridge, am = wired
    bridge.fake.add_user(ALICE, "Алиса", "Петрова", "alice")
    message = await opened(bridge, am, "DiskFull", "db-1:9100")
    ref = ref_of(message)
    assert f"silence:{ref}:1h" in data_buttons(message)

    assert (await press(bridge, click_body(f"silence:{ref}:1h"))).status == 200
    await settle(bridge, lambda: "🔕 Заглушено до" in message["content"])
    (silence,) = [s for s in await am.get("/api/v2/silences") if s["status"]["state"] == "active"]
    assert silence["matchers"] == [
        {"name": "alertname", "value": "DiskFull", "isRegex": False, "isEqual": True}
    ]
    assert silence["createdBy"] == "Алиса Петрова"
    assert ref in silence["comment"] and "chat 1000" in silence["comment"]
    assert "(Алиса Петрова)" in message["content"]
    assert data_buttons(message)[2:] == [f"unsilence:{ref}"]
    assert bridge.fake.thread_comments(message["id"])[-1].startswith("🔕 Заглушено до")
    assert dms(bridge, ALICE)[-1].startswith("Вы заглушили «DiskFull» до")

    # silenced: a new alert of the group makes Alertmanager send nothing
    before = received(bridge)
    await am.push(alert("DiskFull", "db-2:9100"))
    await asyncio.sleep(4)  # two group_intervals
    assert received(bridge) == before

    assert (await press(bridge, click_body(f"unsilence:{ref}"))).status == 200
    await settle(bridge, lambda: "Заглушено" not in message["content"])
    (expired,) = await am.get("/api/v2/silences")
    assert expired["status"]["state"] == "expired"
    assert f"silence:{ref}:1h" in data_buttons(message)
    assert dms(bridge, ALICE)[-1] == "Вы сняли заглушение с «DiskFull»."
    # and Alertmanager notifies again: the group's second alert shows up
    await settle(bridge, lambda: "🔥 2 ·" in message["content"])


async def test_silence_from_alertmanager_ui_is_shown_and_its_end_too(
    wired: tuple[Bridge, Alertmanager],
) -> None:
    bridge, am = wired
    message = await opened(bridge, am, "HighCPU", "web-1:9100")
    silence_id = await am.silence({"alertname": "HighCPU"})
    await asyncio.sleep(0.5)  # Alertmanager marks the alert suppressed
    await check_silences(bridge)
    assert "🔕 Заглушено до" in message["content"] and "(Оля из UI)" in message["content"]
    await am.expire(silence_id)
    await asyncio.sleep(0.5)
    await check_silences(bridge)
    assert "Заглушено" not in message["content"]
    assert bridge.fake.thread_comments(message["id"])[-1].startswith("🔔 Заглушение закончилось")


async def test_alerts_resolved_while_silenced_resolve_the_message(
    wired: tuple[Bridge, Alertmanager],
) -> None:
    bridge, am = wired
    message = await opened(bridge, am, "HighCPU", "web-1:9100")
    await press(bridge, click_body(f"silence:{ref_of(message)}:4h"))
    await settle(bridge, lambda: "🔕" in message["content"])
    before = received(bridge)
    await am.push(alert("HighCPU", "web-1:9100", resolved=True))
    await asyncio.sleep(3)
    assert received(bridge) == before  # Alertmanager says nothing about it (#226)
    await check_silences(bridge)
    assert message["content"].startswith("🔴 **ГОРИТ**")  # gone once: not yet evidence
    await check_silences(bridge)
    assert message["content"].startswith("✅ **РЕШЕНО**")
    assert data_buttons(message) == []


async def test_unsilence_of_a_silence_alertmanager_forgot_counts_as_expired(
    wired: tuple[Bridge, Alertmanager],
) -> None:
    """Alertmanager 0.25 answers 500 "silence not found" (newer: 404) for an unknown id."""
    bridge, am = wired
    message = await opened(bridge, am, "HighCPU", "web-1:9100")
    ref = ref_of(message)
    await bridge.app[INBOX].silence_created(
        ref,
        ALICE,
        "00000000-0000-4000-8000-000000000000",
        datetime.now(UTC) + timedelta(hours=1),
        "ghost",
    )
    await bridge.deliver()
    assert "(ghost)" in message["content"]
    await press(bridge, click_body(f"unsilence:{ref}"))
    await settle(bridge, lambda: "Заглушено" not in message["content"])
    assert dms(bridge, ALICE)[-1] == "Вы сняли заглушение с «HighCPU»."


async def test_silence_for_a_duration_not_on_the_route_is_refused(
    wired: tuple[Bridge, Alertmanager],
) -> None:
    bridge, am = wired
    message = await opened(bridge, am, "HighCPU", "web-1:9100")
    ref = ref_of(message)
    await press(bridge, click_body(f"silence:{ref}:2h"))  # not a configured duration
    await bridge.deliver()
    assert dms(bridge, ALICE)[-1].startswith("Эта кнопка не от бота алертов")
    assert await am.get("/api/v2/silences") == []


async def test_a_refire_under_the_silence_of_a_resolved_incident_is_shown_silenced(
    wired: tuple[Bridge, Alertmanager],
) -> None:
    """Silenced from the chat, the alert resolves (the check-back sees it gone twice): the
    message shows it resolved and still silenced. It fires again under the silence, and
    Alertmanager says nothing: the check-back finds it and shows it firing, silenced, without
    pinging anyone."""
    bridge, am = wired
    message = await opened(bridge, am, "HighCPU", "web-1:9100")
    await press(bridge, click_body(f"silence:{ref_of(message)}:4h"))
    await settle(bridge, lambda: "🔕" in message["content"])
    await am.push(alert("HighCPU", "web-1:9100", resolved=True))
    await asyncio.sleep(1)
    await check_silences(bridge)
    await check_silences(bridge)
    assert message["content"].startswith("✅ **РЕШЕНО**")
    assert "🔕 Заглушено до" in message["content"]  # the silence lasts: still shown
    comments = len(bridge.fake.thread_comments(message["id"]))
    before = received(bridge)
    again = alert("HighCPU", "web-1:9100")
    again["startsAt"] = datetime.now(UTC).isoformat()  # a new episode
    await am.push(again)
    await asyncio.sleep(3)
    assert received(bridge) == before  # silenced: Alertmanager sends nothing
    await check_silences(bridge)
    assert message["content"].startswith("🔴 **ГОРИТ**") and "🔕 Заглушено до" in message["content"]
    assert len(bridge.fake.thread_comments(message["id"])) == comments  # nobody pinged


async def test_a_silence_whose_answer_was_lost_is_adopted_not_made_twice(
    make_bridge: BridgeFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Between the bridge and Alertmanager, a proxy forwards the first silence's creation
    and loses its answer (502), as a gateway timing out does. The retry finds the silence
    the lost attempt made and adopts it: made twice, Unsilence would expire the one the
    incident knows and the twin would keep the alerts silenced, hidden from everyone."""
    process = AlertmanagerProcess(tmp_path / "am")
    lost: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        url = process.url + request.path_qs
        body = await request.read()
        async with http.request(request.method, url, data=body, headers=request.headers) as got:
            answer = await got.read()
            if request.method == "POST" and request.path == "/api/v2/silences" and not lost:
                lost.append(answer.decode())
                return web.Response(status=502, text="<h1>502 Bad Gateway</h1>")
            return web.Response(status=got.status, body=answer, content_type=got.content_type)

    proxy = web.Application()
    proxy.router.add_route("*", "/{tail:.*}", forward)
    server = TestServer(proxy, host="127.0.0.1")
    await server.start_server()
    bridge = await make_bridge(
        ALERTMANAGER_URL=str(server.make_url("")).rstrip("/"),
        BRIDGE_WEBHOOK_TOKEN=INTAKE_TOKEN,
        BRIDGE_ALERTMANAGER_SETTLE="0s",
        BRIDGE_RETRY_MAX_DELAY="0.2s",
    )
    process.send_to(str(bridge.client.make_url("/webhook/alertmanager")))
    try:
        await process.start(http)
        am = Alertmanager(process.url, http)
        message = await opened(bridge, am, "DiskFull", "db-1:9100")
        ref = ref_of(message)
        assert (await press(bridge, click_body(f"silence:{ref}:1h"))).status == 200
        await settle(bridge, lambda: "🔕 Заглушено до" in message["content"])
        assert lost, "the proxy lost no answer"
        active = [s for s in await am.get("/api/v2/silences") if s["status"]["state"] == "active"]
        assert len(active) == 1, active
        assert (await press(bridge, click_body(f"unsilence:{ref}"))).status == 200
        await settle(bridge, lambda: "Заглушено" not in message["content"])
        states = [s["status"]["state"] for s in await am.get("/api/v2/silences")]
        assert states == ["expired"]
    finally:
        process.stop()
        await server.close()
