"""Polling mode against the fake Pachca's event history: same handler, same idempotency."""

import copy
from typing import Any

import pytest

from bridge.cli import main, register_webhook
from bridge.pachca import PachcaClient
from bridge.poller import Poller
from bridge.web.state import EVENTS, PACHCA
from tests.conftest import Bridge, fixture_json


def history_event(n: int, data: str, user_id: int = 2345) -> dict[str, Any]:
    event = copy.deepcopy(fixture_json("pachca/webhook-events-page.json")["data"][0])
    event["id"] = f"01KAJZ2XDSS2S3DSW9EXJZ{n:04d}"
    event["payload"].update(data=data, user_id=user_id, trigger_id=f"poll-trigger-{n}")
    return event


async def opened_ref(bridge: Bridge) -> str:
    response = await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    await bridge.deliver()
    ref: str = (await response.json())["changed"][0]
    return ref


def poller(bridge: Bridge) -> Poller:
    client = bridge.app[PACHCA]
    assert isinstance(client, PachcaClient)
    return Poller(client, bridge.app[EVENTS], interval=0.01)


async def test_polled_click_is_processed_and_deleted(bridge: Bridge) -> None:
    ref = await opened_ref(bridge)
    bridge.fake.events = [history_event(1, f"ack:{ref}")]
    assert await poller(bridge).poll_once() == 1
    assert bridge.fake.events == []
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    assert "👀 Взял в работу" in message["content"]


async def test_every_page_is_drained_with_the_cursor(bridge: Bridge) -> None:
    ref = await opened_ref(bridge)
    bridge.fake.page_size = 2
    bridge.fake.events = [history_event(n, f"ack:{ref}", user_id=100 + n) for n in range(5)]
    assert await poller(bridge).poll_once() == 5
    assert bridge.fake.events == []
    lists = [c for c in bridge.fake.ok_calls("/webhooks/events") if c.method == "GET"]
    assert len(lists) == 3


async def test_stop_between_processing_and_delete_processes_once(bridge: Bridge) -> None:
    ref = await opened_ref(bridge)
    bridge.fake.events = [history_event(1, f"ack:{ref}")]
    stopping = poller(bridge)
    real_delete = stopping.history.delete_event

    class Stopped(Exception):
        pass

    async def crash(event_id: str) -> None:
        raise Stopped  # the process dies after processing, before deleting

    stopping.history.delete_event = crash  # type: ignore[method-assign]
    with pytest.raises(Stopped):
        await stopping.poll_once()
    assert len(bridge.fake.events) == 1  # still in Pachca's history
    stopping.history.delete_event = real_delete  # type: ignore[method-assign]
    assert await poller(bridge).poll_once() == 1  # seen again: recognised, deleted
    assert bridge.fake.events == []
    await bridge.deliver()
    dms = [m for m in bridge.fake.messages.values() if m["entity_type"] == "user"]
    assert len(dms) == 1  # processed exactly once
    edits = [c for c in bridge.fake.ok_calls("/messages/{id}") if c.method == "PUT"]
    assert len(edits) == 1


async def test_webhook_and_polling_share_idempotency(bridge: Bridge) -> None:
    """The same press seen by webhook and by polling is one press."""
    from tests.test_callbacks import click_body, press

    ref = await opened_ref(bridge)
    event = history_event(1, f"ack:{ref}")
    body = click_body(f"ack:{ref}", trigger_id=event["payload"]["trigger_id"])
    assert (await (await press(bridge, body)).json())["status"] == "accepted"
    bridge.fake.events = [event]
    await poller(bridge).poll_once()
    await bridge.deliver()
    assert len([m for m in bridge.fake.messages.values() if m["entity_type"] == "user"]) == 1


async def test_non_button_and_broken_events_are_deleted(bridge: Bridge) -> None:
    reaction = history_event(1, "x")
    reaction["payload"] = fixture_json("pachca/reaction-new.json")
    broken = history_event(2, "x")
    del broken["payload"]["user_id"]
    bridge.fake.events = [reaction, broken]
    assert await poller(bridge).poll_once() == 2
    assert bridge.fake.events == []
    # the fake rightly flagged serving a payload off Pachca's spec; here that is the point
    assert all("data/1/payload" in v for v in bridge.fake.violations)
    bridge.fake.violations.clear()


async def test_register_webhook_sets_the_outgoing_url(fake_pachca: Any, monkeypatch: Any) -> None:
    fake, url = fake_pachca
    monkeypatch.setenv("PACHCA_TOKEN", fake.token)
    monkeypatch.setenv("PACHCA_API_URL", url)
    monkeypatch.setenv("BRIDGE_PUBLIC_URL", "https://bridge.example.com/")
    assert await register_webhook(disable=False) == 0
    assert fake.webhook_url == "https://bridge.example.com/pachca/webhook"
    assert await register_webhook(disable=True) == 0
    assert fake.webhook_url == ""


def test_register_webhook_needs_the_public_url(monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setenv("PACHCA_TOKEN", "t")
    monkeypatch.delenv("BRIDGE_PUBLIC_URL", raising=False)
    assert main(["register-webhook"]) == 1
    assert "BRIDGE_PUBLIC_URL is required" in capsys.readouterr().err


def test_register_webhook_with_pachca_unreachable_is_one_line_naming_the_setting(
    monkeypatch: Any, capsys: Any
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("PACHCA_TOKEN", "t")
    monkeypatch.setenv("PACHCA_API_URL", dead)
    monkeypatch.setenv("PACHCA_TIMEOUT", "2s")
    monkeypatch.setenv("BRIDGE_PUBLIC_URL", "https://bridge.example.com")
    assert main(["register-webhook"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"Pachca at {dead} (PACHCA_API_URL) cannot be reached: ")
