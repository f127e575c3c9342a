"""The Store protocol: what the inbox (the only writer of incidents) and the outbox need.

Writes of an incident are compare-and-set on (ref, version), so two writers racing on one
incident (HA copies arriving together) cannot both win: the loser gets ConflictError, re-reads
and finds nothing left to do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from bridge.briefs import Brief
from bridge.model import Delivery, Incident, IncidentState, LookFacts
from bridge.timeline import Event

T = TypeVar("T")


@dataclass(frozen=True)
class Stored:
    incident: Incident
    delivery: Delivery


# Outbox lanes, served in this order (one item per incident at a time, in its own order): what
# a person waits for, then new incidents by severity (1 + the severity's rank, see
# incidents.create_priority), then everything else. A press makes its incident's whole queue
# urgent, so its answer is not stuck behind that incident's own edits.
PRESS = 0
OTHER = 100
MAX_SEVERITIES = 9  # creates take lanes 1..9


@dataclass(frozen=True)
class NewOutboxItem:
    """A Pachca operation to perform for an incident. `kind` is an `incidents.Effect` value;
    `content` is set for thread comments (their text is fixed when the event happens)."""

    kind: str
    content: str = ""
    actor: int | None = None  # the person a DM goes to / whose name a comment shows
    # its lane (see PRESS); unset: a create goes in the last create lane, the rest in OTHER
    priority: int = -1

    def __post_init__(self) -> None:
        if self.priority < 0:
            lane = MAX_SEVERITIES if self.kind == "create" else OTHER
            object.__setattr__(self, "priority", lane)


def coalesced(items: list[NewOutboxItem], edit_waiting: bool) -> list[NewOutboxItem]:
    """`items` without an edit when one already waits behind the incident's head item: that
    one renders the latest state when its turn comes. (An edit that *is* the head may be in
    flight with older content, so it does not count.) Keeps each incident's queue short."""
    if not edit_waiting:
        return items
    return [i for i in items if i.kind != "edit"]


@dataclass(frozen=True)
class OutboxItem:
    id: int
    ref: str
    kind: str
    content: str
    created_at: float
    attempts: int
    actor: int | None = None
    priority: int = OTHER
    # when the last attempt at it began, if its outcome was never recorded (see `begin_item`)
    begun_at: float | None = None

    @property
    def in_doubt(self) -> bool:
        """Might an earlier attempt have been performed by Pachca? One failed with an unknown
        outcome, or one began and was never settled (a crash, a lost claim, a finish that
        could not be written): a post is then looked for before it is posted again."""
        return self.attempts > 0 or self.begun_at is not None


class Backlog(NamedTuple):
    """What waits in the outbox, as the gauges show it."""

    depth: int  # items waiting to be delivered
    oldest_age: float  # seconds the oldest waiting item has waited
    dead_letters: int  # items Pachca refused for good, kept for replay


class Look(NamedTuple):
    """The scheduler looked at this version of an incident: look next at `at` (None: not until
    it changes)."""

    ref: str
    version: int
    at: float | None


class Place(NamedTuple):
    """Where an incident stands in the order of change (see `Store.changed`)."""

    changed_at: float  # Incident.changed_at, in seconds
    ref: str


class SwapRecord(NamedTuple):
    """A swap taken in the chat: `who` is on duty for `schedule` from `start` to `end`."""

    schedule: str
    who: str
    start: float
    end: float


@dataclass(frozen=True)
class DeadLetter:
    item: OutboxItem
    error: str
    failed_at: float


