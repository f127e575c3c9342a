"""End to end with real Alertmanagers: the chat keeps telling the truth when an Alertmanager
restarts under a silenced incident, and when one replica of an HA pair is down."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Bridge, BridgeFactory
from tests.e2e.conftest import INTAKE_TOKEN, Alertmanager, AlertmanagerProcess, alert, settle
from tests.e2e.test_alertmanager import check_silences, opened, ref_of
from tests.test_callbacks import ALICE, click_body, dms, press

SETTLE = 3.0  # BRIDGE_ALERTMANAGER_SETTLE in these tests


async def test_an_alertmanager_restart_under_a_silenced_incident_does_not_resolve_it(
    make_bridge: BridgeFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The restarted Alertmanager holds no alerts until Prometheus re-sends them (here: pushed
    again 1 s later); the check-back runs meanwhile, twice, and must not take that for a
    resolution. Afterwards the incident is still firing and silenced."""
    am = AlertmanagerProcess(tmp_path / "am")
    bridge = await make_bridge(
        ALERTMANAGER_URL=am.url,
        BRIDGE_WEBHOOK_TOKEN=INTAKE_TOKEN,
        BRIDGE_ALERTMANAGER_SETTLE=f"{SETTLE}s",
    )
    am.send_to(str(bridge.client.make_url("/webhook/alertmanager")))
    await am.start(http)
    try:
        api = Alertmanager(am.url, http)
        message = await opened(bridge, api, "HighCPU", "web-1:9100")
        await press(bridge, click_body(f"silence:{ref_of(message)}:4h"))
        await settle(bridge, lambda: "🔕" in message["content"])
        await asyncio.sleep(SETTLE)  # it has run long enough: its view counts
        await check_silences(bridge)
        assert message["content"].startswith("🔴 **ГОРИТ**")

        am.stop()  # rescheduled: a new process, the silence kept in its data folder
        await am.start(http)
        assert await api.get("/api/v2/alerts") == []
        await check_silences(bridge)
        await check_silences(bridge)
        assert message["content"].startswith("🔴 **ГОРИТ**"), "resolved from an empty list"
        assert "🔕" in message["content"]

        await api.push(alert("HighCPU", "web-1:9100"))  # Prometheus re-sends it
        await asyncio.sleep(SETTLE)
        await check_silences(bridge)
        await check_silences(bridge)
        assert message["content"].startswith("🔴 **ГОРИТ**") and "🔕" in message["content"]
    finally:
        am.stop()


@pytest.fixture
async def ha_pair(
    make_bridge: BridgeFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> AsyncIterator[tuple[Bridge, AlertmanagerProcess, AlertmanagerProcess]]:
    """Two Alertmanagers in one cluster, both sending to the bridge; ALERTMANAGER_URL names
    both."""
    folder = tmp_path
    a = AlertmanagerProcess(folder / "a", peers=[])
    b = AlertmanagerProcess(folder / "b", peers=[a.cluster_address])
    bridge = await make_bridge(
        ALERTMANAGER_URL=f"{a.url},{b.url}",
        BRIDGE_WEBHOOK_TOKEN=INTAKE_TOKEN,
        BRIDGE_ALERTMANAGER_SETTLE="0s",
    )
    webhook = str(bridge.client.make_url("/webhook/alertmanager"))
    for am in (a, b):
        am.send_to(webhook)
        await am.start(http)
    try:
        yield bridge, a, b
    finally:
        a.stop()
        b.stop()


async def test_with_one_alertmanager_of_the_pair_down_silences_still_work(
    ha_pair: tuple[Bridge, AlertmanagerProcess, AlertmanagerProcess], http: aiohttp.ClientSession
) -> None:
    bridge, a, b = ha_pair
    bridge.fake.add_user(ALICE, "Алиса", "Петрова", "alice")
    firing = alert("DiskFull", "db-1:9100")
    await Alertmanager(b.url, http).push(firing)  # Prometheus sends to both replicas
    message = await opened(bridge, Alertmanager(a.url, http), "DiskFull", "db-1:9100")
    ref = ref_of(message)

    a.stop()  # the first URL is down
    await press(bridge, click_body(f"silence:{ref}:1h"))
    await settle(bridge, lambda: "🔕 Заглушено до" in message["content"])
    assert dms(bridge, ALICE)[-1].startswith("Вы заглушили «DiskFull» до")
    (silence,) = await Alertmanager(b.url, http).get("/api/v2/silences")
    assert silence["status"]["state"] == "active"
    await check_silences(bridge)  # reads the replica that answers: still silenced, firing
    await check_silences(bridge)
    assert message["content"].startswith("🔴 **ГОРИТ**") and "🔕" in message["content"]

    b.stop()  # both down: the press fails, and the person is told so in a sentence
    await press(bridge, click_body(f"unsilence:{ref}"))
    await settle(bridge, lambda: dms(bridge, ALICE)[-1].startswith("Не получилось"), 40)
    assert dms(bridge, ALICE)[-1] == ("Не получилось: Alertmanager недоступен. Ничего не изменено.")
    assert "🔕" in message["content"]  # nothing changed, and nothing was resolved
    await check_silences(bridge)
    assert message["content"].startswith("🔴 **ГОРИТ**")


async def test_a_member_silenced_in_the_ui_is_not_resolved_with_its_group(
    wired: tuple[Bridge, Alertmanager],
) -> None:
    """Group {web-1, web-2}; web-2 silenced in Alertmanager's UI; web-1 recovers. Alertmanager
    sends "resolved" listing web-1 only. web-2 still fires: the message must not say РЕШЕНО.
    When the silence ends, Alertmanager sends web-2 (its original startsAt): still one message,
    firing."""
    bridge, am = wired
    message = await opened(bridge, am, "HighCPU", "web-1:9100", "web-2:9100")
    silence_id = await am.silence({"alertname": "HighCPU", "instance": "web-2:9100"})
    await asyncio.sleep(0.5)
    await am.push(alert("HighCPU", "web-1:9100", resolved=True))
    await settle(bridge, lambda: "✅ 1" in message["content"])
    assert message["content"].startswith("🔴 **ГОРИТ**"), "a silenced member taken for resolved"
    assert "🔥 1 · ✅ 1" in message["content"]
    await am.expire(silence_id)
    await asyncio.sleep(4)  # Alertmanager's next group_interval notifies web-2 again
    await bridge.deliver()
    assert message["content"].startswith("🔴 **ГОРИТ**") and "🔥 1 · ✅ 1" in message["content"]
    assert len(bridge.fake.channel_messages()) == 1
