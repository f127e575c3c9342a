"""Captured Alertmanager payloads through the real HTTP endpoint, delivered to a fake Pachca."""

import asyncio
import copy
import json
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, Bridge, BridgeFactory, fixture_bytes, fixture_json

CREATE = ("POST", "/messages")
EDIT = ("PUT", "/messages/{id}")
THREAD = ("POST", "/messages/{id}/thread")


def calls(bridge: Bridge) -> list[tuple[str, str]]:
    return [(c.method, c.template) for c in bridge.fake.ok_calls()]


async def feed(bridge: Bridge, *names: str) -> None:
    for name in names:
        await bridge.post_fixture(name)
        await bridge.deliver()


@pytest.mark.parametrize(
    "name",
    sorted(
        str(p.relative_to(FIXTURES))
        for folder in ("alertmanager", "alertmanager-ha", "alertmanager-ha-split")
        for p in (FIXTURES / folder).glob("*.json")
    ),
)
async def test_every_fixture_is_accepted_and_delivered(bridge: Bridge, name: str) -> None:
    response = await bridge.post(fixture_bytes(name))
    assert response.status == 200
    await bridge.deliver()
    payload = json.loads(fixture_bytes(name))
    firing = any(a["status"] == "firing" for a in payload["alerts"])
    # a firing group becomes exactly one channel message; a lone resolution opens nothing
    assert len(bridge.fake.channel_messages()) == (1 if firing else 0)


async def test_open_repeat_resolve_one_message_edited_in_place(bridge: Bridge) -> None:
    await feed(bridge, "alertmanager/02-group-3-firing.json")
    assert calls(bridge) == [CREATE]
    (message,) = bridge.fake.channel_messages()
    assert message["entity_id"] == 1001  # routed by team="db"
    assert "@dba_oncall" in message["content"]

    await feed(bridge, "alertmanager/03-group-3-repeat.json")
    assert calls(bridge) == [CREATE], "a repeat must make no Pachca call"

    await feed(bridge, "alertmanager/04-group-1-resolved-2-firing.json")
    assert calls(bridge) == [CREATE, EDIT]
    assert "🔥 2 · ✅ 1" in message["content"]

    await feed(bridge, "alertmanager/05-group-all-resolved.json")
    assert calls(bridge) == [CREATE, EDIT, EDIT, THREAD, CREATE]
    assert message["content"].startswith("✅ **РЕШЕНО**")
    assert all("data" not in b for row in (message["buttons"] or []) for b in row)
    (comment,) = bridge.fake.thread_comments(message["id"])
    assert comment.startswith("✅ Решено: DiskFull")
    assert len(bridge.fake.channel_messages()) == 1


async def test_refire_reopens_the_same_message_with_a_comment(bridge: Bridge) -> None:
    await feed(
        bridge, "alertmanager/02-group-3-firing.json", "alertmanager/05-group-all-resolved.json"
    )
    # alertmanager-ha-split holds the same group firing again later (newer startsAt)
    await feed(bridge, "alertmanager-ha-split/01-firing-from-am-a.json")
    (message,) = bridge.fake.channel_messages()
    assert "ГОРИТ" in message["content"]
    comments = bridge.fake.thread_comments(message["id"])
    assert comments[-1].startswith("🔥 Снова горит: DiskFull")
    assert "@dba_oncall" in comments[-1]


@pytest.mark.parametrize(
    "names",
    [
        (
            "alertmanager-ha/10-unclustered-firing-from-am-0.json",
            "alertmanager-ha/11-unclustered-firing-from-am-1.json",
        ),
        (
            "alertmanager-ha-split/01-firing-from-am-a.json",
            "alertmanager-ha-split/02-firing-from-am-b.json",
        ),
    ],
)
async def test_racing_ha_copies_make_one_message(bridge: Bridge, names: tuple[str, str]) -> None:
    bodies = [fixture_bytes(n) for n in names]
    responses = await asyncio.gather(*(bridge.post(b) for b in bodies * 3))
    assert [r.status for r in responses] == [200] * 6
    await bridge.deliver()
    assert calls(bridge) == [CREATE]


async def test_racing_ha_resolutions_make_one_edit(bridge: Bridge) -> None:
    await feed(bridge, "alertmanager-ha/10-unclustered-firing-from-am-0.json")
    bodies = [
        fixture_bytes("alertmanager-ha/12-unclustered-resolved-from-am-1.json"),
        fixture_bytes("alertmanager-ha/13-unclustered-resolved-from-am-0.json"),
    ]
    await asyncio.gather(*(bridge.post(b) for b in bodies))
    await bridge.deliver()
    assert calls(bridge) == [CREATE, EDIT, THREAD, CREATE]


async def test_ha_stale_firing_copy_does_not_reopen(bridge: Bridge) -> None:
    await feed(
        bridge,
        "alertmanager-ha/04-short-timers-firing-from-am-b.json",
        "alertmanager-ha/05-short-timers-resolved-from-am-b.json",
        "alertmanager-ha/06-short-timers-stale-firing-from-am-a.json",
        "alertmanager-ha/07-short-timers-resolved-again-from-am-a.json",
    )
    assert calls(bridge) == [CREATE, EDIT, THREAD, CREATE]
    (message,) = bridge.fake.channel_messages()
    assert "РЕШЕНО" in message["content"]


