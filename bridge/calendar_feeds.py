"""Reading calendar schedules' feeds: each replica reads each feed every `refresh` and lays its
shifts over the schedule (LiveSchedules). The last good copy is kept in the store, so a feed
that fails keeps its shifts, and a restart starts from it; a failure is logged and counted
(`bridge_schedule_refresh_failures_total`). A calendar never read falls back to `fallback`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp

from bridge.calendars import CalendarError, calendar_shifts
from bridge.errors import StoreError
from bridge.metrics import Metrics
from bridge.schedules import LiveSchedules
from bridge.store import Store
from bridge.tasks import Pulse

log = logging.getLogger(__name__)

MAX_FEED_BYTES = 5 * 1024 * 1024
CHECK_EVERY = 30.0  # seconds between looks at which feed is due (and the shifts' window moves)


async def read_feed(url: str, seconds: float = 10.0) -> str:
    """The feed at `url` as text; raises CalendarError saying why it could not be read."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as http,
            http.get(url) as response,
        ):
            if response.status != 200:
                raise CalendarError(f"{url} answered HTTP {response.status}")
            body = await response.content.read(MAX_FEED_BYTES + 1)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise CalendarError(f"{url} cannot be read: {type(exc).__name__}: {exc}") from exc
    if len(body) > MAX_FEED_BYTES:
        raise CalendarError(f"{url} is larger than {MAX_FEED_BYTES} bytes")
    return body.decode("utf-8", errors="replace")


class CalendarFeeds:
    def __init__(
        self,
        store: Store,
        schedules: LiveSchedules,
        metrics: Metrics,
        read: Callable[[str], Awaitable[str]] = read_feed,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.schedules = schedules
        self.metrics = metrics
        self.read = read
        self.clock = clock
        self.names = [name for name, s in schedules.items() if s.ical_url]
        self._texts: dict[str, str] = {}
        self._due: dict[str, float] = dict.fromkeys(self.names, 0.0)
        for name in self.names:
            metrics.schedule_refresh_failures.labels(name)

    async def load(self) -> None:
        """Start from the last good copies the store holds (a restart, another replica)."""
        for name in self.names:
            text = await self.store.calendar(name)
            if text is not None:
                self._texts[name] = text
        self._lay(datetime.fromtimestamp(self.clock(), UTC))

    async def refresh(self) -> None:
        """Read the feeds that are due; lay every known copy over its schedule."""
        now = self.clock()
        at = datetime.fromtimestamp(now, UTC)
        for name in self.names:
            if now < self._due[name]:
                continue
            schedule = self.schedules[name]
            self._due[name] = now + schedule.refresh_seconds
            assert schedule.ical_url is not None
            try:
                text = await self.read(schedule.ical_url)
                calendar_shifts(text, schedule.zone, at)  # refused here if unreadable
            except CalendarError as exc:
                self.metrics.schedule_refresh_failures.labels(name).inc()
                kept = "keeping the last good copy" if name in self._texts else "using fallback"
                log.warning("schedule %s: calendar not refreshed (%s); %s", name, exc, kept)
                continue
            self._texts[name] = text
            try:
                await self.store.save_calendar(name, text)
            except StoreError as exc:
                log.warning("schedule %s: last good copy not stored: %s", name, exc)
        self._lay(at)

    def _lay(self, at: datetime) -> None:
        for name, text in self._texts.items():
            self.schedules.set_calendar(name, calendar_shifts(text, self.schedules[name].zone, at))

    async def run(self, pulse: Pulse) -> None:
        try:
            await self.load()
        except StoreError as exc:
            log.warning("calendars: no stored copies (%s); reading the feeds", exc)
        while True:
            await self.refresh()
            pulse.beat(CHECK_EVERY)
            await asyncio.sleep(CHECK_EVERY)
