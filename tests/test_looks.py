"""The scheduler's looks (SPEC 8): it reads only the incidents due for a look, so `next_look`
must never be later than the first moment the tick would act on an incident; and a tick with
many open incidents and nothing due reads none of them."""

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bridge.scheduler as scheduler_module
import bridge.silencer as silencer_module
from bridge.incidents import close_unreported, tell_refires
from bridge.looks import LooksBasis, RouteTiming, looks_basis, next_look
from bridge.model import Incident, IncidentState
from bridge.oncall import due as oncall_due
from bridge.rules import EscalationStep, RouteConfig, Rules, load_rules
from bridge.scheduler import Scheduler
from bridge.silences import drop_stale_silence
from bridge.store import Store
from bridge.tasks import Pulse
from bridge.web.state import INBOX, OUTBOX, RULES
from tests.conftest import BridgeFactory, group
from tests.test_store_contract import incident

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
minutes = st.integers(min_value=0, max_value=24 * 60).map(lambda m: timedelta(minutes=m))
maybe_time = st.none() | minutes.map(lambda d: T0 + d)


@st.composite
def incidents(draw: st.DrawFn) -> Incident:
    state = draw(st.sampled_from([IncidentState.FIRING, IncidentState.RESOLVED]))
    silenced = draw(st.booleans())
    refired = draw(st.booleans())
    base = incident(state=state, changed_at=T0 + draw(minutes))
    return base.model_copy(
        update={
            "opened_at": T0,
            "firing_since": draw(maybe_time),
            "last_seen": draw(maybe_time),
            "acked_by": draw(st.sampled_from([None, 42])),
            "reminded_at": draw(maybe_time),
            "escalated": draw(st.integers(min_value=0, max_value=3)),
            "silence_id": "s1" if silenced else None,
            "silenced_until": draw(maybe_time) if silenced else None,
            "refired_pending": ["fp1"] if refired else [],
            "refired_since": draw(maybe_time) if refired else None,
        }
    )


@st.composite
def routes(draw: st.DrawFn) -> RouteConfig:
    steps = draw(st.lists(st.integers(min_value=1, max_value=600), max_size=3))
    remind = draw(st.sampled_from([None, "15m", "1h"]))
    return RouteConfig(
        name="default",
        chat_id=1,
        remind_every=remind,
        escalation=[EscalationStep(after=f"{m}m") for m in sorted(steps)],
    )


def acts(incident: Incident, route: RouteConfig, stale_after: timedelta, now: datetime) -> bool:
    """Would the tick do anything for the incident at `now` (scheduler._look's rules)?"""
    return bool(
        (incident.refired_pending and tell_refires(incident, now).changed)
        or oncall_due(incident, route, now).effects
        or close_unreported(incident, now, stale_after).changed
        or drop_stale_silence(incident, now)[1]
    )


@settings(max_examples=400, deadline=None)
@given(incidents(), routes(), st.integers(min_value=1, max_value=48 * 60), minutes)
def test_nothing_is_due_before_the_next_look(
    incident: Incident, route: RouteConfig, stale_minutes: int, later: timedelta
) -> None:
    """Early is harmless, late is a missed reminder: a second before its look, or at any
    time if it has none, the tick has nothing to do for the incident."""
    stale_after = timedelta(minutes=stale_minutes)
    look = next_look(incident.look_facts(), RouteTiming.of(route), stale_after)
    if look is None:
        for now in (T0 + later, T0 + later + timedelta(days=30)):
            assert not acts(incident, route, stale_after, now), f"due at {now}, never looked at"
    elif look - timedelta(seconds=1) >= T0:
        now = look - timedelta(seconds=1)
        assert not acts(incident, route, stale_after, now), f"due before its look at {look}"


BASE_RULES = """
routes:
  - name: db
    matchers: ['team="db"']
    chat_id: 5
    remind_every: 30m
    escalation: [{after: 10m, mention: ["<@1>"]}]
  - {name: default, chat_id: 1}
"""


def basis_of(
    text: str, tmp_path: Path, stale_after: timedelta | None = None, recorded: Any = None
) -> LooksBasis:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return looks_basis(load_rules(path), stale_after, recorded)


