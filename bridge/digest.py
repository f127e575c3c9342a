"""Pure rules of the daily digest: which chats are due one now, and what the period held."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import mean
from zoneinfo import ZoneInfo

from bridge.briefs import Brief
from bridge.model import IncidentState
from bridge.rules import RouteConfig, Rules

# a digest missed by more than this (the bridge was down at the time) is skipped, not sent late
LATE_BY_AT_MOST = timedelta(hours=1)


@dataclass(frozen=True)
class DigestDue:
    key: str  # names the chat and the period: claimed once in the store
    chat_id: int
    route: RouteConfig
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Summary:
    opened: int
    resolved: int
    firing: list[Brief]
    mtta: float | None  # seconds
    mttr: float | None
    noisiest: list[tuple[str, int]]


def digests_due(rules: Rules, now: datetime) -> list[DigestDue]:
    """One per chat whose digest time has just passed (first route naming the chat wins)."""
    due, seen = [], set()
    for route in rules.routes:
        config = route.config
        if config.digest is None or config.chat_id in seen:
            continue
        seen.add(config.chat_id)
        local = now.astimezone(ZoneInfo(config.digest.timezone))
        hour, minute = (int(part) for part in config.digest.at.split(":"))
        end = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if end > local:
            end -= timedelta(days=1)
        if local - end <= LATE_BY_AT_MOST:
            # one per local date: on a fall-back day the repeated hour has a second offset,
            # and a key holding the offset would let the digest go out twice
            key = f"digest:{config.chat_id}:{end.date().isoformat()}"
            due.append(DigestDue(key, config.chat_id, config, end - timedelta(days=1), end))
    return due


def summarize(held: list[Brief], chat_id: int, start: datetime, end: datetime) -> Summary:
    """What happened in the chat in [start, end)."""
    mine = [b for b in held if b.chat_id == chat_id]
    opened = [b for b in mine if start <= b.opened_at < end]
    resolved = [
        b for b in mine if b.state is IncidentState.RESOLVED and start <= b.changed_at < end
    ]
    acks = [(b.acked_at - b.opened_at).total_seconds() for b in opened if b.acked_at]
    repairs = [(b.changed_at - (b.firing_since or b.opened_at)).total_seconds() for b in resolved]
    noisiest = Counter(b.title for b in opened).most_common(3)
    firing = [b for b in mine if b.state is IncidentState.FIRING]
    return Summary(
        opened=len(opened),
        resolved=len(resolved),
        firing=firing,
        mtta=mean(acks) if acks else None,
        mttr=mean(repairs) if repairs else None,
        noisiest=noisiest,
    )
