"""Calendar schedules: an iCalendar feed (Google Calendar, Outlook, Nextcloud exports) whose events
are shifts, the summary naming the person (`@nickname` or `<@id>`). Pure: text in, shifts out.

Recurrences (RRULE, RDATE, EXDATE and moved occurrences by RECURRENCE-ID) are expanded by
`recurring-ical-events`; an all-day event is a shift from midnight to midnight in the schedule's
time zone, and so is a "floating" time (no time zone), as a person reading the calendar would.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events

from bridge.schedules import Shift

_PERSON = re.compile(r"<@\d+>|@[A-Za-z0-9_.-]+")
# shifts are expanded for this long around the moment they are read (refresh moves it)
LOOK_BACK = timedelta(days=2)
LOOK_AHEAD = timedelta(days=35)


class CalendarError(ValueError):
    """The text is not an iCalendar feed this bridge can read."""


def _moment(value: date | datetime, zone: ZoneInfo) -> datetime:
    """A DTSTART/DTEND value as an aware time: dates and floating times in `zone`."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=zone)
    return datetime.combine(value, time(0), tzinfo=zone)


def calendar_shifts(text: str, zone: ZoneInfo, around: datetime) -> tuple[Shift, ...]:
    """The feed's shifts from `around - LOOK_BACK` to `around + LOOK_AHEAD`, oldest first;
    events whose summary names nobody are left out. Raises CalendarError if unreadable."""
    try:
        calendar = icalendar.Calendar.from_ical(text)
        events: list[Any] = recurring_ical_events.of(calendar).between(
            around - LOOK_BACK, around + LOOK_AHEAD
        )
    except Exception as exc:  # the libraries raise many kinds on bad input
        raise CalendarError(f"not a readable iCalendar feed: {exc}") from exc
    shifts = []
    for event in events:
        people = tuple(dict.fromkeys(_PERSON.findall(str(event.get("SUMMARY", "")))))
        if not people or "DTSTART" not in event:
            continue
        start = _moment(event["DTSTART"].dt, zone)
        if "DTEND" in event:
            end = _moment(event["DTEND"].dt, zone)
        elif "DURATION" in event:
            end = start + event["DURATION"].dt
        else:  # RFC 5545: a date lasts one day, a date-time no time at all
            end = start + (
                timedelta(days=1) if not isinstance(event["DTSTART"].dt, datetime) else timedelta(0)
            )
        if end > start:
            shifts.append((start, end, people))
    return tuple(sorted(shifts, key=lambda s: (s[0], s[1])))