@pytest.mark.parametrize(
    ("edit", "retimed"),
    [
        (("chat_id: 5", "chat_id: 6"), []),
        (('team="db"', 'team="database"'), []),
        (("  - {name: default, chat_id: 1}", "  - {name: default, chat_id: 1, max_alerts: 3}"), []),
        (("remind_every: 30m", "remind_every: 1h"), ["db"]),
        (("remind_every: 30m", "remind_every: 30m\n    display_name: DB"), []),
        (("after: 10m", "after: 15m"), ["db"]),
        (("<@1>", "<@2>"), []),  # who is called, not when
        # its incidents are timed by the last route now; the new name has none yet
        (("name: db", "name: database"), ["database", "db"]),
        (("name: default", "name: other"), ["other"]),  # "default"'s keep the same timing
    ],
)
def test_a_start_times_again_only_the_routes_whose_timing_changed(
    tmp_path: Path, edit: tuple[str, str], retimed: list[str]
) -> None:
    """A start under new rules re-times the open incidents of a route only when what
    `next_look` reads for them changed (its reminders, its escalation steps, the route that
    stands in for it); all of them under another BRIDGE_STALE_AFTER or a basis it cannot read.
    New chats, templates and matchers keep the recorded times."""
    before = basis_of(BASE_RULES, tmp_path)
    assert edit[0] in BASE_RULES
    after = basis_of(BASE_RULES.replace(*edit), tmp_path, recorded=before)
    assert after.changed_routes(before) == retimed
    assert (after == before) is (retimed == [])
    assert LooksBasis.loads(after.dumps()) == after  # as the store keeps it
    assert basis_of(BASE_RULES, tmp_path, timedelta(hours=1), before).changed_routes(before) is None
    for unreadable in (None, "", "0" * 64, "[]", '{"common": 1, "routes": {}}'):
        assert after.changed_routes(LooksBasis.loads(unreadable)) is None, unreadable


def test_a_new_last_route_times_again_the_incidents_of_forgotten_routes(tmp_path: Path) -> None:
    """An incident of a route the rules no longer have is timed by the last route: the same
    routes and timings with another route last re-time the forgotten route's incidents (and
    only those), however long ago it was forgotten."""
    one = "routes:\n  - {name: a, matchers: ['x=\"1\"'], chat_id: 1, remind_every: 30m}\n"
    one += "  - {name: c, matchers: ['x=\"3\"'], chat_id: 1}\n"
    one += "  - {name: b, chat_id: 1}\n"
    first = basis_of(one, tmp_path)
    without_c = one.replace("  - {name: c, matchers: ['x=\"3\"'], chat_id: 1}\n", "")
    second = basis_of(without_c, tmp_path, recorded=first)
    assert second.changed_routes(first) == []  # c's incidents: timed by b, as before
    third = basis_of(without_c, tmp_path, recorded=second)
    assert third == second
    other = "routes:\n  - {name: b, matchers: ['x=\"1\"'], chat_id: 1}\n"
    other += "  - {name: a, chat_id: 1, remind_every: 30m}\n"
    assert basis_of(other, tmp_path, recorded=third).changed_routes(third) == ["c"]


