"""On-call schedules: who is on duty at an instant. Pure, `at` passed in, like `incidents.py`.

A schedule rotates its members at a handoff time in its own time zone (`every: 1d` at
`handoff: "10:00"`, or `every: 1w` at `handoff: "Mon 10:00"`), counted from `start`; fixed
`overrides` win over the rotation; `fallback` is called when nobody is on duty (before the
rotation starts, or with no members). Handoffs follow the local wall clock: 10:00 stays 10:00
across daylight-saving changes, so a shift may be an hour shorter or longer than `every`.

A mention `oncall:<schedule>` stands, wherever a mention is accepted, for whoever is on duty
at the moment the message or comment is produced (`resolve_mentions`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

ONCALL_PREFIX = "oncall:"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_HANDOFF = re.compile(r"(?:(?P<day>Mon|Tue|Wed|Thu|Fri|Sat|Sun) )?(?P<h>\d{1,2}):(?P<m>\d{2})")


Shift = tuple[datetime, datetime, tuple[str, ...]]  # from, to (exclusive), who


@dataclass(frozen=True)
class Override:
    who: tuple[str, ...]
    start: datetime  # aware
    end: datetime  # aware, exclusive


@dataclass(frozen=True)
class Schedule:
    name: str
    zone: ZoneInfo
    members: tuple[str, ...]
    every_days: int
    first_handoff: datetime  # naive, in `zone`: the rotation's first handoff, wall clock
    overrides: tuple[Override, ...] = ()
    fallback: tuple[str, ...] = ()
    announce_chat: int | None = None  # handoffs are announced in this chat
    # a calendar schedule: its feed, how often it is read, and the shifts last read from it
    ical_url: str | None = None
    refresh_seconds: float = 600.0
    calendar: tuple[Shift, ...] = ()

    def last_handoff(self, at: datetime) -> datetime | None:
        """The rotation's latest handoff at or before `at` (None: not started, or none)."""
        period = self._period(at) if self.members else None
        return None if period is None else self.handoff(period)

    def on_duty(self, at: datetime) -> tuple[str, ...]:
        """Who is on duty at `at` (aware): an override, else the rotation, else the fallback."""
        for override in reversed(self.overrides):  # a later override wins over an earlier one
            if override.start <= at < override.end:
                return override.who
        shift_people = [who for start, end, who in self.calendar if start <= at < end]
        if shift_people:  # overlapping events: everyone they name
            return tuple(dict.fromkeys(p for people in shift_people for p in people))
        index = self._period(at)
        if index is None or not self.members:
            return self.fallback
        return (self.members[index % len(self.members)],)

    def _period(self, at: datetime) -> int | None:
        """How many handoffs have happened by `at` minus one (None: the rotation has not
        started), by the schedule's wall clock."""
        local = at.astimezone(self.zone).replace(tzinfo=None)
        if local < self.first_handoff:
            return None
        return (local - self.first_handoff) // timedelta(days=self.every_days)

    def next_handoff(self, at: datetime) -> datetime | None:
        """When the rotation next hands over after `at` (None: it has no rotation)."""
        if not self.members:
            return None
        period = self._period(at)
        return self.handoff(0 if period is None else period + 1)

    def handoff(self, period: int) -> datetime:
        """The aware instant the `period`-th shift starts (0: the first)."""
        wall = self.first_handoff + timedelta(days=self.every_days * period)
        return wall.replace(tzinfo=self.zone)

    def shifts(self, start: datetime, end: datetime) -> list[Shift]:
        """Who is on duty from `start` to `end`, as (from, to, who) with the overrides cut in:
        for a team to check a rota before deploying it."""
        cuts = {start, end}
        period = self._period(start)
        first = 0 if period is None else period + 1
        while True:
            moment = self.handoff(first)
            if moment >= end:
                break
            if moment > start:
                cuts.add(moment)
            first += 1
        for override in self.overrides:
            cuts.update(t for t in (override.start, override.end) if start < t < end)
        for shift_start, shift_end, _ in self.calendar:
            cuts.update(t for t in (shift_start, shift_end) if start < t < end)
        ordered = sorted(cuts)
        out: list[Shift] = []
        for begin, finish in pairwise(ordered):
            who = self.on_duty(begin)
            if out and out[-1][2] == who:
                out[-1] = (out[-1][0], finish, who)
            else:
                out.append((begin, finish, who))
        return out


