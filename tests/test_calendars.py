"""Calendar schedules: an iCalendar feed written to RFC 5545 (a weekly RRULE with an EXDATE and one
moved occurrence, an all-day shift, a floating time, an event naming nobody), served by a local
HTTP server; a failed refresh keeps the last good copy, counts the failure, and a calendar never
read falls back."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.calendar_feeds import CalendarFeeds
from bridge.calendars import CalendarError, calendar_shifts
from bridge.cli import main
from bridge.errors import ConfigError
from bridge.metrics import Metrics
from bridge.rules import load_rules
from bridge.schedules import LiveSchedules
from bridge.store import open_store
from tests.conftest import FIXTURES

FEED = (FIXTURES / "ical" / "secondary.ics").read_text()
MOSCOW = ZoneInfo("Europe/Moscow")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_the_feed_becomes_shifts_with_recurrences_all_day_and_floating_times() -> None:
    shifts = calendar_shifts(FEED, MOSCOW, utc(2026, 11, 4))
    spans = [(a.astimezone(UTC), b.astimezone(UTC), who) for a, b, who in shifts]
    assert (utc(2026, 11, 2, 9), utc(2026, 11, 5, 9), ("<@201>",)) in spans  # 10:00 Berlin
    # all day on the 6th, in the schedule's zone: Moscow midnight to midnight
    assert (utc(2026, 11, 5, 21), utc(2026, 11, 6, 21), ("@petrov",)) in spans
    # a floating 20:00-08:00 is read in the schedule's zone too
    assert (utc(2026, 11, 7, 17), utc(2026, 11, 8, 5), ("@ivanova",)) in spans
    # the 9 November occurrence moved to the 10th at 12:00 Berlin; the 16th is excluded
    assert (utc(2026, 11, 10, 11), utc(2026, 11, 13, 11), ("<@201>",)) in spans
    assert not any(a.date() == utc(2026, 11, 9).date() for a, _, _ in spans)
    later = calendar_shifts(FEED, MOSCOW, utc(2026, 11, 15))
    assert not any(a.astimezone(UTC).date() == utc(2026, 11, 16).date() for a, _, _ in later)
    assert all(who for _, _, who in shifts)  # "Team lunch" names nobody: not a shift
    with pytest.raises(CalendarError):
        calendar_shifts("BEGIN:VCALENDAR\nthis is not", MOSCOW, utc(2026, 11, 4))


RULES = """
schedules:
  - name: secondary
    timezone: Europe/Moscow
    ical_url: {url}
    refresh: 5m
    fallback: ["@dba_lead"]
routes:
  - name: default
    chat_id: 1000
    mentions: ["oncall:secondary"]
"""


class Feed:
    """A calendar server whose answer the test changes."""

    def __init__(self) -> None:
        self.status = 200
        self.body = FEED

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(status=self.status, text=self.body, content_type="text/calendar")


@pytest.fixture
async def feed() -> AsyncIterator[tuple[Feed, str]]:
    served = Feed()
    app = web.Application()
    app.router.add_get("/secondary.ics", served.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield served, str(server.make_url("/secondary.ics"))
    await server.close()


async def test_refresh_keeps_the_last_good_copy_counts_failures_and_survives_a_restart(
    feed: tuple[Feed, str], tmp_path: Path
) -> None:
    served, url = feed
    (tmp_path / "rules.yaml").write_text(RULES.format(url=url))
    rules = load_rules(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    clock = {"now": utc(2026, 11, 11, 12).timestamp()}
    metrics = Metrics()

    def feeds(live: LiveSchedules) -> CalendarFeeds:
        return CalendarFeeds(store, live, metrics, clock=lambda: clock["now"])

    def failures() -> float:
        return (
            metrics.registry.get_sample_value(
                "bridge_schedule_refresh_failures_total", {"schedule": "secondary"}
            )
            or 0.0
        )

    live = LiveSchedules(rules.schedules)
    at = datetime.fromtimestamp(clock["now"], UTC)
    assert live["secondary"].on_duty(at) == ("@dba_lead",)  # never read: fallback
    running = feeds(live)
    await running.refresh()
    assert live["secondary"].on_duty(at) == ("<@201>",)  # the moved occurrence
    # the feed breaks: the shifts read before stay, the failure is counted
    served.status = 500
    clock["now"] += 600
    await running.refresh()
    assert failures() == 1
    assert live["secondary"].on_duty(at) == ("<@201>",)
    served.status, served.body = 200, "not a calendar"
    clock["now"] += 600
    await running.refresh()
    assert failures() == 2
    # a restart with the feed still broken starts from the stored copy
    restarted = LiveSchedules(rules.schedules)
    await feeds(restarted).load()
    assert restarted["secondary"].on_duty(at) == ("<@201>",)
    await store.close()


def test_calendar_schedules_are_checked(tmp_path: Path) -> None:
    for text, says in (
        (RULES.format(url="ftp://x/cal.ics"), "must be an http(s) URL"),
        (RULES.format(url="https://x/c.ics").replace("refresh: 5m", "refresh: 10s"), "shorter"),
        (
            RULES.format(url="https://x/c.ics").replace(
                "    refresh: 5m", '    refresh: 5m\n    members: ["@a"]'
            ),
            "no members or rotation",
        ),
    ):
        (tmp_path / "rules.yaml").write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_rules(tmp_path)
        assert says in "\n".join(caught.value.problems)


async def test_cli_reads_the_calendar(
    feed: tuple[Feed, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    _, url = feed
    (tmp_path / "rules.yaml").write_text(RULES.format(url=url))
    args = ["oncall", str(tmp_path), "--at", "2026-11-11T12:00:00+00:00", "--days", "3"]
    assert await asyncio.to_thread(main, args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "secondary (Europe/Moscow): now <@201>"
    assert "  2026-11-13 14:00 – 2026-11-14 15:00  @dba_lead" in out
