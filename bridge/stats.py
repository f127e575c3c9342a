"""Per-route figures over a window of days, for the stats page: incidents opened, MTTA (open ->
first ack), MTTR (firing -> resolved), the noisiest alerts, and a day-by-day series drawn as a
server-rendered SVG. Pure: incidents and `now` in."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from html import escape
from statistics import mean

from bridge.briefs import Brief
from bridge.model import IncidentState


@dataclass(frozen=True)
class Day:
    day: date
    opened: int
    mtta: float | None  # seconds
    mttr: float | None


@dataclass(frozen=True)
class RouteStats:
    route: str
    days: int
    opened: int
    mtta: float | None
    mttr: float | None
    noisiest: list[tuple[str, int]]
    series: list[Day]


def _ack_time(incident: Brief) -> float | None:
    return (incident.acked_at - incident.opened_at).total_seconds() if incident.acked_at else None


def _repair_time(incident: Brief) -> float | None:
    if incident.state is not IncidentState.RESOLVED:
        return None
    return (incident.changed_at - (incident.firing_since or incident.opened_at)).total_seconds()


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return mean(known) if known else None


def route_stats(incidents: list[Brief], route: str, now: datetime, days: int) -> RouteStats:
    """The route's incidents opened in the last `days` days (UTC days)."""
    start = now - timedelta(days=days)
    mine = [i for i in incidents if i.route == route and start <= i.opened_at <= now]
    by_day: dict[date, list[Brief]] = {}
    for incident in mine:
        by_day.setdefault(incident.opened_at.date(), []).append(incident)
    first = (now - timedelta(days=days - 1)).date()
    series = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        opened = by_day.get(day, [])
        series.append(
            Day(
                day,
                len(opened),
                _mean([_ack_time(i) for i in opened]),
                _mean([_repair_time(i) for i in opened]),
            )
        )
    return RouteStats(
        route=route,
        days=days,
        opened=len(mine),
        mtta=_mean([_ack_time(i) for i in mine]),
        mttr=_mean([_repair_time(i) for i in mine]),
        noisiest=Counter(i.title for i in mine).most_common(5),
        series=series,
    )


def chart_svg(series: list[Day], width: int = 600, height: int = 160) -> str:
    """Incidents opened per day as bars, MTTA and MTTR (minutes) as lines on their own scale;
    scales to its container (viewBox)."""
    if not series:
        return ""
    pad, step = 24, (width - 2 * 24) / len(series)
    top_count = max((d.opened for d in series), default=0) or 1
    top_minutes = max([v / 60 for d in series for v in (d.mtta, d.mttr) if v is not None] or [1.0])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="incidents per day, MTTA and MTTR">'
    ]
    usable = height - 2 * pad
    for index, day in enumerate(series):
        bar = usable * day.opened / top_count
        x = pad + index * step
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{height - pad - bar:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{bar:.1f}" fill="#8899aa"><title>{escape(day.day.isoformat())}: '
            f"{day.opened}</title></rect>"
        )
    for attr, color in (("mtta", "#e0a449"), ("mttr", "#c62828")):
        points = [
            f"{pad + (i + 0.5) * step:.1f},{height - pad - usable * (value / 60) / top_minutes:.1f}"
            for i, d in enumerate(series)
            if (value := getattr(d, attr)) is not None
        ]
        if points:
            parts.append(
                f'<polyline points="{" ".join(points)}" fill="none" stroke="{color}" '
                f'stroke-width="2"><title>{attr.upper()}</title></polyline>'
            )
    parts.append(
        f'<text x="{pad}" y="14" font-size="11" fill="#6a6f78">max {top_count}/day · '
        f"{top_minutes:.0f} min</text></svg>"
    )
    return "".join(parts)