class LiveSchedules(Mapping[str, Schedule]):
    """The rules' schedules with the swaps taken in the chat laid over them (a swap wins over
    the rotation and the overrides while it lasts). Refreshed from the store by a background
    loop on every replica; the replica that records a swap updates it at once."""

    def __init__(self, base: Mapping[str, Schedule]) -> None:
        self._base = dict(base)
        self._swaps: dict[str, Override] = {}
        self._calendars: dict[str, tuple[Shift, ...]] = {}

    def set_calendar(self, name: str, shifts: tuple[Shift, ...]) -> None:
        """The shifts last read from a calendar schedule's feed."""
        if name in self._base:
            self._calendars[name] = shifts

    def update(self, swaps: Iterable[tuple[str, str, float, float]]) -> None:
        """The swaps now in force: (schedule, who, start, end) with Unix times."""
        self._swaps = {
            name: Override(
                (who,), datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
            )
            for name, who, start, end in swaps
            if name in self._base
        }

    def swap(self, name: str) -> Override | None:
        return self._swaps.get(name)

    def __getitem__(self, name: str) -> Schedule:
        schedule = self._base[name]
        if name in self._calendars:
            schedule = replace(schedule, calendar=self._calendars[name])
        swap = self._swaps.get(name)
        return replace(schedule, overrides=(*schedule.overrides, swap)) if swap else schedule

    def __iter__(self) -> Iterator[str]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)


_TAKE_FOR = re.compile(r"(?P<n>\d+)(?P<unit>[mhd])")
_TAKE_UNTIL = re.compile(r"until (?P<h>\d{1,2}):(?P<m>\d{2})")


def take_until(text: str, schedule: Schedule, at: datetime) -> datetime | None:
    """The end of a swap taken at `at`: `2h` / `30m` / `1d` from now, `until 18:00` (the
    next 18:00 in the schedule's zone), or nothing: until the next handoff (or 12 hours)."""
    text = text.strip()
    if not text:
        return schedule.next_handoff(at) or at + timedelta(hours=12)
    if match := _TAKE_FOR.fullmatch(text):
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match["unit"]]
        length = timedelta(**{unit: int(match["n"])})
        return at + length if timedelta(0) < length <= timedelta(days=14) else None
    if match := _TAKE_UNTIL.fullmatch(text):
        hour, minute = int(match["h"]), int(match["m"])
        if hour > 23 or minute > 59:
            return None
        local = at.astimezone(schedule.zone)
        end = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return end if end > local else end + timedelta(days=1)
    return None


def parse_handoff(text: str, every_days: int) -> tuple[int | None, time]:
    """`"10:00"` or `"Mon 10:00"` (a weekday only for rotations of whole weeks)."""
    match = _HANDOFF.fullmatch(text.strip())
    if not match or int(match["h"]) > 23 or int(match["m"]) > 59:
        raise ValueError(f'handoff {text!r} must be like "10:00" or "Mon 10:00"')
    weekday = WEEKDAYS.index(match["day"]) if match["day"] else None
    if weekday is not None and every_days % 7:
        raise ValueError(f"handoff {text!r} names a weekday, but every is not whole weeks")
    return weekday, time(int(match["h"]), int(match["m"]))


def first_handoff(start: date, weekday: int | None, at: time) -> datetime:
    """The first handoff on or after `start` (naive wall clock)."""
    day = start
    if weekday is not None:
        day = start + timedelta(days=(weekday - start.weekday()) % 7)
    return datetime.combine(day, at)


def is_oncall(mention: str) -> bool:
    return mention.startswith(ONCALL_PREFIX)


def resolve_mentions(
    mentions: Iterable[str], schedules: Mapping[str, Schedule], at: datetime | None = None
) -> list[str]:
    """`mentions` with each `oncall:<schedule>` replaced by who is on duty at `at` (default:
    now), without repeats; a schedule the rules no longer have resolves to nobody."""
    at = at or datetime.now(UTC)
    out: list[str] = []
    for mention in mentions:
        if is_oncall(mention):
            schedule = schedules.get(mention.removeprefix(ONCALL_PREFIX))
            people: Iterable[str] = schedule.on_duty(at) if schedule else ()
        else:
            people = (mention,)
        out += [p for p in people if p not in out]
    return out
