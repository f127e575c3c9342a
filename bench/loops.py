"""Benchmark: what the periodic work costs as open incidents pile up (SPEC 8).

One pass of each background loop, timed at 1,000, 10,000 and 100,000 open incidents of 10
firing alerts each (1,000,000 alerts at the top), on the SQLite store and on a real
redis-server: the scheduler's tick (a route with reminders) with nothing due, after 100
incidents changed, the first tick after a restart under the same rules and under new ones
(that one times every open incident again, from a few fields the store reads of each), and
under new reminders on the route of one incident in ten (those alone are timed again); the
silence check-back against an Alertmanager that holds every alert, the last 100 groups under
a silence made in its UI (the first pass shows them silenced and, past the first size, drops
it from the 100 it covered before, whose groups it asks about; the next pass is the steady
state); pruning, and the outbox gauges; the incident list's first page and what a daily
digest reads (every firing incident and those changed in the day, as briefs); and the inbox's
time to record a notification (200 new groups, then 200 repeats, one at a time), and its p99
for new groups recorded one after another during a second start under new rules, and during
the digest's read (read again until a thousand were recorded). Also the process's RSS after
each pass, and Redis memory per incident.

The incidents are recorded through the inbox itself (the same writes a webhook makes), without
HTTP, in this process; the Alertmanager is a small server in another process that answers
with prepared lists of the alerts, and keeps them in memory by alertname to answer filters (as
Alertmanager does), so its memory is not counted here.

Run: python3 bench/loops.py            (1k, 10k, 100k; about 25 minutes)
     python3 bench/loops.py --quick    (1k, 10k; about 2 minutes)
Not a test: it asserts nothing, it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from storm import free_port, notification, pct, rss_mb  # noqa: E402

from bridge.cli import SWITCH_INTERVAL  # noqa: E402
from bridge.housekeeping import checkpoint_forever, prune_once  # noqa: E402
from bridge.metrics import Metrics  # noqa: E402
from bridge.pachca import DryRunPachca  # noqa: E402
from bridge.rules import load_rules  # noqa: E402
from bridge.scheduler import LOOKS_BASIS, Scheduler  # noqa: E402
from bridge.settings import Settings  # noqa: E402
from bridge.sources.alertmanager import parse  # noqa: E402
from bridge.store import Store, open_store, summaries  # noqa: E402
from bridge.tasks import Pulse  # noqa: E402
from bridge.web.app import create_app  # noqa: E402
from bridge.web.listing import Filter, list_page  # noqa: E402
from bridge.web.state import INBOX, OUTBOX  # noqa: E402

ALERTS_PER_INCIDENT = 10
ACCEPTED = 200  # notifications timed one by one at each size (new groups, then repeats)
RULES = """\
routes:
  - name: critical
    matchers: ['severity="critical"']
    chat_id: 1001
    remind_every: 30m
  - name: default
    chat_id: 1000
    remind_every: 30m
"""
# the same with reminders every 15 minutes on the route of one group in ten
ONE_ROUTE_RETIMED = RULES.replace("remind_every: 30m", "remind_every: 15m", 1)

FAKE_ALERTMANAGER = r"""
import json
import re
import sys
from pathlib import Path
from aiohttp import web
sys.path.insert(0, sys.argv[3])
from tests.fake_alertmanager import matches, unquoted
state = Path(sys.argv[2])
held = {}
def read(name):
    return (state / name).read_bytes()
def by_alertname():
    # the alerts held, by alertname, parsed once per alerts.json (as Alertmanager holds them
    # in memory): a group's question costs what it answers, not a parse of a million alerts
    version = (state / "alerts.json").stat().st_mtime_ns
    if held.get("version") != version:
        index = {}
        for alert in json.loads(read("alerts.json")):
            index.setdefault(alert["labels"].get("alertname", ""), []).append(alert)
        held.update(version=version, index=index)
    return held["index"]
def named(matcher):
    # the alertnames a matcher `alertname="x"` or `alertname=~"x|y"` (escaped literals) names
    found = re.fullmatch(r'alertname(=~?)"(.*)"', matcher)
    if found is None:
        return None
    if found[1] == "=":
        return [unquoted(found[2])]
    return [re.sub(r"\\(.)", r"\1", n) for n in re.split(r"(?<!\\)\|", unquoted(found[2]))]
async def answer(request):
    if request.path == "/api/v2/alerts":
        if request.query.get("active") == "false":
            return web.Response(body=read("suppressed.json"), content_type="application/json")
        wanted = request.query.getall("filter", [])
        if not wanted:
            return web.Response(body=read("alerts.json"), content_type="application/json")
        index = by_alertname()
        names = next((n for n in map(named, wanted) if n is not None), None)
        some = [a for n in names for a in index.get(n, [])] if names else [
            a for alerts in index.values() for a in alerts
        ]
        return web.json_response([a for a in some if all(matches(a, m) for m in wanted)])
    if request.path == "/api/v2/silences":
        return web.Response(body=read("silences.json"), content_type="application/json")
    return web.json_response({"uptime": "2026-01-01T00:00:00Z", "cluster": {"peers": []}})