class Store(Protocol):
    # outbox claims lapse unless renewed (several replicas share the store): a delivery whose
    # claim cannot be kept must stop before another replica takes its item
    claims_lapse: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError if the store cannot be used right now."""

    async def checkpoint(self) -> None:
        """Upkeep kept off the write path, called four times a second (see
        `housekeeping.checkpoint_forever`): SQLite moves its write-ahead log into the database
        file here, so no write waits for that; nothing for the other stores."""

    async def load_incident(self, key: str) -> Stored | None:
        """The current incident with this key (see `model.incident_key`)."""

    async def load_by_ref(self, ref: str) -> Stored | None: ...

    async def load_group(self, prefix: str) -> list[Stored]:
        """The current incidents whose key starts with `prefix` (see `model.group_prefix`):
        one group's incidents, whichever chats they were opened in."""

    async def open_incidents(self) -> list[Incident]:
        """Every current incident not `finished`: firing, or resolved under a silence still
        shown (the check-back follows both)."""

    async def open_refs(self) -> list[str]:
        """The refs of `open_incidents`, in ref order: cheap to hold however many are open,
        for a pass over them a page at a time (see `open_pages`)."""

    async def open_refs_on(self, routes: Sequence[str]) -> list[str]:
        """The refs of open incidents of these routes (`Incident.route`), in ref order,
        without reading the others: a start under new timing for a few routes re-times their
        incidents alone. May name others (incidents saved before the store kept their route):
        spare candidates, never a missed one."""

    async def load_many(self, refs: list[str], alerts: bool = True) -> list[Stored]:
        """The incidents with these refs still held, in the order asked (one read).
        `alerts=False`: without their alerts, which SQLite leaves unparsed."""

    async def briefs(self, refs: list[str]) -> list[Brief]:
        """What the summaries keep of each of these incidents still held (`Brief`), in the
        order asked, picked out of each by the store (`BRIEF_PATHS`): the incidents are
        neither parsed nor held whole."""

    async def look_facts(self, refs: list[str]) -> list[LookFacts]:
        """What the scheduler times each of these incidents by (those still held), read
        without their alerts: a start under new rules re-times every open incident."""

    async def shown_silenced(self) -> list[str]:
        """Refs of open incidents that show a silence (see `shows_silence`), in ref order:
        the silence check-back follows each of them."""

    async def holding(self, fingerprints: Sequence[str]) -> list[str]:
        """Refs of open incidents holding any of these alerts (see `watched_alerts`), in ref
        order: which incidents the alerts Alertmanager reports belong to. May name one that
        no longer holds it (a spare candidate, never a missed one)."""

    async def setting(self, name: str) -> str | None:
        """A value kept across restarts and shared by replicas (see `put_setting`)."""

    async def put_setting(self, name: str, value: str) -> None: ...

    async def looks_due(self, before: float, limit: int) -> list[str]:
        """Refs of open incidents the scheduler should look at before `before`, earliest
        first: those saved since it last looked (a save of an open incident makes it due at
        the save's time) and those whose time, set by `look_again`, has come."""

    async def look_again(self, looks: Sequence[Look]) -> None:
        """Record the scheduler's looks, in one write (a first tick under new rules looks at
        every open incident: one write each was half its time). For each, nothing happens if
        a newer version was saved meanwhile (that save made it due) or the incident is
        finished."""

    async def all_incidents(self) -> list[Stored]:
        """Every incident the store still holds (resolved ones until pruned): for tools and
        tests; a request or a periodic pass reads what it shows instead (`changed`)."""

    async def changed(
        self, firing: bool, since: float, below: Place | None, limit: int
    ) -> list[Place]:
        """Up to `limit` incidents held that are firing (or not: resolved), changed at or
        after `since` (seconds), most recently changed first (ties: greater ref first), after
        `below` in that order: the pages, the digest and the link previews read what they show
        a page at a time, not every incident held."""

    async def find_by_message(self, message_id: int) -> str | None:
        """The ref of the incident whose Pachca message this is."""

    async def save_incident(
        self,
        incident: Incident,
        replaces: tuple[str, int] | None,
        items: list[NewOutboxItem],
        now: float,
        event_id: str | None = None,
        timeline: Sequence[Event] = (),
    ) -> None:
        """Commit `incident`, its outbox items and its timeline events atomically (the
        timeline keeps the last `timeline.MAX_EVENTS`, counting what it drops).

        `replaces` is the (ref, version) of the incident this write was computed from, or None
        if none existed. Raises ConflictError if the stored one is no longer exactly that.
        With `event_id`, the event is recorded as processed in the same commit, and
        DuplicateEvent is raised (nothing written) if it was recorded before.
        """

    async def enqueue(
        self,
        ref: str,
        items: list[NewOutboxItem],
        now: float,
        event_id: str | None = None,
        timeline: Sequence[Event] = (),
    ) -> None:
        """Add outbox items, and events to the incident's timeline, without changing the
        incident (e.g. a DM refusing a press, a swap of the schedule it calls)."""

    async def event_seen(self, event_id: str) -> bool:
        """Was this Pachca event processed already?"""

    async def record_delivery(self, ref: str, delivery: Delivery) -> None:
        """Remember what Pachca now shows for an incident (message id, thread, version).
        Raises ClaimLost if another replica holds the incident's outbox claim."""

    async def hold(self, refs: list[str]) -> list[str]:
        """Keep the outbox claims on these incidents while their deliveries run; returns the
        refs still held (stores without claims hold everything)."""

    async def due_items(self, now: float, limit: int) -> list[OutboxItem]:
        """Due outbox items, at most one per incident: the oldest, so each incident's
        operations run in the order they were recorded (create before edits). Lane by lane
        (see PRESS), oldest first within a lane."""

    async def begin_item(self, item_id: int, at: float) -> None:
        """A call of an attempt at the item goes out at `at`: written as each call that changes
        the chat is sent, so whoever takes the item up next without a finish or a retry having
        been written (after a crash, a claim lost, a finish that failed) knows a call may still
        land, waits until it could have, and looks before posting again. `retry_item` clears
        it. Raises ClaimLost if another replica holds the incident's claim."""

    async def finish_item(
        self,
        item_id: int,
        delivery: tuple[str, Delivery] | None = None,
        note: Event | None = None,
    ) -> None:
        """Done with an item; with `delivery` (ref, what Pachca shows now) and `note` (the
        delivery for the incident's timeline) recorded in the same write. Finishing, retrying
        and dead-lettering raise ClaimLost (and change nothing) if another replica holds the
        incident's claim."""

    async def retry_item(
        self, item_id: int, not_before: float, error: str, note: Event | None = None
    ) -> None:
        """The attempt failed and is settled: counted, and the item is due again at
        `not_before` (its `begun_at` cleared)."""

    async def dead_letter(
        self, item: OutboxItem, error: str, now: float, note: Event | None = None
    ) -> None:
        """Move an item that can never succeed out of the outbox, keeping Pachca's answer."""

    async def timeline(self, ref: str) -> tuple[list[Event], int]:
        """The incident's events, oldest first, and how many older ones were dropped."""

    async def dead_letters(self) -> list[DeadLetter]: ...

    async def replay_dead_letters(self, now: float) -> int:
        """Put every dead letter back in the outbox as a fresh item; returns how many."""

    async def prune(self, finished_before: float, events_before: float, dead_before: float) -> int:
        """Forget incidents resolved (last changed) before `finished_before` with nothing left
        to deliver, processed event ids older than `events_before`, and dead letters that
        failed before `dead_before`; returns how many incidents. Keeps the store bounded."""

    async def set_swap(self, schedule: str, who: str, start: float, end: float) -> None:
        """`who` is on duty for `schedule` from `start` to `end` (a swap taken in the chat),
        replacing any swap of that schedule; shared by every replica."""

    async def clear_swap(self, schedule: str) -> None:
        """End the schedule's swap early (released in the chat)."""

    async def swaps(self, now: float) -> list[SwapRecord]:
        """The swaps not yet over at `now`."""

    async def save_calendar(self, schedule: str, text: str) -> None:
        """Keep the last good copy of a calendar schedule's feed (used until a refresh works,
        and after a restart)."""

    async def calendar(self, schedule: str) -> str | None:
        """The last good copy of the schedule's feed, if any was ever read."""

    async def outbox_stats(self, now: float) -> Backlog:
        """The outbox's backlog now: cheap enough to compute at every metrics scrape."""


