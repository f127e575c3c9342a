"""The incident list and its API read a page at a time in the order of change (SPEC 7, 8):
every incident held is listed once across the pages, firing first, most recently changed
first; a request reads a bounded number of incidents whatever the store holds; bad cursors and
limits get a 400 (the API) or the first page (a mangled link), and nothing reads every incident
held."""

from datetime import timedelta
from pathlib import Path

import pytest

from bridge.model import IncidentState
from bridge.store import Store, open_store
from bridge.web.listing import Cursor, Filter, list_page
from tests.conftest import Bridge, BridgeFactory, no_whole_reads
from tests.test_store_contract import T0, incident

RESOLVED = IncidentState.RESOLVED


async def hold(store: Store, firing: int, resolved: int) -> list[str]:
    """Incidents with labels team=t<n % 3>, some changed at the same instant; returns their
    refs in the list's order."""
    held = []
    for n in range(firing + resolved):
        state = IncidentState.FIRING if n < firing else RESOLVED
        when = T0 + timedelta(seconds=n // 4)  # four at each instant
        labels = {"alertname": f"A{n}", "team": f"t{n % 3}"}
        one = incident(f"{n:04x}", f"k{n}", state=state, changed_at=when).model_copy(
            update={"group_labels": labels, "route": "db" if n % 2 else "default"}
        )
        await store.save_incident(one, None, [], 1.0)
        held.append(one)
    held.sort(key=lambda i: i.ref, reverse=True)  # ties: greater ref first
    held.sort(key=lambda i: (i.state is RESOLVED, -i.changed_at.timestamp()))
    return [i.ref for i in held]


async def walk(store: Store, where: Filter, size: int, scan_at_most: int = 2000) -> list[list[str]]:
    """Every page, each after the cursor (as text) the one before gave."""
    pages, after = [], None
    while True:
        shown, more = await list_page(store, where, size, after, scan_at_most)
        pages.append([i.ref for i in shown])
        if more is None:
            return pages
        after = Cursor.parse(more.text())


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'l.db'}"
    opened = open_store(url)
    await opened.open()
    return opened


async def test_the_pages_list_every_incident_once_firing_first(store: Store) -> None:
    order = await hold(store, firing=70, resolved=45)
    pages = await walk(store, Filter(), 50)
    assert [len(p) for p in pages] == [50, 50, 15]
    assert [ref for page in pages for ref in page] == order
    firing_only = await walk(store, Filter(state="open"), 50)
    assert [ref for page in firing_only for ref in page] == order[:70]
    resolved_only = await walk(store, Filter(state="resolved"), 30)
    assert [ref for page in resolved_only for ref in page] == order[70:]
    await store.close()


async def test_a_filter_that_matches_few_reads_a_bounded_number_a_request(store: Store) -> None:
    """Each request reads `scan_at_most` incidents at most; the cursor carries on from there,
    and what matches is found all the same."""
    order = await hold(store, firing=60, resolved=30)
    where = Filter(route="db", query='team="t1"')
    pages = await walk(store, where, 50, scan_at_most=20)
    assert len(pages) == 5  # 90 incidents, 20 a request
    wanted = [r for r in order if int(r, 16) % 2 and int(r, 16) % 3 == 1]
    assert [ref for page in pages for ref in page] == wanted
    await store.close()


def test_cursors_round_trip_and_refuse_what_they_did_not_write() -> None:
    for cursor in (Cursor(True), Cursor(False, None)):
        assert Cursor.parse(cursor.text()) == cursor
    from bridge.store import Place

    placed = Cursor(False, Place(1795521660.125, "00ab"))
    assert Cursor.parse(placed.text()) == placed
    for bad in ("", "x1~a", "f1", "fnan~a", "finf~a", "f1~", "f1~a/b", "fx~a"):
        with pytest.raises(ValueError):
            Cursor.parse(bad)


