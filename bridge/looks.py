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
LOOKS_VERSION = 2


@dataclass(frozen=True)
class LooksBasis:
    """What the recorded look times were computed from: `common`, a digest of `next_look`'s
    version and BRIDGE_STALE_AFTER (a change re-times every open incident), and for each route
    name incidents may carry, a digest of the timing its incidents get (`RouteTiming`; a name
    the rules no longer have gets the last route's). A start re-times only the incidents of
    the routes whose digest changed: new chats, templates or matchers re-time none."""

    common: str
    routes: dict[str, str]

    def changed_routes(self, recorded: LooksBasis | None) -> list[str] | None:
        """The routes whose incidents need new times (sorted); None: every open incident."""
        if recorded is None or recorded.common != self.common:
            return None
        return sorted(n for n, digest in self.routes.items() if recorded.routes.get(n) != digest)

    def dumps(self) -> str:
        return json.dumps({"common": self.common, "routes": self.routes}, sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> LooksBasis | None:
        """A recorded basis; None for none, or one written in another form (re-time all)."""
        try:
            raw = json.loads(text or "")
            common, routes = raw["common"], raw["routes"]
        except (ValueError, TypeError, KeyError):
            return None
        if not isinstance(common, str) or not isinstance(routes, dict):
            return None
        return cls(common, {str(name): str(digest) for name, digest in routes.items()})


def looks_basis(
    rules: Rules, stale_after: timedelta | None, recorded: LooksBasis | None = None
) -> LooksBasis:
    """The basis of look times under these rules, for the routes they name and those the
    recorded basis named (their incidents may still be open, timed by the last route now)."""
    stale = stale_after.total_seconds() if stale_after is not None else None
    names = {r.name for r in rules.routes} | set(recorded.routes if recorded else ())
    routes = {name: _digest(asdict(RouteTiming.of(rules.by_name(name).config))) for name in names}
    return LooksBasis(_digest([LOOKS_VERSION, stale]), routes)


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