app = web.Application()
app.router.add_get("/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""
# groups silenced in Alertmanager's UI at each size (the last ones: the first hundred change)
SILENCED_GROUPS = 100
SILENCE = {
    "id": "5e1e9ce0-0000-4000-8000-000000000001",
    "status": {"state": "active"},
    "createdBy": "bench",
    "endsAt": "2099-01-01T00:00:00Z",
}


def alertmanager_view(groups: int, state: Path) -> None:
    """What an Alertmanager holding every alert of `groups` groups answers to GET alerts
    (alerts.json), the last SILENCED_GROUPS of them under one silence; and to
    ?active=false (suppressed.json): those."""
    view, suppressed = [], []
    for group in range(groups):
        silenced = group >= groups - SILENCED_GROUPS
        by = [SILENCE["id"]] if silenced else []
        for alert in notification(group, ALERTS_PER_INCIDENT)["alerts"]:
            held = {
                "labels": alert["labels"],
                "annotations": alert["annotations"],
                "fingerprint": alert["fingerprint"],
                "startsAt": alert["startsAt"],
                "endsAt": "2099-01-01T00:00:00Z",
                "updatedAt": alert["startsAt"],
                "generatorURL": alert["generatorURL"],
                "receivers": [{"name": "pachca"}],
                "status": {
                    "state": "suppressed" if silenced else "active",
                    "silencedBy": by,
                    "inhibitedBy": [],
                },
            }
            view.append(held)
            if silenced:
                suppressed.append(held)
    (state / "alerts.json").write_text(json.dumps(view))
    (state / "suppressed.json").write_text(json.dumps(suppressed))
    (state / "silences.json").write_text(json.dumps([SILENCE]))


async def accept_latency(inbox: Any, first: int) -> tuple[float, float]:
    """p50 / p99 in ms of recording 200 new groups one after another, and 200 repeats of
    groups already open (the inbox's share of intake latency: parse and HTTP aside)."""
    times = []
    for group in [*range(first, first + ACCEPTED), *range(100, 100 + ACCEPTED)]:
        note = parse(json.dumps(notification(group, ALERTS_PER_INCIDENT)).encode())
        times.append(await timed(partial(inbox.accept, note)))
    return pct(times, 50), pct(times, 99)


async def accepts_during(
    work: Callable[[], Awaitable[Any]], inbox: Any, first: int, at_least: int = 0
) -> tuple[float, int]:
    """p99 in ms of recording new groups one after another while `work` runs (the inbox's
    share of intake latency while a long pass holds the same event loop), and how many;
    `work` again until at least `at_least` were recorded (a p99 of a hundred is their worst)."""
    times: list[float] = []
    group = first
    while not times or len(times) < at_least:
        task = asyncio.ensure_future(work())
        while not task.done():
            note = parse(json.dumps(notification(group, ALERTS_PER_INCIDENT)).encode())
            times.append(await timed(partial(inbox.accept, note)))
            group += 1
        await task
    return pct(times, 99), len(times)


async def timed(what: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await what()
    return (time.perf_counter() - started) * 1000


async def fill(app: Any, start: int, end: int) -> float:
    """Record groups start..end-1 through the inbox; returns notifications per second."""
    inbox = app[INBOX]
    began = time.perf_counter()
    for first in range(start, end, 64):
        notes = [
            parse(json.dumps(notification(g, ALERTS_PER_INCIDENT)).encode())
            for g in range(first, min(end, first + 64))
        ]
        await asyncio.gather(*(inbox.accept(n) for n in notes))
    return (end - start) / (time.perf_counter() - began)


async def measure(kind: str, store_url: str, sizes: list[int], state: Path, am_url: str) -> None:
    rules_path = state / "rules.yaml"
    rules_path.write_text(RULES)
    retimed_path = state / "retimed.yaml"
    retimed_path.write_text(ONE_ROUTE_RETIMED)
    retimed = load_rules(retimed_path)
    settings = Settings.from_environ(
        {},
        BRIDGE_STORE=store_url,
        ALERTMANAGER_URL=am_url,
        BRIDGE_ALERTMANAGER_SETTLE="0s",
    )
    store: Store = open_store(store_url)
    await store.open()
    app = create_app(
        settings, load_rules(rules_path), store, DryRunPachca(), Metrics(), run_outbox=False
    )
    inbox, outbox = app[INBOX], app[OUTBOX]
    # the store's upkeep runs as in the bridge (the other loops are what is timed here)
    upkeep = asyncio.create_task(checkpoint_forever(store, Pulse(stall_after=3600)))
    redis = store_url.startswith("redis")
    used_before = await redis_used(store) if redis else 0
    print(f"\n   {kind} store")
    print(
        f"   {'open':>8s} {'fill/s':>7s} {'tick':>9s} {'+100 chg':>9s} {'restart':>9s} "
        f"{'new rules':>10s} {'1 route':>8s} {'silences':>9s} {'1st silc':>9s} "
        f"{'accept p50/p99':>15s} {'p99 in new rules (n)':>21s} "
        f"{'prune':>8s} {'gauges':>8s} {'list':>8s} {'digest':>8s} "
        f"{'p99 in digest (n)':>19s} {'RSS':>7s}" + (f" {'Redis/incident':>14s}" if redis else "")
    )
    done = 0
    for size in sizes:
        rate = await fill(app, done, size)
        done = size
        alertmanager_view(size, state)
        await warm(am_url)
        await store.put_setting(LOOKS_BASIS, "other rules")
        scheduler = Scheduler(store, inbox, inbox.rules)
        new_rules = await timed(scheduler.tick)  # a start under new rules looks at all
        tick = await timed(scheduler.tick)
        # a hundred incidents change (one more alert each, a new one at each size): the next
        # tick looks at those
        more = ALERTS_PER_INCIDENT + 1 + sizes.index(size)
        changes = [parse(json.dumps(notification(g, more)).encode()) for g in range(100)]
        await asyncio.gather(*(inbox.accept(n) for n in changes))
        tick_changed = await timed(scheduler.tick)
        restarted = await timed(Scheduler(store, inbox, inbox.rules).tick)  # same rules
        one_route = await timed(Scheduler(store, inbox, retimed).tick)
        assert outbox.silencer is not None
        first_check = await timed(partial(outbox.silencer.check_once, store))  # shows them
        check = await timed(partial(outbox.silencer.check_once, store))
        accept_p50, accept_p99 = await accept_latency(inbox, 1_000_000 + size)
        # another start under new rules, new groups recorded meanwhile
        await store.put_setting(LOOKS_BASIS, "other rules")
        busy_p99, busy_n = await accepts_during(
            Scheduler(store, inbox, inbox.rules).tick, inbox, 2_000_000 + size * 10
        )
        prune = await timed(lambda: prune_once(store, 86400.0, time.time()))
        gauges = await timed(lambda: store.outbox_stats(time.time()))
        listing = await timed(lambda: list_page(store, Filter(), 50))

        def digest_read() -> Awaitable[Any]:
            return summaries(store, time.time() - 86400, float("-inf"))

        digest = await timed(digest_read)
        # the digest's read again, new groups recorded meanwhile (does it stall the intake?),
        # read again till a thousand are
        digest_p99, digest_n = await accepts_during(
            digest_read, inbox, 3_000_000 + size * 10, at_least=1000
        )
        line = (
            f"   {size:8,d} {rate:7.0f} {tick:7.1f}ms {tick_changed:7.1f}ms {restarted:7.1f}ms "
            f"{new_rules:8.0f}ms {one_route:6.0f}ms {check:7.1f}ms {first_check:7.0f}ms "
            f"{accept_p50:5.1f}/{accept_p99:5.1f}ms "
            f"{busy_p99:10.1f}ms ({busy_n:6,d}) "
            f"{prune:6.1f}ms {gauges:6.1f}ms {listing:6.1f}ms {digest:6.0f}ms "
            f"{digest_p99:8.1f}ms ({digest_n:6,d}) "
            f"{rss_mb_self():5.0f}MB"
        )
        if redis:
            per = (await redis_used(store) - used_before) / size
            line += f" {per / 1024:11.1f} KB"
        print(line, flush=True)
    if outbox.silencer is not None:
        for cluster in outbox.silencer.alertmanagers.values():
            await cluster.close()
    upkeep.cancel()
    await store.close()


async def warm(am_url: str) -> None:
    """Have the stand-in Alertmanager parse what it now holds (not timed: Alertmanager keeps
    its alerts in memory)."""
    async with aiohttp.ClientSession() as http:
        query = {"filter": 'alertname="none"'}
        async with http.get(f"{am_url}/api/v2/alerts", params=query) as answer:
            await answer.read()


def rss_mb_self() -> float:
    import os

    return rss_mb(os.getpid(), "VmRSS")


async def redis_used(store: Any) -> int:
    info = await store._redis.info("memory")
    return int(info["used_memory"])


def main(quick: bool) -> None:
    sys.setswitchinterval(SWITCH_INTERVAL)  # as `serve` runs the bridge
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    state = Path(tempfile.mkdtemp(prefix="bridge-loops-"))
    am_port = free_port()
    alertmanager_view(0, state)
    am = subprocess.Popen(
        [sys.executable, "-c", FAKE_ALERTMANAGER, str(am_port), str(state), str(REPO)]
    )
    time.sleep(1.0)
    am_url = f"http://127.0.0.1:{am_port}"
    print(
        f"python {sys.version.split()[0]}; {ALERTS_PER_INCIDENT} firing alerts per incident; "
        "one pass of each loop, in ms; RSS of this process after the passes"
    )
    try:
        asyncio.run(measure("sqlite", f"sqlite:///{state}/loops.db", sizes, state, am_url))
        binary = shutil.which("redis-server")
        if binary is None:
            print("\n   redis store: redis-server is not installed; skipped")
            return
        port = free_port()
        redis = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            asyncio.run(measure("redis", url, sizes, state, am_url))
        finally:
            redis.terminate()
    finally:
        am.terminate()
        shutil.rmtree(state, ignore_errors=True)  # 1.8 GB at 100,000 incidents


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k only")
    main(parser.parse_args().quick)