async def test_slow_receiver_copies_are_deduplicated(bridge: Bridge) -> None:
    await feed(
        bridge,
        "alertmanager-ha/08-slow-receiver-copy-from-am-b.json",
        "alertmanager-ha/09-slow-receiver-copy-from-am-a.json",
        "alertmanager-ha/08-slow-receiver-copy-from-am-b.json",
    )
    assert calls(bridge) == [CREATE]


async def test_truncated_group_shows_and_n_more(bridge: Bridge) -> None:
    await feed(bridge, "alertmanager/07-truncated-max-alerts-3-of-7.json")
    (message,) = bridge.fake.channel_messages()
    assert "…и ещё 4" in message["content"]
    await feed(
        bridge,
        "alertmanager/08-truncated-2-resolved-of-7.json",
        "alertmanager/09-truncated-after-resolved-dropped.json",
    )
    assert calls(bridge) == [CREATE, EDIT, EDIT]
    assert "…и ещё 2" in message["content"]


async def test_changes_queued_behind_pachca_coalesce_into_one_edit(bridge: Bridge) -> None:
    await feed(bridge, "alertmanager/02-group-3-firing.json")
    for name in (
        "alertmanager/04-group-1-resolved-2-firing.json",
        "alertmanager/05-group-all-resolved.json",
    ):
        await bridge.post_fixture(name)
    await bridge.deliver()
    # two changes recorded before the outbox ran: one edit with the latest state
    assert calls(bridge).count(EDIT) == 1
    (message,) = bridge.fake.channel_messages()
    assert "РЕШЕНО" in message["content"]


async def test_two_groups_at_once_make_two_messages(bridge: Bridge) -> None:
    body = json.loads(fixture_bytes("alertmanager/10-group-by-alertname-and-cluster.json"))
    twin = json.loads(json.dumps(body).replace("prod-eu", "prod-us"))
    await asyncio.gather(bridge.post(body), bridge.post(twin))
    await bridge.deliver()
    assert len(bridge.fake.channel_messages()) == 2


async def test_incident_survives_a_restart_with_sqlite(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first = await make_bridge(url)
    await feed(first, "alertmanager/02-group-3-firing.json")
    await first.client.close()

    second = await make_bridge(url)
    await feed(
        second,
        "alertmanager/03-group-3-repeat.json",
        "alertmanager/04-group-1-resolved-2-firing.json",
    )
    assert calls(second) == [CREATE, EDIT]  # the repeat after restart still made no call
    (message,) = second.fake.channel_messages()
    assert "🔥 2 · ✅ 1" in message["content"]


async def test_undelivered_changes_survive_a_restart(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first = await make_bridge(url)
    await first.post_fixture("alertmanager/02-group-3-firing.json")  # accepted, not yet sent
    await first.client.close()
    second = await make_bridge(url)
    await second.deliver()
    assert calls(second) == [CREATE]


async def test_continue_route_delivers_to_both_chats(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    from bridge.rules import load_rules

    path = tmp_path / "r.yaml"
    path.write_text("""routes:
  - {name: db, matchers: ['team="db"'], chat_id: 1, continue: true}
  - {name: crit, matchers: ['severity="critical"'], chat_id: 2}
  - {name: default, chat_id: 3}
""")
    bridge = await make_bridge(rules_override=load_rules(path))
    await feed(bridge, "alertmanager/02-group-3-firing.json", "alertmanager/03-group-3-repeat.json")
    assert sorted(m["entity_id"] for m in bridge.fake.channel_messages()) == [1, 2]
    assert calls(bridge) == [CREATE, CREATE]


async def test_an_incident_stays_in_the_chat_it_opened_in_when_routing_moves(
    make_bridge: BridgeFactory,
) -> None:
    """The group opens in the databases chat (team=db). An alert with team=web joins the
    group (group_by: [alertname]): the common labels lose `team`, routing now says the default
    chat. The incident stays where it opened and gets its resolution there; the default chat
    gets nothing. Once it is finished, routing decides again."""
    bridge = await make_bridge()
    body = fixture_json("alertmanager/02-group-3-firing.json")
    assert (await bridge.post(body)).status == 200
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    assert message["entity_id"] == 1001
    joined = copy.deepcopy(body)
    web = copy.deepcopy(joined["alerts"][0])
    web["labels"] = {**web["labels"], "instance": "web-1:9100", "team": "web"}
    web["fingerprint"] = "00000000000000aa"
    joined["alerts"].append(web)
    del joined["commonLabels"]["team"]
    assert (await bridge.post(joined)).status == 200
    resolved = copy.deepcopy(joined)
    resolved["status"] = "resolved"
    for alert in resolved["alerts"]:
        alert["status"] = "resolved"
        alert["endsAt"] = "2026-11-24T13:00:00Z"
    assert (await bridge.post(resolved)).status == 200
    await bridge.deliver()
    assert [m["id"] for m in bridge.fake.channel_messages()] == [message["id"]]
    assert "🔥 0 · ✅ 4" in message["content"] and message["content"].startswith("✅ **РЕШЕНО**")
    assert bridge.fake.thread_comments(message["id"])[-1].startswith("✅ Решено")
