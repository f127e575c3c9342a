"""Storms (SPEC 6): what matters first. No timing here (bench/storm.py measures): the order in
which Pachca receives work when much is queued at once."""

import asyncio
import json
from typing import Any

from tests.conftest import Bridge, BridgeFactory, fixture_json
from tests.test_callbacks import ALICE, click_body, press


def group(n: int, severity: str, status: str = "firing") -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        json.dumps(fixture_json("alertmanager/01-single-firing.json")).replace(
            "HighCPU", f"Storm{n}"
        )
    )
    body["commonLabels"]["severity"] = severity
    for alert in body["alerts"]:
        alert["labels"]["severity"] = severity
        if status == "resolved":
            alert["status"] = "resolved"
            alert["endsAt"] = "2026-11-24T12:40:00Z"
    body["status"] = status
    return body


async def one_at_a_time(bridge: Bridge) -> None:
    from bridge.web.state import OUTBOX

    bridge.app[OUTBOX].concurrency = 1  # so the order is visible
    await bridge.deliver()


async def test_criticals_are_created_before_any_warning_queued_with_them(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge()
    for n in range(12):  # warnings first, interleaved with criticals
        await bridge.post(group(n, "warning" if n % 2 == 0 else "critical"))
    await bridge.post(group(99, "info"))
    await one_at_a_time(bridge)
    created = [
        c.body["message"]["content"].splitlines()[0]
        for c in bridge.fake.calls
        if c.method == "POST" and c.template == "/messages" and c.status < 300
    ]
    severities = [
        "critical" if "critical" in h else "warning" if "warning" in h else "info" for h in created
    ]
    assert severities == ["critical"] * 6 + ["warning"] * 6 + ["info"]


async def test_a_press_goes_ahead_of_queued_edits(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    bridge.fake.add_user(ALICE, "Алиса", "Петрова", "alice")
    refs = []
    for n in range(10):
        response = await bridge.post(group(n, "warning"))
        refs += (await response.json())["changed"]
    await bridge.deliver()
    bridge.fake.calls.clear()
    for n in range(10):  # ten edits (and comments) queued...
        await bridge.post(group(n, "warning", "resolved"))
    await press(bridge, click_body(f"ack:{refs[-1]}"))  # ...then a person presses
    await one_at_a_time(bridge)
    ok = [c for c in bridge.fake.calls if c.status < 300]
    dm = next(
        i
        for i, c in enumerate(ok)
        if c.method == "POST" and c.body and c.body["message"]["entity_type"] == "user"
    )
    edits = [i for i, c in enumerate(ok) if c.method == "PUT"]
    # the pressed incident's own queue (its edit) and the answer come before the others' edits
    assert dm < edits[2], (dm, edits)


async def test_a_press_calls_pachca_ahead_of_the_rate_limiters_queue(
    make_bridge: BridgeFactory,
) -> None:
    """The calls a press's answer makes (its incident's edit, the DM) are URGENT for the rate
    limiter, so they take the next free call rather than wait behind every call queued; the
    storm's other calls are not."""
    from bridge.ratelimit import URGENT
    from bridge.web.state import PACHCA

    bridge = await make_bridge()
    bridge.fake.add_user(ALICE, "Алиса", "Петрова", "alice")
    response = await bridge.post(group(1, "warning"))
    (ref,) = (await response.json())["changed"]
    await bridge.post(group(2, "warning"))
    await bridge.deliver()
    limiter = bridge.app[PACHCA].limiter
    assert limiter is not None
    asked: list[bool] = []
    acquire = limiter.acquire

    async def recorded() -> None:
        asked.append(URGENT.get())
        await acquire()

    limiter.acquire = recorded  # type: ignore[method-assign]
    await bridge.post(group(2, "warning", "resolved"))  # an edit and a comment, not urgent
    await one_at_a_time(bridge)
    assert asked and not any(asked)
    asked.clear()
    await press(bridge, click_body(f"ack:{ref}"))
    await one_at_a_time(bridge)
    assert len(asked) >= 2 and all(asked)  # the edit and the DM
    assert URGENT.get() is False


class HeldSaves:
    """A store whose saves of the storm's incidents wait for `gate` (a slow disk), counted;
    `saved`: the incidents' keys in the order they were saved."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.waiting = 0
        self.saved: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def save_incident(self, incident: Any, *args: Any, **kwargs: Any) -> Any:
        if "Storm1" in incident.key:  # the storm below, not the incident pressed
            self.waiting += 1
            await self.gate.wait()
            self.waiting -= 1
        self.saved.append(incident.key)
        return await self.inner.save_incident(incident, *args, **kwargs)

    async def until_waiting(self, n: int) -> None:
        """Until `n` saves wait for the gate (2 s at most)."""
        for _ in range(200):
            if self.waiting >= n:
                return
            await asyncio.sleep(0.01)


async def bridge_with_held_saves(make_bridge: BridgeFactory) -> tuple[Bridge, HeldSaves]:
    bridge = await make_bridge(wrap_store=HeldSaves)
    assert isinstance(bridge.store, HeldSaves)
    return bridge, bridge.store


async def test_notifications_are_recorded_a_few_at_a_time_and_a_press_is_not_held_up(
    make_bridge: BridgeFactory,
) -> None:
    """A storm's notifications take INTAKE_AT_ONCE slots to be recorded; the rest wait. A
    press, and a repeat of a body already recorded, are answered meanwhile."""
    from bridge.web.app import INTAKE_AT_ONCE

    bridge, store = await bridge_with_held_saves(make_bridge)
    bridge.fake.add_user(ALICE, "Алиса", "Петрова", "alice")
    known = json.dumps(group(0, "warning"))
    response = await bridge.post(known)
    (ref,) = (await response.json())["changed"]
    storm = [
        asyncio.create_task(bridge.post(group(100 + n, "warning")))
        for n in range(INTAKE_AT_ONCE + 5)
    ]
    await store.until_waiting(INTAKE_AT_ONCE)
    await asyncio.sleep(0.05)
    assert store.waiting == INTAKE_AT_ONCE  # the others have not got as far as the store
    assert (await press(bridge, click_body(f"ack:{ref}"))).status == 200
    assert (await bridge.post(known)).status == 200  # a repeat: answered from memory
    assert not any(task.done() for task in storm)
    store.gate.set()
    answers = await asyncio.gather(*storm)
    assert [a.status for a in answers] == [200] * len(storm)
    assert len(await bridge.store.open_incidents()) == 1 + len(storm)


async def test_a_critical_is_recorded_before_the_warnings_waiting_ahead_of_it(
    make_bridge: BridgeFactory,
) -> None:
    """With every intake slot taken, notifications wait: a critical that arrives after two
    warnings is recorded first, and the warnings in the order they came."""
    from bridge.web.app import INTAKE_AT_ONCE

    bridge, store = await bridge_with_held_saves(make_bridge)
    first = [
        asyncio.create_task(bridge.post(group(100 + n, "warning"))) for n in range(INTAKE_AT_ONCE)
    ]
    await store.until_waiting(INTAKE_AT_ONCE)
    queued = []
    for n in (200, 201):
        queued.append(asyncio.create_task(bridge.post(group(n, "warning"))))
        await asyncio.sleep(0.05)
    queued.append(asyncio.create_task(bridge.post(group(300, "critical"))))
    await asyncio.sleep(0.05)
    store.gate.set()
    answers = await asyncio.gather(*first, *queued)
    assert {a.status for a in answers} == {200}
    after = [
        name
        for key in store.saved
        for name in ("Storm200", "Storm201", "Storm300")
        if f'"{name}"' in key
    ]
    assert after == ["Storm300", "Storm200", "Storm201"]