def watched_alerts(incident: Incident) -> list[str]:
    """The fingerprints a store indexes for `Store.holding`: an open incident's alerts."""
    return [] if incident.finished else sorted(incident.alerts)


def without_alerts(stored: Stored) -> Stored:
    return Stored(stored.incident.model_copy(update={"alerts": {}}), stored.delivery)


def shows_silence(incident: Incident) -> bool:
    """What `Store.shown_silenced` lists: open, with a silence on its message."""
    return not incident.finished and incident.silence_id is not None


# open incidents held in memory at once by a pass over all of them
OPEN_PAGE = 500


async def open_stored(
    store: Store, refs: list[str], size: int = OPEN_PAGE
) -> AsyncIterator[list[Stored]]:
    """The incidents of `refs` still open, as stored, `size` at a time: a pass over a hundred
    thousand holds one page (and their refs) in memory, not all of them."""
    for start in range(0, len(refs), size):
        page = await store.load_many(refs[start : start + size])
        yield [s for s in page if not s.incident.finished]


async def changed_places(
    store: Store,
    firing: bool,
    since: float = float("-inf"),
    below: Place | None = None,
    size: int = OPEN_PAGE,
) -> AsyncIterator[list[Place]]:
    """`Store.changed` from `below` on, `size` places at a time, to the end."""
    while True:
        places = await store.changed(firing, since, below, size)
        if not places:
            return
        yield places
        if len(places) < size:
            return
        below = places[-1]


