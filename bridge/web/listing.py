"""The incident list and its API, read a page at a time in the order of change (`Store.changed`):
firing incidents first, then resolved ones, the most recently changed first. A request reads at
most `SCAN_AT_MOST` incidents, however many the store holds and whatever the filter; where it
stopped is the next page's cursor."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from bridge.matchers import parse_matcher
from bridge.model import Incident, IncidentState
from bridge.store import READ_PAGE, Place, Store, changed_pages

# incidents read by one request at most (a filter that matches few shows what it found in
# them and a link on); each is parsed whole, so this bounds a request's time and memory
SCAN_AT_MOST = 2000


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: after `place` in the walk of firing (or resolved) incidents."""

    firing: bool
    place: Place | None = None

    def text(self) -> str:
        state = "f" if self.firing else "r"
        if self.place is None:
            return state
        return f"{state}{self.place.changed_at!r}~{self.place.ref}"

    @staticmethod
    def parse(text: str) -> Cursor:
        """Raises ValueError for text `Cursor.text` did not write."""
        if text[:1] not in ("f", "r"):
            raise ValueError("a cursor starts with f or r")
        firing, rest = text[0] == "f", text[1:]
        if not rest:
            return Cursor(firing)
        changed_at, sep, ref = rest.partition("~")
        seconds = float(changed_at)
        if not sep or not ref.isalnum() or not math.isfinite(seconds):
            raise ValueError("not a cursor")
        return Cursor(firing, Place(seconds, ref))


@dataclass(frozen=True)
class Filter:
    """What a list shows: by state (`open`: firing, `resolved`, or all), route, and an
    Alertmanager-style matcher on the group's labels (`team="db"`)."""

    state: str = ""
    route: str = ""
    query: str = ""

    def predicate(self) -> Callable[[Incident], bool]:
        """Raises MatcherSyntaxError for a bad matcher."""
        matcher = parse_matcher(self.query) if self.query else None

        def shown(incident: Incident) -> bool:
            if self.route and incident.route != self.route:
                return False
            labels = {**incident.group_labels, **incident.common_labels}
            return matcher is None or matcher.matches(labels)

        return shown

    def walks(self) -> list[bool]:
        """Which walks the list reads, in order: firing, then resolved."""
        return [f for f in (True, False) if self.state != ("resolved" if f else "open")]


async def list_page(
    store: Store,
    where: Filter,
    size: int,
    after: Cursor | None = None,
    scan_at_most: int | None = None,
) -> tuple[list[Incident], Cursor | None]:
    """Up to `size` incidents the list shows from `after` on, and the next page's cursor
    (None: nothing after them), reading `scan_at_most` (SCAN_AT_MOST) incidents at most.
    Raises MatcherSyntaxError for a bad matcher."""
    scan_at_most = scan_at_most or SCAN_AT_MOST
    shown = where.predicate()
    found: list[tuple[Incident, Cursor]] = []
    scanned = 0
    walks = where.walks()
    if after is not None and not after.firing:  # the firing walk is done
        walks = [f for f in walks if not f]
    for firing in walks:
        below = after.place if after is not None and after.firing == firing else None
        async for page in changed_pages(store, firing, below=below, size=READ_PAGE):
            for place, stored in page:
                scanned += 1
                incident = stored.incident
                # not one that moved to the other walk meanwhile (shown there)
                if (incident.state is IncidentState.FIRING) == firing and shown(incident):
                    found.append((incident, Cursor(firing, place)))
                if len(found) > size:
                    return [i for i, _ in found[:size]], found[size - 1][1]
                if scanned >= scan_at_most:
                    return [i for i, _ in found], Cursor(firing, place)
    return [i for i, _ in found], None
