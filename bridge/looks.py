"""When the scheduler must next look at an incident (pure).

The scheduler's tick reads only the incidents due for a look (see `Store.looks_due`), so its
cost follows what is due and what changed, not what is open. Every save of an open incident
makes it due at once; after a look, `next_look` says when anything the scheduler does could
next apply to it: a re-fire comment, a reminder or escalation step, closing it as unreported,
dropping a silence shown long past its end. Early is harmless (the look finds nothing and
asks again); late is a missed reminder, so every rule the tick applies has its time here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from bridge.incidents import REFIRE_WINDOW
from bridge.model import IncidentState, LookFacts
from bridge.oncall import needs_attention
from bridge.rules import RouteConfig, Rules
from bridge.silences import STALE_SILENCE


@dataclass(frozen=True)
class RouteTiming:
    """What `next_look` reads of a route's rules, and all of it: a change of anything else
    (chats, templates, matchers) leaves the recorded look times true (see `looks_basis`)."""

    escalate_after: tuple[float, ...]  # seconds after it started firing, step by step
    remind_seconds: float | None

    @classmethod
    def of(cls, route: RouteConfig) -> RouteTiming:
        return cls(tuple(step.after_seconds for step in route.escalation), route.remind_seconds)


def next_look(
    incident: LookFacts, route: RouteTiming, stale_after: timedelta | None
) -> datetime | None:
    """The earliest time something may be due for the incident (`Incident.look_facts`, or
    as the store reads them: `Store.look_facts`); None: nothing until it changes (and a
    change makes it due anyway)."""
    if incident.finished:
        return None
    times: list[datetime] = []
    firing = incident.state is IncidentState.FIRING
    if firing and incident.refired_pending and incident.refired_since is not None:
        times.append(incident.refired_since + REFIRE_WINDOW)
    if needs_attention(incident):
        since = incident.firing_since or incident.opened_at
        steps = route.escalate_after[incident.escalated :]
        if steps:
            times.append(since + timedelta(seconds=steps[0]))
        every = route.remind_seconds
        if every is not None:
            times.append((incident.reminded_at or since) + timedelta(seconds=every))
    if firing and stale_after is not None:
        times.append((incident.last_seen or incident.changed_at) + stale_after)
    if incident.silence_id is not None and incident.silenced_until is not None:
        times.append(incident.silenced_until + STALE_SILENCE + timedelta(seconds=1))
    return min(times, default=None)


# the version of `next_look`'s arithmetic: changing it re-times every open incident once
LOOKS_VERSION = 1


def looks_basis(rules: Rules, stale_after: timedelta | None) -> str:
    """What the recorded look times were computed from: each route's timing (by name, and
    which route stands in for a name the rules no longer have), BRIDGE_STALE_AFTER and
    `next_look` itself. A start under another basis (other timing, an upgrade, a database
    that kept no times) looks at every open incident once; one under the same basis trusts
    the times in the store, whatever else in the rules changed."""
    routes = {r.name: asdict(RouteTiming.of(r.config)) for r in rules.routes}
    stale = stale_after.total_seconds() if stale_after is not None else None
    text = json.dumps([LOOKS_VERSION, stale, rules.default.name, routes], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
