"""The silence check-back reads what Alertmanager suppresses and what shows a silence, not
every open incident (#18 goal 5), and decides exactly what a look at every open incident with
every alert Alertmanager holds would (SPEC 7), except renewing `last_seen` of incidents
Alertmanager does not suppress: the scheduler asks about those before it would close them
as unreported (`Silencer.look_for`)."""

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.alertmanager_api import (
    SUPPRESSED,
    AlertmanagerClient,
    AlertmanagerCluster,
    group_query,
)
from bridge.model import Alert, AlertStatus, Incident, IncidentState
from bridge.scheduler import Scheduler
from bridge.silencer import GROUPS_PER_READ, Silencer
from bridge.silences import absence_evidence, check_back
from bridge.store import Store, Stored
from bridge.store.memory import MemoryStore
from bridge.web.state import INBOX, RULES, SILENCER
from tests.conftest import Bridge, BridgeFactory, group
from tests.fake_alertmanager import FakeAlertmanager, api_alert
from tests.test_store_contract import incident as bare_incident

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=4)
EVERY = timedelta(hours=3)  # touch_every
FPS = [f"f{n}" for n in range(8)]
SILENCES = ("s1", "s2")
LONG_AGO = "2026-01-01T00:00:00Z"
JUST_NOW = (NOW - timedelta(seconds=10)).isoformat().replace("+00:00", "Z")


