"""Incident pages: render time of an incident's page with 1,000 timeline events, and of the list
with 10,000 incidents (filtering, sorting and the first page), in-process, median of repeats.

    python3 bench/pages.py [--incidents 10000] [--events 1000] [--repeat 20]

Targets (issue 16): the page under 50 ms, the list under 100 ms, on a 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from bridge.model import Alert, AlertStatus, Delivery, Incident, IncidentState
from bridge.store import Stored
from bridge.timeline import Event
from bridge.web import pages
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

    held = [incident(n) for n in range(args.incidents)]

    def listing() -> str:
        shown = pages.select(held, "", "", 'team="t3"')
        rows = pages.list_rows(shown[: pages.PAGE_SIZE])
        return pages.render_list(
            rows,
            words,
            {"state": "", "route": "", "q": 'team="t3"'},
            1,
            pages.page_count(len(shown)),
        )

    page_ms = timed(page, args.repeat)
    list_ms = timed(listing, args.repeat)
    print(f"incident page, {args.events} events: {page_ms:.1f} ms (goal < 50 ms)")
    print(
        f"list of {args.incidents} incidents, filtered by a matcher: {list_ms:.1f} ms "
        f"(goal < 100 ms)"
    )


if __name__ == "__main__":
    main()
