"""In-process store for tests and `--dry-run` trials: nothing survives a restart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bridge.briefs import Brief
from bridge.errors import ConflictError, DuplicateEvent
from bridge.model import Delivery, Incident, IncidentState, LookFacts
from bridge.store.base import (
    PRESS,
    Backlog,
    DeadLetter,
    Look,
    NewOutboxItem,
    OutboxItem,
    Place,
    Stored,
    SwapRecord,
    coalesced,
    shows_silence,
    watched_alerts,
    without_alerts,
)
from bridge.timeline import MAX_EVENTS, Event


class MemoryStore:
    claims_lapse = False

    def __init__(self) -> None:
        self._incidents: dict[str, Incident] = {}  # by ref
        self._deliveries: dict[str, Delivery] = {}
        self._current: dict[str, str] = {}  # key -> ref
        self._looks: dict[str, float] = {}  # ref -> when the scheduler looks next
        self._outbox: dict[int, tuple[OutboxItem, float]] = {}  # id -> (item, not_before)
        self._dead: list[DeadLetter] = []
        self._events: dict[str, float] = {}
        self._swaps: dict[str, SwapRecord] = {}
        self._calendars: dict[str, str] = {}
        self._settings: dict[str, str] = {}
        self._timeline: dict[str, list[Event]] = {}
        self._dropped: dict[str, int] = {}
        self._next_id = 1

    def _note(self, ref: str, events: Sequence[Event]) -> None:
        kept = self._timeline.setdefault(ref, [])
        kept.extend(events)
        over = len(kept) - MAX_EVENTS
        if over > 0:
            del kept[:over]
            self._dropped[ref] = self._dropped.get(ref, 0) + over

    async def timeline(self, ref: str) -> tuple[list[Event], int]:
        return list(self._timeline.get(ref, [])), self._dropped.get(ref, 0)

    async def open(self) -> None:
        return None

    async def set_swap(self, schedule: str, who: str, start: float, end: float) -> None:
        self._swaps[schedule] = SwapRecord(schedule, who, start, end)

    async def clear_swap(self, schedule: str) -> None:
        self._swaps.pop(schedule, None)

    async def swaps(self, now: float) -> list[SwapRecord]:
        return [s for s in self._swaps.values() if s.end > now]

    async def save_calendar(self, schedule: str, text: str) -> None:
        self._calendars[schedule] = text

    async def calendar(self, schedule: str) -> str | None:
        return self._calendars.get(schedule)

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def checkpoint(self) -> None:
        return None

    def _stored(self, ref: str | None) -> Stored | None:
        if ref is None or ref not in self._incidents:
            return None
        return Stored(self._incidents[ref], self._deliveries.get(ref, Delivery()))

    async def load_incident(self, key: str) -> Stored | None:
        return self._stored(self._current.get(key))

    async def load_by_ref(self, ref: str) -> Stored | None:
        return self._stored(ref)

    async def all_incidents(self) -> list[Stored]:
        return [s for ref in self._incidents if (s := self._stored(ref)) is not None]

    async def changed(
        self, firing: bool, since: float, below: Place | None, limit: int
    ) -> list[Place]:
        places = sorted(
            (
                Place(i.changed_at.timestamp(), i.ref)
                for i in self._incidents.values()
                if (i.state is IncidentState.FIRING) == firing
            ),
            reverse=True,
        )
        return [p for p in places if p.changed_at >= since and (below is None or p < below)][:limit]

    async def find_by_message(self, message_id: int) -> str | None:
        return next(
            (ref for ref, d in self._deliveries.items() if d.message_id == message_id), None
        )

    async def load_group(self, prefix: str) -> list[Stored]:
        return [
            Stored(self._incidents[ref], self._deliveries.get(ref, Delivery()))
            for key, ref in sorted(self._current.items())
            if key.startswith(prefix)
        ]

    async def open_incidents(self) -> list[Incident]:
        return self._current_open()

    async def open_refs(self) -> list[str]:
        return sorted(i.ref for i in await self.open_incidents())

    async def open_refs_on(self, routes: Sequence[str]) -> list[str]:
        return sorted(i.ref for i in await self.open_incidents() if i.route in routes)

    async def load_many(self, refs: list[str], alerts: bool = True) -> list[Stored]:
        found = [s for s in map(self._stored, refs) if s is not None]
        return found if alerts else list(map(without_alerts, found))

    async def look_facts(self, refs: list[str]) -> list[LookFacts]:
        return [s.incident.look_facts() for s in await self.load_many(refs)]

    async def briefs(self, refs: list[str]) -> list[Brief]:
        return [Brief.of(s) for s in await self.load_many(refs)]

    def _current_open(self) -> list[Incident]:
        current = (self._incidents[ref] for ref in self._current.values())
        return [i for i in current if not i.finished]

    async def shown_silenced(self) -> list[str]:
        return sorted(i.ref for i in self._current_open() if shows_silence(i))

    async def holding(self, fingerprints: Sequence[str]) -> list[str]:
        wanted = set(fingerprints)
        return sorted(i.ref for i in self._current_open() if wanted & set(watched_alerts(i)))

    async def setting(self, name: str) -> str | None:
        return self._settings.get(name)

    async def put_setting(self, name: str, value: str) -> None:
        self._settings[name] = value

    async def looks_due(self, before: float, limit: int) -> list[str]:
        due = sorted((at, ref) for ref, at in self._looks.items() if at < before)
        return [ref for _, ref in due[:limit]]

    async def look_again(self, looks: Sequence[Look]) -> None:
        for ref, version, at in looks:
            incident = self._incidents.get(ref)
            replaced = incident is not None and self._current.get(incident.key) != ref
            if incident is None or incident.version != version or incident.finished or replaced:
                continue
            if at is None:
                self._looks.pop(ref, None)
            else:
                self._looks[ref] = at

    async def save_incident(
        self,
        incident: Incident,
        replaces: tuple[str, int] | None,
        items: list[NewOutboxItem],
        now: float,
        event_id: str | None = None,
        timeline: Sequence[Event] = (),
    ) -> None:
        ref = self._current.get(incident.key)
        found = (ref, self._incidents[ref].version) if ref is not None else None
        if found != replaces:
            raise ConflictError(f"incident {incident.key!r} changed: {found} != {replaces}")
        self._check_event(event_id, now)
        if ref is not None:
            self._looks.pop(ref, None)
        if not incident.finished:
            self._looks[incident.ref] = now
        self._incidents[incident.ref] = incident
        self._current[incident.key] = incident.ref
        self._add_items(incident.ref, items, now)
        self._note(incident.ref, timeline)

    async def enqueue(
        self,
        ref: str,
        items: list[NewOutboxItem],
        now: float,
        event_id: str | None = None,
        timeline: Sequence[Event] = (),
    ) -> None:
        self._check_event(event_id, now)
        self._add_items(ref, items, now)
        self._note(ref, timeline)

    async def event_seen(self, event_id: str) -> bool:
        return event_id in self._events

    def _check_event(self, event_id: str | None, now: float) -> None:
        if event_id is None:
            return
        if event_id in self._events:
            raise DuplicateEvent(event_id)
        self._events[event_id] = now

    def _add_items(self, ref: str, items: list[NewOutboxItem], now: float) -> None:
        queued = sorted(
            (item for item, _ in self._outbox.values() if item.ref == ref), key=lambda i: i.id
        )
        waiting = any(item.kind == "edit" for item in queued[1:])
        if any(new.priority == PRESS for new in items):  # someone waits: the queue goes first
            for item in queued:
                self._outbox[item.id] = (replace(item, priority=PRESS), self._outbox[item.id][1])
        for new in coalesced(items, waiting):
            item = OutboxItem(
                self._next_id, ref, new.kind, new.content, now, 0, new.actor, new.priority
            )
            self._outbox[item.id] = (item, now)
            self._next_id += 1

    async def record_delivery(self, ref: str, delivery: Delivery) -> None:
        self._deliveries[ref] = delivery

    async def hold(self, refs: list[str]) -> list[str]:
        return refs  # one process: nobody else takes an item

    async def due_items(self, now: float, limit: int) -> list[OutboxItem]:
        heads: dict[str, tuple[OutboxItem, float]] = {}
        for item, not_before in sorted(self._outbox.values(), key=lambda p: p[0].id):
            heads.setdefault(item.ref, (item, not_before))
        due = [item for item, not_before in heads.values() if not_before <= now]
        return sorted(due, key=lambda i: (i.priority, i.id))[:limit]

    async def begin_item(self, item_id: int, at: float) -> None:
        if item_id in self._outbox:
            item, not_before = self._outbox[item_id]
            self._outbox[item_id] = (replace(item, begun_at=at), not_before)

    async def finish_item(
        self,
        item_id: int,
        delivery: tuple[str, Delivery] | None = None,
        note: Event | None = None,
    ) -> None:
        if delivery is not None:
            self._deliveries[delivery[0]] = delivery[1]
        item = self._outbox.pop(item_id, None)
        if item is not None and note is not None:
            self._note(item[0].ref, [note])

    async def retry_item(
        self, item_id: int, not_before: float, error: str, note: Event | None = None
    ) -> None:
        if item_id in self._outbox:
            item, _ = self._outbox[item_id]
            settled = replace(item, attempts=item.attempts + 1, begun_at=None)
            self._outbox[item_id] = (settled, not_before)
            if note is not None:
                self._note(item.ref, [note])

    async def dead_letter(
        self, item: OutboxItem, error: str, now: float, note: Event | None = None
    ) -> None:
        self._outbox.pop(item.id, None)
        self._dead.append(DeadLetter(item, error, now))
        if note is not None:
            self._note(item.ref, [note])

    async def dead_letters(self) -> list[DeadLetter]:
        return list(self._dead)

    async def replay_dead_letters(self, now: float) -> int:
        dead, self._dead = self._dead, []
        for letter in dead:
            item = letter.item
            self._add_items(item.ref, [NewOutboxItem(item.kind, item.content, item.actor)], now)
        return len(dead)

    async def prune(self, finished_before: float, events_before: float, dead_before: float) -> int:
        self._events = {e: at for e, at in self._events.items() if at >= events_before}
        self._dead = [d for d in self._dead if d.failed_at >= dead_before]
        busy = {item.ref for item, _ in self._outbox.values()}
        gone = [
            ref
            for ref, incident in self._incidents.items()
            if incident.finished
            and incident.changed_at.timestamp() < finished_before
            and ref not in busy
        ]
        for ref in gone:
            incident = self._incidents.pop(ref)
            self._deliveries.pop(ref, None)
            self._timeline.pop(ref, None)
            self._dropped.pop(ref, None)
            if self._current.get(incident.key) == ref:
                del self._current[incident.key]
        return len(gone)

    async def outbox_stats(self, now: float) -> Backlog:
        if not self._outbox:
            return Backlog(0, 0.0, len(self._dead))
        oldest = min(item.created_at for item, _ in self._outbox.values())
        return Backlog(len(self._outbox), max(0.0, now - oldest), len(self._dead))
