"""The incident timeline (SPEC 7): every change recorded in the same write as the change, by the
inbox, and each delivery by the outbox; repeats counted, not stored one by one; bounded per
incident; printed by `incident REF` and `incidents`."""

import json
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.actions import Action, ButtonData, apply_click
from bridge.cli import main
from bridge.incidents import Effect, close_unreported
from bridge.model import AlertStatus
from bridge.rules import RouteConfig
from bridge.silences import silenced
from bridge.timeline import changes
from tests.conftest import Bridge, BridgeFactory
from tests.test_callbacks import ALICE, BOB, click_body, press
from tests.test_incidents import NOW, run


def kinds_of(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.kind for e in events]


def test_changes_name_what_happened_to_each_alert_and_who_did_what() -> None:
    opened, partly, allgone = run(
        "alertmanager/02-group-3-firing.json",
        "alertmanager/04-group-1-resolved-2-firing.json",
        "alertmanager/05-group-all-resolved.json",
    )
    assert opened.incident is not None and partly.incident is not None
    first = changes(None, opened.incident, NOW, opened.effects)
    assert kinds_of(first) == ["opened", "fired", "fired", "fired"]
    assert {e.details["alert"] for e in first[1:]} == {"db-1:9100", "db-2:9100", "db-3:9100"}
    resolved = changes(opened.incident, partly.incident, NOW, partly.effects)
    assert kinds_of(resolved) == ["resolved"] and resolved[0].details["how"] == "reported"
    route = RouteConfig(name="default", chat_id=1000)
    acked = apply_click(partly.incident, ButtonData(Action.ACK, "x"), ALICE, route, NOW)
    assert acked.incident is not None
    (event,) = changes(partly.incident, acked.incident, NOW, acked.effects)
    assert (event.kind, event.details["by"]) == ("acked", ALICE)
    by_hand = apply_click(acked.incident, ButtonData(Action.RESOLVE, "x"), BOB, route, NOW)
    assert by_hand.incident is not None
    events = changes(acked.incident, by_hand.incident, NOW, by_hand.effects)
    assert kinds_of(events) == ["resolved", "resolved", "resolved_by_hand"]
    assert events[0].details["how"] == "by_hand" and events[-1].details["by"] == BOB
    quiet = close_unreported(partly.incident, NOW + timedelta(days=1), timedelta(hours=13))
    assert quiet.incident is not None
    events = changes(partly.incident, quiet.incident, NOW, quiet.effects)
    assert kinds_of(events) == ["resolved", "resolved", "closed_unreported"]
    assert {e.details.get("how") for e in events[:2]} == {"inferred"}
    assert allgone.incident is not None


def test_silences_are_told_apart_lifted_and_ended() -> None:
    (opened,) = run("alertmanager/02-group-3-firing.json")
    incident = opened.incident
    assert incident is not None
    until = NOW + timedelta(hours=1)
    on = silenced(incident, "sil-1", until, "Алиса", NOW)
    (event,) = changes(incident, on, NOW)
    assert event.kind == "silenced" and event.details == {
        "by": "Алиса",
        "until": until.timestamp(),
        "silence_id": "sil-1",
    }
    off = on.model_copy(update={"silence_id": None, "silenced_until": None})
    assert kinds_of(changes(on, off, NOW)) == ["unsilenced"]
    assert kinds_of(changes(on, off, NOW, [Effect.COMMENT_SILENCE_ENDED])) == ["silence_ended"]


async def test_end_to_end_the_timeline_holds_changes_presses_repeats_and_deliveries(
    bridge: Bridge,
) -> None:
    bridge.fake.add_user(ALICE, "Алиса", "Петрова", "alice")
    response = await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    (ref,) = (await response.json())["changed"]
    await bridge.deliver()
    for _ in range(3):  # Alertmanager's repeats: counted, not stored one by one
        await bridge.post_fixture("alertmanager/03-group-3-repeat.json")
    await press(bridge, click_body(f"ack:{ref}"))
    await bridge.post_fixture("alertmanager/05-group-all-resolved.json")
    await bridge.deliver()
    events, dropped = await bridge.store.timeline(ref)
    assert dropped == 0
    seen = kinds_of(events)
    assert seen[:4] == ["opened", "fired", "fired", "fired"]
    assert "acked" in seen and seen.count("resolved") == 3
    (repeats,) = [e for e in events if e.kind == "repeats"]
    assert repeats.details["count"] >= 3
    deliveries = [e.details for e in events if e.kind == "delivery"]
    assert {"op": "create", "result": "sent"}.items() <= deliveries[0].items()
    assert "took_ms" in deliveries[0] and any(d["op"] == "comment_acked" for d in deliveries)
    assert [e.at for e in events] == sorted(e.at for e in events)


async def test_cli_prints_an_incident_and_the_list(
    make_bridge: BridgeFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    url = f"sqlite:///{tmp_path / 'state.db'}"
    bridge = await make_bridge(store_url=url)
    response = await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    (ref,) = (await response.json())["changed"]
    await bridge.deliver()
    monkeypatch.setenv("BRIDGE_STORE", url)
    assert await asyncio.to_thread(main, ["incident", ref]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"{ref} firing")
    assert " opened " in out and " fired " in out and "delivery create sent" in out
    assert await asyncio.to_thread(main, ["incident", ref, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ref"] == ref and data["state"] == "firing"
    assert [e["kind"] for e in data["timeline"]][:2] == ["opened", "fired"]
    from bridge.store.sqlite import SQLiteStore

    async def everything(self: object) -> None:
        raise AssertionError("read every incident held")

    monkeypatch.setattr(SQLiteStore, "all_incidents", everything)  # listed a page at a time
    await bridge.post_fixture("alertmanager/01-single-firing.json")
    await bridge.post_fixture("alertmanager/06-single-resolved.json")
    assert await asyncio.to_thread(main, ["incidents", "--open"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(ref) and "DiskFull" in line
    assert await asyncio.to_thread(main, ["incidents", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(i["state"], i["ref"] == ref) for i in listed] == [
        ("firing", True),
        ("resolved", False),
    ]
    assert await asyncio.to_thread(main, ["incident", "ffffffffff"]) == 1
    assert "no incident ffffffffff" in capsys.readouterr().err
    assert AlertStatus.FIRING  # (the list above shows firing incidents first)
