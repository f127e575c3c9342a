"""Incident pages: render time of an incident's page with 1,000 timeline events, and what the
list, the API and the stats cost with 10,000 incidents held in an SQLite store (read a page at a
time in the order of change, filtered, rendered), in-process, median of repeats.

    python3 bench/pages.py [--incidents 10000] [--events 1000] [--repeat 20]

Targets (issue 16): the page under 50 ms, the list under 100 ms, on a 2-core machine; and
(issue 18) a list request's cost bounded whatever is held.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from bridge.model import Alert, AlertStatus, Delivery, Incident, IncidentState
from bridge.store import Store, Stored, open_store, summaries
from bridge.timeline import Event
from bridge.web import pages
from bridge.web.listing import Filter, list_page
from bridge.words import WORDS

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def incident(n: int) -> Incident:
    alerts = {
        f"{n:08x}{k:08x}": Alert(
            fingerprint=f"{n:08x}{k:08x}",
            status=AlertStatus.FIRING if k else AlertStatus.RESOLVED,
            labels={"alertname": f"Alert{n % 50}", "instance": f"host-{k}", "team": f"t{n % 7}"},
            annotations={"summary": f"Alert{n % 50} on host-{k}", "description": "x" * 300},
            starts_at=NOW - timedelta(minutes=n % 600),
            ends_at=None if k else NOW,
        )
        for k in range(5)
    }
    return Incident(
        ref=f"{n:010x}",
        key=f"alertmanager|r|g{n}|1000",
        source="alertmanager",
        route="default" if n % 3 else "databases",
        chat_id=1000,
        receiver="r",
        group_key=f"g{n}",
        group_labels={"alertname": f"Alert{n % 50}", "team": f"t{n % 7}"},
        common_labels={"alertname": f"Alert{n % 50}", "severity": "critical", "team": f"t{n % 7}"},
        common_annotations={},
        external_url="http://alertmanager:9093",
        alerts=alerts,
        truncated_alerts=0,
        state=IncidentState.FIRING if n % 4 else IncidentState.RESOLVED,
        opened_at=NOW - timedelta(hours=n % 72),
        changed_at=NOW - timedelta(minutes=n % 1000),
    )


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    words = WORDS["ru"]
    one = Stored(incident(1), Delivery(message_id=42))
    events = [
        Event(
            (NOW - timedelta(seconds=args.events - k)).timestamp(),
            "delivery",
            {"op": "edit", "result": "sent", "took_ms": 12.5, "after_s": 0.3},
        )
        for k in range(args.events)
    ]

    def page() -> str:
        view = pages.incident_view(one, events, 0, NOW.timestamp())
        return pages.render_incident(view, words)

    page_ms = timed(page, args.repeat)
    print(f"incident page, {args.events} events: {page_ms:.1f} ms (goal < 50 ms)")
    asyncio.run(held_figures(args.incidents, args.repeat))


async def timed_async(fn: Callable[[], Awaitable[object]], repeat: int) -> float:
    await fn()  # warm
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000


async def held_figures(count: int, repeat: int) -> None:
    """The list, filtered or not, one matching none (the most a request reads), and the stats, with
    `count` incidents held in SQLite."""
    words = WORDS["ru"]
    with tempfile.TemporaryDirectory() as scratch:
        store: Store = open_store(f"sqlite:///{scratch}/pages.db")
        await store.open()
        started = time.perf_counter()
        for n in range(count):
            await store.save_incident(incident(n), None, [], NOW.timestamp())
        print(f"({count} incidents stored in {time.perf_counter() - started:.1f} s)")

        async def listing(where: Filter) -> str:
            shown, _ = await list_page(store, where, pages.PAGE_SIZE)
            query = {"state": where.state, "route": where.route, "q": where.query}
            return pages.render_list(pages.list_rows(shown), words, query, False, None)

        rare = Filter(query='alertname="None"')  # matches none: reads SCAN_AT_MOST
        stats_since = (NOW - timedelta(days=pages.STATS_DAYS)).timestamp()

        async def stats() -> str:
            held = await summaries(store, stats_since)
            return pages.render_stats(pages.stats_view(held, ["default"], NOW), words)

        figures = [
            ("list, first page", await timed_async(lambda: listing(Filter()), repeat)),
            (
                'list, team="t3"',
                await timed_async(lambda: listing(Filter(query='team="t3"')), repeat),
            ),
            ("list, matching none (reads 2,000)", await timed_async(lambda: listing(rare), repeat)),
            ("stats (all 30 days' incidents)", await timed_async(stats, max(1, repeat // 10))),
            ("every incident held read (before)", await timed_async(store.all_incidents, 1)),
        ]
        tracemalloc.start()
        kept = await summaries(store, stats_since)
        brief_bytes = tracemalloc.get_traced_memory()[0] / max(1, len(kept))
        tracemalloc.stop()
        await store.close()
    for name, ms in figures:
        print(f"{name}, {count} held: {ms:.1f} ms")
    print(
        f"what the stats and the digest keep of an incident: {brief_bytes:.0f} bytes (tracemalloc)"
    )


if __name__ == "__main__":
    main()
