"""Reminders, escalation chains and the daily digest, on a controllable clock; ack by
reaction and the chat commands."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.digest import digests_due
from bridge.errors import StoreError
from bridge.rules import Rules, load_rules
from bridge.scheduler import Scheduler
from bridge.store import Store
from bridge.web.state import INBOX, OUTBOX
from tests.conftest import Bridge, BridgeFactory, fixture_json, no_whole_reads
from tests.faulty_store import FaultyStore
from tests.test_callbacks import ALICE, click_body, dms, press

T0 = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)  # 08:00 in Moscow

RULES = """
routes:
  - name: databases
    matchers: ['team="db"']
    chat_id: 1001
    mentions: ["@oncall"]
    remind_every: 30m
    escalation:
      - {after: 15m, mention: ["@dba_lead"]}
      - {after: 45m, mention: ["<@42>"], chat_id: 2000}
    digest: {at: "09:00", timezone: Europe/Moscow}
  - name: default
    chat_id: 1000
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def oncall_rules(tmp_path: Path) -> Rules:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return load_rules(path)


async def oncall_bridge(
    make_bridge: BridgeFactory, rules: Rules, clock: Clock, store_url: str = "memory://"
) -> tuple[Bridge, Scheduler]:
    bridge = await make_bridge(store_url, rules_override=rules)
    bridge.app[INBOX].clock = clock
    return bridge, Scheduler(bridge.store, bridge.app[INBOX], rules, clock)


async def at(bridge: Bridge, scheduler: Scheduler, clock: Clock, minutes: float) -> None:
    clock.now = T0 + timedelta(minutes=minutes)
    await scheduler.tick()
    await bridge.deliver()


def thread(bridge: Bridge) -> list[str]:
    """The thread of the DiskFull incident's message."""
    (message,) = [
        m
        for m in bridge.fake.channel_messages()
        if m["entity_id"] == 1001 and "**DiskFull**" in m["content"].splitlines()[0]
    ]
    return bridge.fake.thread_comments(message["id"])


async def test_escalation_steps_fire_in_order_once_and_reminders_repeat(
    make_bridge: BridgeFactory, oncall_rules: Rules
) -> None:
    clock = Clock()
    bridge, scheduler = await oncall_bridge(make_bridge, oncall_rules, clock)
    await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    await bridge.deliver()
    await at(bridge, scheduler, clock, 10)
    assert thread(bridge) == []
    await at(bridge, scheduler, clock, 16)
    await at(bridge, scheduler, clock, 17)
    assert thread(bridge) == ["⏫ Эскалация: @dba_lead"]
    await at(bridge, scheduler, clock, 31)
    assert thread(bridge)[-1].startswith("⏰ Всё ещё горит, и никто не взял в работу (31м)")
    assert thread(bridge)[-1].endswith("@oncall")
    await at(bridge, scheduler, clock, 46)
    assert thread(bridge)[-1] == "⏫ Эскалация: <@42>"
    (elsewhere,) = [m for m in bridge.fake.channel_messages() if m["entity_id"] == 2000]
    (original,) = [
        m
        for m in bridge.fake.channel_messages()
        if m["entity_id"] == 1001 and "**DiskFull**" in m["content"]
    ]
    assert elsewhere["content"].startswith("⏫ **DiskFull** горит 46м, и никто не взял в работу.")
    assert f"https://app.pachca.com/chats/1001?message={original['id']}" in elsewhere["content"]
    await at(bridge, scheduler, clock, 61)
    assert sum(c.startswith("⏰") for c in thread(bridge)) == 2
    assert sum(c.startswith("⏫") for c in thread(bridge)) == 2


async def test_ack_stops_reminders_and_escalation(
    make_bridge: BridgeFactory, oncall_rules: Rules
) -> None:
    clock = Clock()
    bridge, scheduler = await oncall_bridge(make_bridge, oncall_rules, clock)
    response = await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    (ref,) = (await response.json())["changed"]
    await bridge.deliver()
    await at(bridge, scheduler, clock, 16)
    await press(bridge, click_body(f"ack:{ref}"))
    await bridge.deliver()
    before = len(thread(bridge))
    for minutes in (31, 46, 120):
        await at(bridge, scheduler, clock, minutes)
    assert len(thread(bridge)) == before