async def changed_pages(
    store: Store,
    firing: bool,
    since: float = float("-inf"),
    below: Place | None = None,
    size: int = OPEN_PAGE,
    alerts: bool = True,
) -> AsyncIterator[list[tuple[Place, Stored]]]:
    """The incidents of `Store.changed` from `below` on, each with its place, as stored
    (`alerts`: see `load_many`), `size` places at a time (those no longer held left out). One
    that changed state meanwhile may be missing or come again in the other state's walk."""
    async for places in changed_places(store, firing, since, below, size):
        read = await store.load_many([p.ref for p in places], alerts)
        held = {s.incident.ref: s for s in read}
        yield [(place, held[place.ref]) for place in places if place.ref in held]


# incidents parsed at a time by the reads for people (the list, the stats, the digest, link
# previews): between two turns of the event loop
READ_PAGE = 100


async def summaries(store: Store, since: float, firing_since: float | None = None) -> list[Brief]:
    """A brief of each incident held that changed at or after `since` (firing ones:
    `firing_since`, by default the same), read a page at a time (`Store.briefs`): what the
    stats and the digest count, never every incident held, nor one of them whole."""
    found: dict[str, Brief] = {}
    walks = ((True, since if firing_since is None else firing_since), (False, since))
    for firing, start in walks:
        async for places in changed_places(store, firing, start, size=READ_PAGE):
            found.update((b.ref, b) for b in await store.briefs([p.ref for p in places]))
    return list(found.values())


async def firing_on_routes(store: Store, routes: Collection[str]) -> list[Brief]:
    """Briefs of the firing incidents of these routes (`Store.open_refs_on`), read a page at
    a time: what a handoff announces costs its routes' open incidents, not every one held."""
    refs = await store.open_refs_on(sorted(routes))
    found = []
    for start in range(0, len(refs), READ_PAGE):
        found += [
            b
            for b in await store.briefs(refs[start : start + READ_PAGE])
            if b.route in routes and b.state is IncidentState.FIRING
        ]
    return found


async def open_pages(
    store: Store, size: int | None = None, progress: Callable[[], None] = lambda: None
) -> AsyncIterator[list[Incident]]:
    """Every open incident, `size` (OPEN_PAGE) at a time (see `open_stored`). `progress`
    hears of each page done, so a long pass tells its supervisor it is alive (see
    `Pulse.excuse`)."""
    async for page in open_stored(store, await store.open_refs(), size or OPEN_PAGE):
        yield [s.incident for s in page]
        progress()