async def test_the_list_page_and_the_api_walk_with_cursors(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    order = await hold(bridge.store, firing=60, resolved=10)
    no_whole_reads(bridge)
    first = await (await bridge.client.get("/incidents")).text()
    assert f"/incidents/{order[0]}" in first and f"/incidents/{order[49]}" in first
    assert f"/incidents/{order[50]}" not in first
    (more,) = _next_links(first)
    second = await (await bridge.client.get("/incidents" + more)).text()
    assert f"/incidents/{order[50]}" in second and f"/incidents/{order[69]}" in second
    assert _next_links(second) == [] and 'href="?state=' in second  # back to the first
    # a mangled cursor: the first page, not an error
    mangled = await bridge.client.get("/incidents", params={"after": "f1~../x"})
    assert mangled.status == 200 and f"/incidents/{order[0]}" in await mangled.text()
    # the API: `limit` a page, `next` to go on, null at the end
    seen, after = [], None
    while True:
        params = {"limit": "30", **({"after": after} if after else {})}
        body = await (await bridge.client.get("/api/v1/incidents", params=params)).json()
        seen += [i["ref"] for i in body["incidents"]]
        after = body["next"]
        if after is None:
            break
    assert seen == order
    default = await (await bridge.client.get("/api/v1/incidents")).json()
    assert len(default["incidents"]) == 70 and default["next"] is None


async def test_a_page_that_found_nothing_yet_says_so_and_reads_on(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.web import listing

    order = await hold(bridge.store, firing=12, resolved=0)
    monkeypatch.setattr(listing, "SCAN_AT_MOST", 5)
    html = await (await bridge.client.get("/incidents", params={"q": 'alertname="A0"'})).text()
    assert "Среди просмотренных пока ничего" in html and "/incidents/" not in html
    while "Среди просмотренных" in html:
        (more,) = _next_links(html)
        html = await (await bridge.client.get("/incidents" + more)).text()
    assert f"/incidents/{order[-1]}" in html  # A0: the first held, the last in the order
    assert _next_links(html) == []


async def test_bad_limits_and_cursors_get_a_400_and_change_nothing(bridge: Bridge) -> None:
    await hold(bridge.store, firing=3, resolved=0)
    for params in (
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "-1"},
        {"limit": "ten"},
        {"after": "garbage"},
        {"after": "f1e308~zz!"},
        {"q": "team=~("},
    ):
        response = await bridge.client.get("/api/v1/incidents", params=params)
        assert response.status == 400, params
        assert "error" in await response.json()
    assert len((await (await bridge.client.get("/api/v1/incidents")).json())["incidents"]) == 3


async def test_the_stats_read_the_last_thirty_days_not_everything_held(bridge: Bridge) -> None:
    """/stats counts the incidents opened in its windows; one changed before them is not
    even read."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    recent = incident("0001", "k1", changed_at=now).model_copy(
        update={"opened_at": now - timedelta(days=2), "group_labels": {"alertname": "Fresh"}}
    )
    old = incident("0002", "k2", state=RESOLVED, changed_at=now - timedelta(days=40))
    old = old.model_copy(
        update={"opened_at": now - timedelta(days=41), "group_labels": {"alertname": "Stale"}}
    )
    for one in (recent, old):
        await bridge.store.save_incident(one, None, [], 1.0)
    no_whole_reads(bridge)
    read: list[str] = []
    load_many = bridge.store.load_many

    async def loading(refs: list[str], alerts: bool = True):  # type: ignore[no-untyped-def]
        read.extend(refs)
        return await load_many(refs, alerts)

    bridge.store.load_many = loading  # type: ignore[method-assign]
    html = await (await bridge.client.get("/stats")).text()
    assert "Fresh" in html and "Stale" not in html
    assert read == ["0001"]


def _next_links(html: str) -> list[str]:
    import re

    return [link.replace("&amp;", "&") for link in re.findall(r'href="(\?[^"]*after=[^"]*)"', html)]


async def test_a_recent_read_is_shared_and_kept_a_while() -> None:
    """Requests during a read wait for it; within `fresh_for` they get its value; a failed
    read is not kept."""
    import asyncio

    from bridge.web.recent import Recent

    now = [1000.0]
    recent: Recent[int] = Recent(60.0, lambda: now[0])
    reads: list[int] = []
    release = asyncio.Event()

    async def read() -> int:
        reads.append(1)
        await release.wait()
        return len(reads)

    waiting = [asyncio.ensure_future(recent.get(read)) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # one request going away cancels no one else's
    release.set()
    assert await asyncio.gather(*waiting[1:]) == [1, 1] and len(reads) == 1
    now[0] += 59
    assert await recent.get(read) == 1 and len(reads) == 1
    now[0] += 2

    async def failing() -> int:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError):
        await recent.get(failing)
    assert await recent.get(read) == 2  # read again, not the failure kept


async def test_the_stats_are_read_at_most_once_a_minute(make_bridge: BridgeFactory) -> None:
    from tests.conftest import Clock

    clock = Clock(T0.timestamp())
    bridge = await make_bridge(clock=clock)
    await hold(bridge.store, firing=3, resolved=0)
    walks: list[bool] = []
    changed = bridge.store.changed

    async def walking(firing: bool, *args: object):  # type: ignore[no-untyped-def]
        walks.append(firing)
        return await changed(firing, *args)  # type: ignore[arg-type]

    bridge.store.changed = walking  # type: ignore[method-assign]
    for _ in range(3):
        assert (await bridge.client.get("/stats")).status == 200
    assert walks == [True, False]
    clock.now += 61
    assert (await bridge.client.get("/stats")).status == 200
    assert walks == [True, False, True, False]