class CountingStore:
    """The bridge's store, counting the incidents read one by one and in bulk."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loaded = 0
        self.bulk = 0
        self.routes: list[list[str]] = []  # routes whose open incidents were asked for
        self.timed = 0  # incidents whose look facts were read

    async def load_by_ref(self, ref: str) -> Any:
        self.loaded += 1
        return await self.store.load_by_ref(ref)

    async def load_many(self, refs: list[str], alerts: bool = True) -> Any:
        self.loaded += len(refs)
        return await self.store.load_many(refs, alerts)

    async def open_refs(self) -> Any:  # a pass over every open incident starts here
        self.bulk += 1
        return await self.store.open_refs()

    async def open_refs_on(self, routes: list[str]) -> Any:  # ... over a few routes' here
        self.routes.append(routes)
        return await self.store.open_refs_on(routes)

    async def look_facts(self, refs: list[str]) -> Any:
        self.timed += len(refs)
        return await self.store.look_facts(refs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_a_tick_reads_only_what_changed_or_came_due(
    make_bridge: BridgeFactory, tmp_path: Path, store_kind: str
) -> None:
    url = "memory://" if store_kind == "memory" else f"sqlite:///{tmp_path / 'state.db'}"
    bridge = await make_bridge(url)
    now = [T0]
    bridge.app[INBOX].clock = lambda: now[0]
    for n in range(40):
        await bridge.post(group(n))
    counting = CountingStore(bridge.store)
    scheduler = Scheduler(
        counting,  # type: ignore[arg-type]
        bridge.app[INBOX],
        bridge.app[RULES],
        lambda: now[0],
        stale_after=3600,
    )
    await scheduler.tick()
    assert (counting.bulk, counting.loaded) == (1, 0), "the first tick times all, reads none whole"
    now[0] += timedelta(minutes=1)
    await scheduler.tick()
    assert (counting.bulk, counting.loaded) == (1, 0), "nothing changed, nothing came due"
    await bridge.post(group(7, "resolved"))
    await bridge.post(group(8))  # a repeat: nothing changes
    now[0] += timedelta(minutes=1)
    await scheduler.tick()
    assert counting.loaded == 0, "a resolved incident has nothing left for the scheduler"
    timed = counting.timed
    await bridge.post(group(99))  # a new incident: timed once, from a few of its fields
    now[0] += timedelta(minutes=1)
    await scheduler.tick()
    assert (counting.timed, counting.loaded) == (timed + 1, 0), "nothing due: not read whole"
    now[0] += timedelta(minutes=1)
    await scheduler.tick()
    assert (counting.timed, counting.loaded) == (timed + 1, 0)
    now[0] = T0 + timedelta(hours=1, minutes=1)  # the first 39 are an hour unreported now
    assert await scheduler.tick() == 39
    assert counting.bulk == 1 and counting.loaded == 39  # read whole: something was due
    assert len(await bridge.store.open_incidents()) == 1  # #99, seen 57 minutes ago
    # a restart under the same rules, or rules that changed nothing of the timing, trusts the
    # recorded times; under other timing (here another BRIDGE_STALE_AFTER) it times every open
    # incident again from what the store reads of it without its alerts, and reads whole only
    # those due now: none under 2 h; under 30 min, #99 (seen 57 minutes ago), which it closes
    rules = bridge.app[RULES]
    elsewhere = replace(  # the same timing, posted to other chats: the times stay true
        rules,
        routes=tuple(
            replace(r, config=r.config.model_copy(update={"chat_id": 999})) for r in rules.routes
        ),
    )
    starts = [(3600, rules, 0, 0), (3600, elsewhere, 0, 0), (7200, elsewhere, 1, 0)]
    starts += [(7200, rules, 0, 0), (1800, rules, 1, 1)]
    for stale_after, under, passes, read in starts:
        restarted = CountingStore(bridge.store)
        await Scheduler(restarted, bridge.app[INBOX], under, lambda: now[0], stale_after).tick()  # type: ignore[arg-type]
        assert (restarted.bulk, restarted.loaded) == (passes, read), (stale_after, under)
    assert await bridge.store.open_incidents() == []


async def test_a_tick_over_many_due_incidents_lets_requests_in_between_pages(
    make_bridge: BridgeFactory,
) -> None:
    """A storm's new incidents are all due for a look (each save makes one due): the tick
    times them from a few fields, LOOKED_AT_ONCE between two turns of the event loop, and
    reads none whole. It had read 500 whole and looked at them in one turn, the intake's
    requests waiting (bench/storm.py scale: p99 36-53 ms, now 24-27 ms). The memory store
    answers without yielding, so only the tick's own turns let the watcher run."""
    bridge = await make_bridge("memory://")
    for n in range(10):
        await bridge.post(group(n))
    counting = CountingStore(bridge.store)
    scheduler = Scheduler(counting, bridge.app[INBOX], bridge.app[RULES], stale_after=3600)  # type: ignore[arg-type]
    await scheduler.tick()  # the first start times every open incident
    for n in range(10, 130):
        await bridge.post(group(n))
    timed, seen = counting.timed, []

    async def watch() -> None:
        while True:
            seen.append(counting.timed - timed)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await scheduler.tick()
    watcher.cancel()
    assert (counting.timed - timed, counting.loaded) == (120, 0)
    steps = [b - a for a, b in pairwise(seen)]
    assert max(steps) == scheduler_module.LOOKED_AT_ONCE, steps


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_a_start_under_new_timing_for_one_route_reads_only_its_incidents(
    make_bridge: BridgeFactory, tmp_path: Path, store_kind: str
) -> None:
    """Six incidents of `databases`, four of `default`: reminders added to one route re-time
    that route's incidents alone, read without their alerts; a start under the same timing
    re-times none."""
    url = "memory://" if store_kind == "memory" else f"sqlite:///{tmp_path / 'state.db'}"
    bridge = await make_bridge(url)
    for n in range(10):
        body = group(n)
        if n >= 6:
            body = json.loads(json.dumps(body).replace('"team": "db"', '"team": "web"'))
        await bridge.post(body)
    routes = sorted(i.route for i in await bridge.store.open_incidents())
    assert routes == ["databases"] * 6 + ["default"] * 4
    rules = bridge.app[RULES]

    def reminding(name: str, under: Rules) -> Rules:
        update = {"remind_every": "30m"}
        return replace(
            under,
            routes=tuple(
                replace(r, config=r.config.model_copy(update=update)) if r.name == name else r
                for r in under.routes
            ),
        )

    db_reminds = reminding("databases", rules)
    both_remind = reminding("default", db_reminds)
    starts = [  # rules, routes asked for, incidents timed
        (rules, [], 10),  # the first start: every open incident
        (rules, [], 0),
        (db_reminds, [["databases"]], 6),
        (db_reminds, [], 0),
        (both_remind, [["default"]], 4),
    ]
    for under, asked, timed in starts:
        counting = CountingStore(bridge.store)
        await Scheduler(counting, bridge.app[INBOX], under).tick()  # type: ignore[arg-type]
        assert (counting.routes, counting.timed, counting.loaded) == (asked, timed, 0)