def group_labels(n: int) -> dict[str, str]:
    """Incident n's group: two label names, so a question about groups 0 and 3 together
    (g=~"0|1", h=~"0|1") also answers with the alerts of groups 1 and 2."""
    return {"g": str(n % 2), "h": str(n // 2)}


def held_incident(n: int, alerts: dict[str, AlertStatus], **update: Any) -> Incident:
    return bare_incident(ref=f"r{n}", key=f"k{n}", changed_at=T0).model_copy(
        update={
            "group_labels": group_labels(n),
            "alerts": {
                fp: Alert(fingerprint=fp, status=status, labels=group_labels(n), starts_at=T0)
                for fp, status in alerts.items()
            },
            **update,
        }
    )


@dataclass
class World:
    incidents: list[Incident]
    alerts: list[dict[str, Any]]  # what Alertmanager holds, in its API's shape
    silences: list[dict[str, Any]]
    settled: bool


@st.composite
def worlds(draw: st.DrawFn) -> World:
    count = draw(st.integers(min_value=1, max_value=4))
    owner = {fp: draw(st.integers(min_value=0, max_value=count - 1)) for fp in FPS}
    incidents = []
    for n in range(count):
        held = [fp for fp in FPS if owner[fp] == n]
        if not held:
            continue
        resolved = draw(st.booleans())
        statuses = {
            fp: AlertStatus.RESOLVED
            if resolved
            else draw(st.sampled_from([AlertStatus.FIRING, AlertStatus.RESOLVED]))
            for fp in held
        }
        if not resolved:
            statuses[held[0]] = AlertStatus.FIRING
        silence = draw(st.sampled_from([None, *SILENCES]))
        incidents.append(
            held_incident(
                n,
                statuses,
                state=IncidentState.RESOLVED if resolved else IncidentState.FIRING,
                silence_id=silence,
                silenced_until=NOW + timedelta(hours=1) if silence else None,
                last_seen=draw(st.sampled_from([None, T0, NOW - timedelta(minutes=1)])),
            )
        )
    alerts = []
    for fp in FPS:
        kind = draw(st.sampled_from(["absent", "active", "s1", "s2", "both", "inhibited"]))
        if kind == "absent":
            continue
        by = {"s1": ["s1"], "s2": ["s2"], "both": ["s1", "s2"]}.get(kind, [])
        starts = draw(st.sampled_from([T0, T0 + timedelta(hours=1)]))
        alerts.append(
            api_alert(
                fp,
                {**group_labels(owner[fp]), "fp": fp},
                silenced_by=by,
                inhibited_by=["x"] if kind == "inhibited" else [],
                starts_at=starts.isoformat().replace("+00:00", "Z"),
            )
        )
    silences = [
        {
            "id": sid,
            "status": {"state": draw(st.sampled_from(["active", "expired"]))},
            "createdBy": "Оля",
            "endsAt": (NOW + timedelta(hours=2)).isoformat(),
        }
        for sid in SILENCES
    ]
    return World(incidents, alerts, silences, draw(st.booleans()))


@dataclass
class Recorder:
    """The inbox's part in a pass: what it would write for each incident the pass hands it."""

    store: Store
    touch_every: timedelta = EVERY
    written: dict[str, Incident] = field(default_factory=dict)

    async def follow_alertmanager(
        self,
        ref: str,
        alerts: dict[str, dict[str, Any]] | None,
        silences: dict[str, dict[str, Any]],
        gone: frozenset[str] = frozenset(),
    ) -> bool:
        stored = await self.store.load_by_ref(ref)
        assert stored is not None
        after, _ = check_back(stored.incident, alerts, silences, NOW, gone, EVERY)
        self.written[ref] = after
        return True


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.loaded: set[str] = set()

    async def load_many(self, refs: list[str], alerts: bool = True) -> list[Stored]:
        self.loaded.update(refs)
        return await super().load_many(refs, alerts)


def every_open_incident_looked_at(
    world: World, missing: dict[str, frozenset[str]]
) -> dict[str, Incident]:
    """The reference: each open incident against every alert Alertmanager holds."""
    alerts = {a["fingerprint"]: a for a in world.alerts}
    silences = {s["id"]: s for s in world.silences}
    changed = {}
    for incident in world.incidents:
        if incident.finished:
            continue
        firing = frozenset(a.fingerprint for a in incident.firing)
        before = missing.get(incident.ref, frozenset())
        gone, missing[incident.ref] = absence_evidence(firing, alerts, world.settled, before)
        after, _ = check_back(incident, alerts, silences, NOW, gone, EVERY)
        if after is not incident:
            changed[incident.ref] = after
    return changed


def only_renewed(before: Incident, after: Incident) -> bool:
    return after == before.model_copy(update={"last_seen": after.last_seen})


async def two_passes(world: World) -> None:
    fake = FakeAlertmanager(
        alerts=world.alerts,
        silences=world.silences,
        uptime=LONG_AGO if world.settled else JUST_NOW,
    )
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    store = CountingStore()
    cluster = AlertmanagerCluster([AlertmanagerClient(str(server.make_url("")), None)])
    try:
        for incident in world.incidents:
            await store.save_incident(incident, None, [], 1.0)
        recorder = Recorder(store)
        silencer = Silencer({"alertmanager": cluster}, recorder, None, lambda: NOW)  # type: ignore[arg-type]
        suppressed = {a["fingerprint"] for a in fake.answer([("active", "false")])}
        candidates = set(await store.shown_silenced()) | set(
            await store.holding(sorted(suppressed))
        )
        missing: dict[str, frozenset[str]] = {}
        by_ref = {i.ref: i for i in world.incidents}
        for _ in range(2):
            recorder.written.clear()
            fake.queries.clear()
            store.loaded.clear()
            await silencer.check_once(store)
            expected = every_open_incident_looked_at(world, missing)
            for ref, after in recorder.written.items():
                assert expected.get(ref) == after, ref
            for ref, after in expected.items():
                if not only_renewed(by_ref[ref], after):
                    assert recorder.written.get(ref) == after, ref
            assert store.loaded <= candidates
            # the groups needing their own read are asked for together, never everything
            assert not [q for q in fake.queries if not q]
            assert len([q for q in fake.queries if q and q[0][0] == "filter"]) <= 1
    finally:
        await cluster.close()
        await server.close()


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_a_pass_decides_as_a_look_at_everything_would(world: World) -> None:
    asyncio.run(two_passes(world))


# -- through the bridge, over HTTP -------------------------------------------------------------


def own_alerts(n: int) -> dict[str, Any]:
    """Storm group n with fingerprints of its own."""
    body = group(n)
    for alert in body["alerts"]:
        alert["fingerprint"] = f"{alert['fingerprint']}{n:04x}"
    return body


def as_alertmanager_holds(incident: Incident, by: list[str]) -> list[dict[str, Any]]:
    return [api_alert(fp, a.labels, silenced_by=by) for fp, a in incident.alerts.items()]


async def fake_alertmanager() -> tuple[FakeAlertmanager, TestServer]:
    fake = FakeAlertmanager(uptime=LONG_AGO)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    return fake, server


def silence(sid: str, state: str) -> dict[str, Any]:
    ends = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    return {"id": sid, "status": {"state": state}, "createdBy": "Оля", "endsAt": ends}


async def test_a_pass_reads_what_alertmanager_suppresses_not_every_open_incident(
    make_bridge: BridgeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 open incidents; Alertmanager silences one group from its UI: the pass asks only for
    suppressed alerts, reads that one incident, shows it silenced. The silence expires: the
    pass reads the incident that shows it, asks for its group's alerts, finds them active
    and drops the silence. The other 59 are never read."""
    fake, server = await fake_alertmanager()
    bridge = await make_bridge(
        f"sqlite:///{tmp_path / 's.db'}", ALERTMANAGER_URL=str(server.make_url(""))
    )
    for n in range(60):
        assert (await bridge.post(own_alerts(n))).status == 200
    by_name = {i.common_labels["alertname"]: i for i in await bridge.store.open_incidents()}
    quiet = by_name["DiskFull7"]
    loaded: list[str] = []
    load_many = bridge.store.load_many

    async def counted(refs: list[str]) -> list[Stored]:
        loaded.extend(refs)
        return await load_many(refs)

    monkeypatch.setattr(bridge.store, "load_many", counted)
    silencer = bridge.app[SILENCER]
    assert silencer is not None
    fake.alerts = [
        a
        for incident in by_name.values()
        for a in as_alertmanager_holds(incident, ["s1"] if incident is quiet else [])
    ]
    fake.silences = [silence("s1", "active")]
    assert await silencer.check_once(bridge.store) == 1
    assert loaded == [quiet.ref]
    assert fake.queries == [[("active", "false"), ("unprocessed", "false")]]
    shown = await bridge.store.load_by_ref(quiet.ref)
    assert shown is not None and shown.incident.silence_id == "s1"
    # the silence expires in Alertmanager: its alerts notify again (active)
    loaded.clear()
    fake.queries.clear()
    fake.alerts = [a for i in by_name.values() for a in as_alertmanager_holds(i, [])]
    fake.silences = [silence("s1", "expired")]
    assert await silencer.check_once(bridge.store) == 1
    assert loaded == [quiet.ref]
    assert fake.queries[1] == list(group_query(quiet.group_labels))
    assert len(fake.queries) == 2
    after = await bridge.store.load_by_ref(quiet.ref)
    assert after is not None and after.incident.silence_id is None
    assert after.incident.state is IncidentState.FIRING
    await server.close()


async def silence_ended(
    bridge: Bridge, fake: FakeAlertmanager, silenced: list[Incident], held: list[Incident]
) -> Silencer:
    """`silenced` show silence s1, which has ended in Alertmanager; it holds every alert of
    `held`, active. The bridge's check-back, for a pass."""
    for incident in silenced:
        await bridge.app[INBOX].silence_created(incident.ref, 1, "s1", NOW, "Оля")
    fake.alerts = [a for i in held for a in as_alertmanager_holds(i, [])]
    fake.silences = [silence("s1", "expired")]
    silencer = bridge.app[SILENCER]
    assert silencer is not None
    return silencer


async def test_groups_asked_about_together_keep_each_url_short(
    make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long group label values (here 300 Cyrillic letters: 1,800 characters each in a URL)
    are asked about fewer per question, so no request line passes what a proxy in front of
    Alertmanager allows (nginx: 8 KB); every incident is still followed."""
    fake, server = await fake_alertmanager()
    bridge = await make_bridge(ALERTMANAGER_URL=str(server.make_url("")))
    monkeypatch.setattr(bridge.app[INBOX], "on_commit", lambda: None)  # no deliveries
    for n in range(12):
        body = own_alerts(n)
        service = f"{n:02d}" + "ж" * 300
        body["groupLabels"]["service"] = service
        for alert in body["alerts"]:
            alert["labels"]["service"] = service
        assert (await bridge.post(body)).status == 200
    opened = await bridge.store.open_incidents()
    silencer = await silence_ended(bridge, fake, opened, opened)
    assert await silencer.check_once(bridge.store) == 12
    asked = fake.queries[1:]
    assert 4 <= len(asked) <= 12 and all(q for q in asked)
    assert max(len(urlencode(q)) for q in asked) < 6000
    await server.close()


@pytest.mark.parametrize("count", [1, 120])
async def test_a_group_alertmanager_cannot_filter_is_read_with_everything(
    make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """An older Alertmanager refuses a matcher it cannot parse (a UTF-8 label name): the pass
    asks for every alert instead, once however many groups it could not ask about, and
    still follows the incidents."""
    fake, server = await fake_alertmanager()
    bridge = await make_bridge(ALERTMANAGER_URL=str(server.make_url("")))
    monkeypatch.setattr(bridge.app[INBOX], "on_commit", lambda: None)  # no deliveries
    for n in range(count):
        body = own_alerts(n)
        body["groupLabels"]["app.kubernetes.io/name"] = "disk"
        assert (await bridge.post(body)).status == 200
    opened = await bridge.store.open_incidents()
    for incident in opened:
        assert "app.kubernetes.io/name" in incident.group_labels
        await bridge.app[INBOX].silence_created(incident.ref, 1, "s1", NOW, "Оля")
    fake.alerts = [a for i in opened for a in as_alertmanager_holds(i, [])]  # all active
    fake.silences = [silence("s1", "expired")]
    refuse = fake.answer

    def older(query: list[tuple[str, str]]) -> list[dict[str, Any]]:
        if any(value.startswith('"') for _, value in query):
            raise ValueError("bad matcher")
        return refuse(query)

    fake.answer = older  # type: ignore[method-assign]
    silencer = bridge.app[SILENCER]
    assert silencer is not None
    assert await silencer.check_once(bridge.store) == count
    assert len([q for q in fake.queries if not q]) == 1
    for incident in await bridge.store.open_incidents():
        assert incident.silence_id is None
    await server.close()


async def test_many_incidents_a_silence_ended_for_are_asked_about_by_groups_not_everything(
    make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A silence over 120 groups ends (#18 goal 5): the 120 incidents showing it are not in
    the answer about suppressed alerts, so each needs its group's alerts. They are asked for
    GROUPS_PER_READ groups per question (3 questions), not by reading every alert
    Alertmanager holds (a million alerts at 100,000 incidents: 34-39 s), and all 120 drop
    the silence; an open incident that never showed it is neither read nor asked about."""
    fake, server = await fake_alertmanager()
    bridge = await make_bridge(ALERTMANAGER_URL=str(server.make_url("")))
    monkeypatch.setattr(bridge.app[INBOX], "on_commit", lambda: None)  # no deliveries
    for n in range(121):
        assert (await bridge.post(own_alerts(n))).status == 200
    opened = await bridge.store.open_incidents()
    bystander, *silenced = sorted(opened, key=lambda i: i.common_labels["alertname"])
    silencer = await silence_ended(bridge, fake, silenced, opened)
    assert await silencer.check_once(bridge.store) == 120
    assert fake.queries[0] == list(SUPPRESSED)
    asked = fake.queries[1:]
    assert len(asked) == -(-120 // GROUPS_PER_READ) and all(q for q in asked)
    names = [name for q in asked for name in q[0][1].split('"')[1].split("|")]
    assert sorted(names) == sorted(i.group_labels["alertname"] for i in silenced)
    assert bystander.group_labels["alertname"] not in names
    for incident in await bridge.store.open_incidents():
        assert incident.silence_id is None and incident.state is IncidentState.FIRING
    await server.close()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def stale_bridge(
    make_bridge: BridgeFactory, alertmanager_url: str
) -> tuple[Bridge, Clock, Scheduler]:
    """A bridge asking this Alertmanager, its inbox and check-back on one clock, and a
    scheduler closing incidents unreported for 13 h that asks it first."""
    clock = Clock()
    bridge = await make_bridge(ALERTMANAGER_URL=alertmanager_url)
    bridge.app[INBOX].clock = clock
    silencer = bridge.app[SILENCER]
    assert silencer is not None
    silencer.clock = clock
    scheduler = Scheduler(
        bridge.store, bridge.app[INBOX], bridge.app[RULES], clock, 13 * 3600, silencer.look_for
    )
    return bridge, clock, scheduler


async def test_before_closing_an_incident_as_unreported_alertmanager_is_asked(
    make_bridge: BridgeFactory,
) -> None:
    """An inhibited group gets no notification (nor does one whose repeat_interval is longer
    than BRIDGE_STALE_AFTER): before closing it as unreported, the scheduler asks
    Alertmanager for the group. Still held: kept open, `last_seen` renewed. Alertmanager
    down: kept open, asked again 5 minutes later. Gone: closed."""
    fake, server = await fake_alertmanager()
    bridge, clock, scheduler = await stale_bridge(make_bridge, str(server.make_url("")))
    assert (await bridge.post(own_alerts(1))).status == 200
    (incident,) = await bridge.store.open_incidents()
    fake.alerts = [api_alert(fp, a.labels, inhibited_by=["x"]) for fp, a in incident.alerts.items()]
    clock.now = T0 + timedelta(hours=13, minutes=1)
    await scheduler.tick()
    (kept,) = await bridge.store.open_incidents()
    assert kept.state is IncidentState.FIRING and kept.last_seen == clock.now
    assert fake.queries == [list(SUPPRESSED)]  # inhibited: among the suppressed alerts
    # 13 h later Alertmanager holds it active (no notification since: its repeat_interval
    # is longer): not among the suppressed alerts, so its group is asked for
    fake.alerts = [api_alert(fp, a.labels) for fp, a in incident.alerts.items()]
    fake.queries.clear()
    clock.now += timedelta(hours=13, minutes=1)
    await scheduler.tick()
    (kept,) = await bridge.store.open_incidents()
    assert kept.state is IncidentState.FIRING and kept.last_seen == clock.now
    assert fake.queries == [list(SUPPRESSED), list(group_query(incident.group_labels))]
    # 13 h later, Alertmanager is down: nobody can say it ended
    clock.now += timedelta(hours=13, minutes=1)
    fake.down = True
    await scheduler.tick()
    (kept,) = await bridge.store.open_incidents()
    assert kept.state is IncidentState.FIRING
    at = clock.now.timestamp()
    assert await bridge.store.looks_due(at + 299, 10) == []
    assert await bridge.store.looks_due(at + 301, 10) == [incident.ref]
    # back up, and the group is gone: closed as unreported
    fake.down = False
    fake.alerts = []
    clock.now += timedelta(minutes=5, seconds=2)
    await scheduler.tick()
    assert await bridge.store.open_incidents() == []
    await server.close()


async def test_many_incidents_going_stale_together_are_asked_about_by_groups(
    make_bridge: BridgeFactory,
) -> None:
    """After a long stop, every open incident is due to close at once: Alertmanager is asked
    about them a page at a time, GROUPS_PER_READ groups per question (120 incidents: three),
    never a read of every alert it holds (a million at 100,000 incidents) nor a round trip
    each (that would hold the scheduler for hours)."""
    fake, server = await fake_alertmanager()
    bridge, clock, scheduler = await stale_bridge(make_bridge, str(server.make_url("")))
    for n in range(120):
        assert (await bridge.post(own_alerts(n))).status == 200
    opened = await bridge.store.open_incidents()
    fake.alerts = [  # all still firing: no notification came for 14 hours (repeat_interval)
        api_alert(fp, a.labels) for i in opened for fp, a in i.alerts.items()
    ]
    clock.now = T0 + timedelta(hours=14)
    await scheduler.tick()
    assert fake.queries[0] == list(SUPPRESSED)
    assert all(q and q[0][1].startswith("alertname=~") for q in fake.queries[1:])
    assert len(fake.queries) == 1 + -(-120 // GROUPS_PER_READ)
    kept = await bridge.store.open_incidents()
    assert len(kept) == 120 and all(i.last_seen == clock.now for i in kept)
    await server.close()


async def test_a_failure_to_ask_before_closing_keeps_the_page_open_and_the_tick_going(
    make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug or an odd answer while asking about a page of incidents due to close is logged;
    nobody could say they ended, so they stay open and are asked about again 5 minutes
    later, and the tick goes on with the rest of its work."""
    clock = Clock()
    bridge = await make_bridge()
    bridge.app[INBOX].clock = clock
    for n in range(3):
        assert (await bridge.post(own_alerts(n))).status == 200

    async def broken(incidents: list[Incident]) -> dict[str, bool | None]:
        raise RuntimeError("an answer nobody expected")

    rules = bridge.app[RULES]
    scheduler = Scheduler(bridge.store, bridge.app[INBOX], rules, clock, 13 * 3600, broken)
    clock.now = T0 + timedelta(hours=14)
    assert await scheduler.tick() == 0
    assert len(await bridge.store.open_incidents()) == 3
    assert "asking Alertmanager before closing failed" in caplog.text
    at = clock.now.timestamp()
    assert await bridge.store.looks_due(at + 299, 10) == []
    assert len(await bridge.store.looks_due(at + 301, 10)) == 3