async def test_resolution_stops_and_a_refire_starts_a_new_chain(
    make_bridge: BridgeFactory, oncall_rules: Rules
) -> None:
    clock = Clock()
    bridge, scheduler = await oncall_bridge(make_bridge, oncall_rules, clock)
    await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    await at(bridge, scheduler, clock, 16)
    clock.now = T0 + timedelta(minutes=20)
    await bridge.post_fixture("alertmanager/05-group-all-resolved.json")
    await at(bridge, scheduler, clock, 50)
    assert sum(c.startswith("⏫") for c in thread(bridge)) == 1
    clock.now = T0 + timedelta(minutes=55)
    await bridge.post_fixture("alertmanager-ha-split/01-firing-from-am-a.json")  # re-fires
    await at(bridge, scheduler, clock, 60)
    assert sum(c.startswith("⏫") for c in thread(bridge)) == 1  # 5 minutes into the new episode
    await at(bridge, scheduler, clock, 71)
    assert sum(c.startswith("⏫") for c in thread(bridge)) == 2


async def test_steps_survive_a_restart(
    make_bridge: BridgeFactory, oncall_rules: Rules, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    clock = Clock()
    first, scheduler = await oncall_bridge(make_bridge, oncall_rules, clock, url)
    await first.post_fixture("alertmanager/02-group-3-firing.json")
    await at(first, scheduler, clock, 16)
    await first.client.close()
    second, scheduler = await oncall_bridge(make_bridge, oncall_rules, clock, url)
    await at(second, scheduler, clock, 17)
    assert [c for c in thread(second) if c.startswith("⏫")] == ["⏫ Эскалация: @dba_lead"]


async def test_two_schedulers_at_once_fire_each_step_once(
    make_bridge: BridgeFactory, oncall_rules: Rules
) -> None:
    from bridge.inbox import Inbox

    clock = Clock()
    bridge, scheduler = await oncall_bridge(make_bridge, oncall_rules, clock)
    other = bridge.app[INBOX]
    twin_inbox = Inbox(
        bridge.store,
        oncall_rules,
        other.metrics,
        resolved_ttl=3600,
        dedup_ttl=60,
        dedup_size=10,
        render_options=other.render_options,
        clock=clock,
    )
    twin = Scheduler(bridge.store, twin_inbox, oncall_rules, clock)
    await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    await bridge.deliver()
    clock.now = T0 + timedelta(minutes=46)
    await asyncio.gather(scheduler.tick(), twin.tick())
    await bridge.deliver()
    assert sorted(c for c in thread(bridge) if c.startswith("⏫")) == [
        "⏫ Эскалация: <@42>",
        "⏫ Эскалация: @dba_lead",
    ]
    assert len([m for m in bridge.fake.channel_messages() if m["entity_id"] == 2000]) == 1
    # and the digest at 09:00 Moscow, asked by both, is sent once
    clock.now = datetime(2026, 11, 24, 6, 1, tzinfo=UTC)
    await asyncio.gather(scheduler.tick(), twin.tick())
    await bridge.deliver()
    digests = [m for m in bridge.fake.channel_messages() if m["content"].startswith("📋")]
    assert len(digests) == 1


async def test_digest_counts_mtta_mttr_and_noisiest(
    make_bridge: BridgeFactory, oncall_rules: Rules
) -> None:
    clock = Clock()
    bridge, scheduler = await oncall_bridge(make_bridge, oncall_rules, clock)
    no_whole_reads(bridge)  # what it counts is read by time and state
    response = await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    (ref,) = (await response.json())["changed"]
    clock.now = T0 + timedelta(minutes=4)
    await press(bridge, click_body(f"ack:{ref}"))
    clock.now = T0 + timedelta(minutes=20)
    await bridge.post_fixture("alertmanager/05-group-all-resolved.json")
    clock.now = T0 + timedelta(minutes=30)
    await bridge.post_fixture("alertmanager/10-group-by-alertname-and-cluster.json")  # default
    payload = fixture_json("alertmanager/07-truncated-max-alerts-3-of-7.json")
    payload["commonLabels"]["team"] = "db"
    await bridge.post(payload)  # still firing at 09:00
    await at(bridge, scheduler, clock, 59)
    assert not [m for m in bridge.fake.channel_messages() if m["content"].startswith("📋")]
    await at(bridge, scheduler, clock, 61)  # 09:01 Moscow
    (digest,) = [m for m in bridge.fake.channel_messages() if m["content"].startswith("📋")]
    assert digest["entity_id"] == 1001
    lines = digest["content"].splitlines()
    assert lines[0] == "📋 **Сводка** за 23.11 09:00 MSK – 24.11 09:00 MSK"
    assert lines[1] == "Открыто: 2 · Решено: 1 · Горит сейчас: 1"
    assert lines[2] == "MTTA: 4м · MTTR: 20м"
    assert lines[3].startswith("Самые шумные: ")
    assert "PodCrashLooping" in digest["content"]
    await at(bridge, scheduler, clock, 65)
    assert len([m for m in bridge.fake.channel_messages() if m["content"].startswith("📋")]) == 1


async def test_the_digest_reads_what_fires_however_old_and_what_changed_in_its_period(
    make_bridge: BridgeFactory, oncall_rules: Rules
) -> None:
    """Still firing since the day before: counted and listed; resolved before the period:
    not even read."""
    from bridge.model import IncidentState
    from tests.test_store_contract import incident

    clock = Clock()
    bridge, scheduler = await oncall_bridge(make_bridge, oncall_rules, clock)
    before = T0 - timedelta(days=2)
    for ref, name, state in (
        ("0001", "OldFire", IncidentState.FIRING),
        ("0002", "OldDone", IncidentState.RESOLVED),
    ):
        old = incident(ref, f"k{ref}", state=state, changed_at=before).model_copy(
            update={
                "chat_id": 1001,
                "route": "databases",
                "group_labels": {"alertname": name},
                "last_seen": T0,  # still reported: not stale
            }
        )
        await bridge.store.save_incident(old, None, [], before.timestamp())
    no_whole_reads(bridge)
    read: list[str] = []
    load_many = bridge.store.load_many

    async def loading(refs: list[str], alerts: bool = True) -> Any:
        read.extend(refs)
        return await load_many(refs, alerts)

    bridge.store.load_many = loading  # type: ignore[method-assign]
    await at(bridge, scheduler, clock, 61)  # 09:01 Moscow
    (digest,) = [m for m in bridge.fake.channel_messages() if m["content"].startswith("📋")]
    assert "Горит сейчас: 1" in digest["content"] and "OldFire" in digest["content"]
    assert "0002" not in read


def reaction(message_id: int, code: str = "👀", event: str = "new") -> bytes:
    body: dict[str, Any] = fixture_json("pachca/reaction-new.json")
    body.update(
        message_id=message_id,
        code=code,
        event=event,
        user_id=ALICE,
        webhook_timestamp=int(time.time()),
    )
    return json.dumps(body).encode()


async def signed(bridge: Bridge, body: bytes) -> dict[str, Any]:
    response = await press(bridge, body)
    assert response.status == 200
    result: dict[str, Any] = await response.json()
    return result


async def test_the_ack_emoji_acks_and_nothing_else_does(bridge: Bridge) -> None:
    await bridge.post_fixture("alertmanager/01-single-firing.json")
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    assert (await signed(bridge, reaction(message["id"], code="👍")))["status"] == "ignored"
    assert (await signed(bridge, reaction(message["id"], event="delete")))["status"] == "ignored"
    assert (await signed(bridge, reaction(999_999)))["status"] == "ignored"  # not an incident
    await bridge.deliver()
    assert "Взял в работу" not in message["content"]
    assert (await signed(bridge, reaction(message["id"])))["status"] == "accepted"
    await bridge.deliver()
    assert "👀 Взял в работу: <@2345>" in message["content"]
    assert dms(bridge, ALICE) == ["Вы взяли в работу «HighCPU»."]


def command(text: str, chat_id: int = 1000, message_id: int = 56431) -> bytes:
    body: dict[str, Any] = fixture_json("pachca/message-command.json")
    body.update(
        content=text,
        chat_id=chat_id,
        id=message_id,
        user_id=ALICE,
        webhook_timestamp=int(time.time()),
    )
    return json.dumps(body).encode()


async def test_ack_command_and_alerts_listing(bridge: Bridge) -> None:
    no_whole_reads(bridge)
    response = await bridge.post_fixture("alertmanager/01-single-firing.json")
    (ref,) = (await response.json())["changed"]
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    assert (await signed(bridge, command(f"/ack {ref}")))["status"] == "accepted"
    await bridge.deliver()
    assert "Взял в работу" in message["content"]
    assert (await signed(bridge, command("/alerts", message_id=56432)))["status"] == "accepted"
    assert (await signed(bridge, command("/alerts", message_id=56432)))["status"] == "duplicate"
    assert (await signed(bridge, command("hello", message_id=56433)))["status"] == "ignored"
    await bridge.deliver()
    (listing,) = [m for m in bridge.fake.channel_messages() if m["id"] != message["id"]]
    assert listing["entity_id"] == 1000
    assert listing["content"].startswith("🔥 Горит в этом чате: 1")
    assert (
        f"[HighCPU](https://app.pachca.com/chats/1000?message={message['id']})"
        in listing["content"]
    )
    assert f"`{ref}` 👀" in listing["content"]


async def test_alerts_in_a_quiet_chat(bridge: Bridge) -> None:
    await signed(bridge, command("/alerts", chat_id=1001))
    await bridge.deliver()
    (answer,) = bridge.fake.channel_messages()
    assert answer["content"] == "✅ В этом чате сейчас ничего не горит."


async def test_polled_reaction_acks_too(bridge: Bridge) -> None:
    from bridge.poller import Poller
    from bridge.web.state import EVENTS, PACHCA

    await bridge.post_fixture("alertmanager/01-single-firing.json")
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    event = fixture_json("pachca/webhook-events-page.json")["data"][0]
    event["event_type"] = "reaction_new"
    event["payload"] = json.loads(reaction(message["id"]))
    bridge.fake.events = [event]
    await Poller(bridge.app[PACHCA], bridge.app[EVENTS], 0.01).poll_once()  # type: ignore[arg-type]
    await bridge.deliver()
    assert "Взял в работу" in message["content"]


def test_bad_oncall_rules_are_refused(tmp_path: Path) -> None:
    from bridge.errors import ConfigError

    path = tmp_path / "r.yaml"
    path.write_text(
        "routes:\n  - {name: d, chat_id: 1, remind_every: 10s, "
        "escalation: [{after: soon}], digest: {at: '25:00', timezone: Mars/X}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    text = str(caught.value)
    for fragment in ("remind_every", "escalation.0.after", "digest.at", "digest.timezone"):
        assert fragment in text, text


async def test_links_to_an_incident_get_a_preview_of_its_state(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(BRIDGE_PUBLIC_URL="https://bridge.example.com")
    response = await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    (ref,) = (await response.json())["changed"]
    await bridge.deliver()
    no_whole_reads(bridge)  # searched among the most recently changed, all links at once
    walks: list[bool] = []
    changed = bridge.store.changed

    async def walking(firing: bool, *args: Any) -> Any:
        walks.append(firing)
        return await changed(firing, *args)

    bridge.store.changed = walking  # type: ignore[method-assign]
    source = fixture_json("alertmanager/02-group-3-firing.json")["alerts"][0]["generatorURL"]
    event: dict[str, Any] = fixture_json("pachca/link-shared.json")
    event["webhook_timestamp"] = int(time.time())
    event["links"] = [
        {"url": source, "domain": "prometheus.example.com", "skip": False},
        {
            "url": "https://am.example.com/#/alerts?filter=%7Balertname%3D%22DiskFull%22%7D",
            "domain": "am.example.com",
            "skip": False,
        },
        {
            "url": f"https://bridge.example.com/incidents/{ref}",
            "domain": "bridge.example.com",
            "skip": False,
        },
        {
            "url": "https://am.example.com/#/alerts?filter=%7Balertname%3D%22Other%22%7D",
            "domain": "am.example.com",
            "skip": False,
        },
        {"url": source + "&x=1", "domain": "prometheus.example.com", "skip": True},
    ]
    assert (await signed(bridge, json.dumps(event).encode()))["status"] == "accepted"
    await bridge.deliver()
    previews = bridge.fake.previews[event["message_id"]]
    assert sorted(previews) == sorted(link["url"] for link in event["links"][:3])
    for preview in previews.values():
        assert preview["title"] == "🔥 ГОРИТ (3/3) · DiskFull"
        assert preview["description"].startswith("с ")
    assert walks == [True, False]  # one page of each walk for the three links searched


async def test_a_link_is_searched_among_the_most_recently_changed_only(
    make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source's link is looked for among LINKS_SEARCH_AT_MOST incidents, firing first, the
    most recently changed first: an older incident past them gets no preview."""
    from bridge import chat_events

    bridge = await make_bridge(BRIDGE_PUBLIC_URL="https://bridge.example.com")
    await bridge.post_fixture("alertmanager/02-group-3-firing.json")  # DiskFull
    await bridge.post_fixture("alertmanager/01-single-firing.json")  # HighCPU, changed since
    await bridge.deliver()
    sources = [
        fixture_json(f"alertmanager/{name}.json")["alerts"][0]["generatorURL"]
        for name in ("01-single-firing", "02-group-3-firing")
    ]
    event: dict[str, Any] = fixture_json("pachca/link-shared.json")
    event["webhook_timestamp"] = int(time.time())
    event["links"] = [{"url": url, "domain": "p.example.com", "skip": False} for url in sources]
    monkeypatch.setattr(chat_events, "LINKS_SEARCH_AT_MOST", 1)
    assert (await signed(bridge, json.dumps(event).encode()))["status"] == "accepted"
    await bridge.deliver()
    previews = bridge.fake.previews[event["message_id"]]
    assert list(previews) == sources[:1]
    assert previews[sources[0]]["title"].endswith("HighCPU")


async def test_links_to_the_bridges_own_pages_are_read_by_their_ref(
    make_bridge: BridgeFactory,
) -> None:
    """The commonest link (the bridge's own page of an incident) is previewed from that
    incident alone, never a read of every incident held; unknown refs get no preview."""
    bridge = await make_bridge(BRIDGE_PUBLIC_URL="https://bridge.example.com")
    response = await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    (ref,) = (await response.json())["changed"]
    await bridge.deliver()
    no_whole_reads(bridge)
    event: dict[str, Any] = fixture_json("pachca/link-shared.json")
    event["webhook_timestamp"] = int(time.time())
    urls = [f"https://bridge.example.com/incidents/{ref}?tab=history"]
    urls += ["https://bridge.example.com/incidents/nope", "https://bridge.example.com/incidents/"]
    event["links"] = [{"url": url, "domain": "bridge.example.com", "skip": False} for url in urls]
    assert (await signed(bridge, json.dumps(event).encode()))["status"] == "accepted"
    await bridge.deliver()
    previews = bridge.fake.previews[event["message_id"]]
    assert list(previews) == urls[:1]
    assert previews[urls[0]]["title"] == "🔥 ГОРИТ (3/3) · DiskFull"


FALL_BACK_RULES = """
routes:
  - name: default
    chat_id: 1000
    digest: {at: "02:30", timezone: Europe/Berlin}
"""


async def test_the_digest_goes_out_once_on_the_fall_back_day_and_survives_a_store_error(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    """Berlin's clocks go back on 2026-10-25 at 03:00: 02:30 happens twice (00:30 and 01:30
    UTC). The digest is sent once. And a store error on its write does not lose it: it is
    claimed and queued in one write, so the next tick sends it."""
    path = tmp_path / "rules.yaml"
    path.write_text(FALL_BACK_RULES)
    rules = load_rules(path)
    first, second = (datetime(2026, 10, 25, h, 31, tzinfo=UTC) for h in (0, 1))
    assert digests_due(rules, first)[0].key == digests_due(rules, second)[0].key
    faulty: list[FaultyStore] = []

    def wrap(store: Store) -> FaultyStore:
        faulty.append(FaultyStore(store))
        return faulty[-1]

    bridge = await make_bridge(rules_override=rules, wrap_store=wrap)
    clock = Clock()
    scheduler = Scheduler(bridge.store, bridge.app[INBOX], rules, clock)
    faulty[0].fail_next("enqueue", StoreError("injected: disk full"))
    clock.now = first
    with pytest.raises(StoreError):
        await scheduler.tick()
    for moment in (first + timedelta(seconds=15), second, second + timedelta(minutes=5)):
        clock.now = moment
        await scheduler.tick()
    await bridge.deliver()
    digests = [m for m in bridge.fake.channel_messages() if m["content"].startswith("📋")]
    assert len(digests) == 1


# -- incidents nothing reports any more -------------------------------------------------------


async def test_an_incident_nothing_reports_is_closed_after_stale_after_repeats_keep_it(
    make_bridge: BridgeFactory, oncall_rules: Rules
) -> None:
    """A repeat every 4 h keeps an incident open (its last_seen renewed though nothing
    changed); once repeats stop (the group went to another route, Alertmanager lost it) it is
    closed after BRIDGE_STALE_AFTER with a thread comment, and fires again as news."""
    clock = Clock()
    bridge, _ = await oncall_bridge(make_bridge, oncall_rules, clock)
    bridge.app[OUTBOX].clock = lambda: clock.now.timestamp()
    scheduler = Scheduler(bridge.store, bridge.app[INBOX], oncall_rules, clock, 13 * 3600)
    body = fixture_json("alertmanager/02-group-3-firing.json")
    body["commonLabels"]["team"] = "web"  # the default route, no reminders
    for hours in (0, 4, 8, 12, 16):
        clock.now = T0 + timedelta(hours=hours)
        assert (await bridge.post(body)).status == 200
        await scheduler.tick()
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    assert message["content"].startswith("🔴 **ГОРИТ**")
    clock.now = T0 + timedelta(hours=16 + 12)
    await scheduler.tick()
    await bridge.deliver()
    assert message["content"].startswith("🔴 **ГОРИТ**")  # 12 h of silence: not yet
    clock.now = T0 + timedelta(hours=16 + 13, minutes=5)
    await scheduler.tick()
    await bridge.deliver()
    assert message["content"].startswith("✅ **РЕШЕНО**")
    (comment,) = bridge.fake.thread_comments(message["id"])
    assert comment.startswith("⌛ Источник не сообщал об этом 13ч")
    # it still fires after all: the same alerts, the same startsAt, re-open it
    assert (await bridge.post(body)).status == 200
    await bridge.deliver()
    assert message["content"].startswith("🔴 **ГОРИТ**")
    assert len(bridge.fake.channel_messages()) == 1


async def test_a_silenced_incident_alertmanager_still_holds_is_not_closed_as_unreported(
    make_bridge: BridgeFactory, oncall_rules: Rules
) -> None:
    """Alertmanager sends nothing for a silenced group; the check-back seeing its alerts is
    what keeps it open."""
    clock = Clock()
    bridge, _ = await oncall_bridge(make_bridge, oncall_rules, clock)
    scheduler = Scheduler(bridge.store, bridge.app[INBOX], oncall_rules, clock, 13 * 3600)
    body = fixture_json("alertmanager/02-group-3-firing.json")
    assert (await bridge.post(body)).status == 200
    (stored,) = await bridge.store.all_incidents()
    held = {fp: {"fingerprint": fp, "status": {"silencedBy": []}} for fp in stored.incident.alerts}
    for hours in range(6, 30, 6):
        clock.now = T0 + timedelta(hours=hours)
        await bridge.app[INBOX].follow_alertmanager(stored.incident.ref, held, {})
        await scheduler.tick()
    current = await bridge.store.load_by_ref(stored.incident.ref)
    assert current is not None and current.incident.state.value == "firing"


async def test_a_resolved_incident_keeps_its_silence_until_it_ends_then_finishes(
    make_bridge: BridgeFactory, oncall_rules: Rules
) -> None:
    """No Alertmanager to ask (ALERTMANAGER_URL unset since): the scheduler drops a silence
    shown well past its end, so the resolved incident finishes and can be pruned."""
    clock = Clock()
    bridge, _ = await oncall_bridge(make_bridge, oncall_rules, clock)
    scheduler = Scheduler(bridge.store, bridge.app[INBOX], oncall_rules, clock, 13 * 3600)
    assert (await bridge.post_fixture("alertmanager/02-group-3-firing.json")).status == 200
    (stored,) = await bridge.store.all_incidents()
    ref = stored.incident.ref
    await bridge.app[INBOX].silence_created(ref, ALICE, "s1", T0 + timedelta(hours=1), "Алиса")
    assert (await bridge.post_fixture("alertmanager/05-group-all-resolved.json")).status == 200
    (open_one,) = await bridge.store.open_incidents()
    assert open_one.state.value == "resolved" and open_one.silence_id == "s1"
    clock.now = T0 + timedelta(minutes=30)
    await scheduler.tick()
    assert len(await bridge.store.open_incidents()) == 1  # the silence still lasts
    clock.now = T0 + timedelta(hours=1, minutes=6)
    await scheduler.tick()
    assert await bridge.store.open_incidents() == []