async def test_a_long_pass_over_open_incidents_is_alive_not_stalled(
    make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first tick times every open incident a page at a time, the silence check-back
    every incident that shows a silence; at a hundred thousand a pass outlasts
    BRIDGE_STALL_AFTER, so each page tells the loop's pulse it is alive (else /healthz would
    call a busy loop stalled)."""
    monkeypatch.setattr(scheduler_module, "TIMED_AT_ONCE", 2)
    monkeypatch.setattr(silencer_module, "OPEN_PAGE", 2)
    bridge = await make_bridge(ALERTMANAGER_URL="http://127.0.0.1:9")  # nobody answers there
    for n in range(5):
        await bridge.post(group(n))
    for opened in await bridge.store.open_incidents():
        until = datetime.now(UTC) + timedelta(hours=1)
        await bridge.app[INBOX].silence_created(opened.ref, 1, "s1", until, "Оля")
    clock = [0.0]
    pulse = Pulse(stall_after=10.0, clock=lambda: clock[0])
    stalled: list[float] = []

    def page_done() -> None:  # each page takes 8 s: three outlast stall_after
        clock[0] += 8.0
        pulse.excuse(0)
        stalled.append(pulse.stalled_for())

    scheduler = Scheduler(bridge.store, bridge.app[INBOX], bridge.app[RULES])
    await scheduler.tick(progress=page_done)
    assert len(stalled) >= 3 and set(stalled) == {0.0}  # 3 pages, then what came due
    stalled.clear()
    silencer = bridge.app[OUTBOX].silencer
    assert silencer is not None
    await silencer.check_once(bridge.store, progress=page_done)
    assert stalled == [0.0] * 3
    clock[0] += 11.0  # and without a word for longer than stall_after, it is stalled
    assert pulse.stalled_for() > 0
