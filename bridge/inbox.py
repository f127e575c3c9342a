"""The only writer of incidents: route a notification, apply the pure transition, and commit
the new incident together with its outbox items in one store write.

Answering "is this new?" is the hot path: a bounded TTL cache of the last digest per incident
key answers repeats and HA copies without touching the store. On a miss (restart, eviction,
other replica) the store is read and the transition itself finds that nothing changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cachetools import LRUCache

from bridge import oncall, silences
from bridge.actions import ClickResult, Reply, apply_click, parse_button_data
from bridge.alertmanager_api import Failure
from bridge.errors import ConflictError, DuplicateEvent, StoreError
from bridge.expiring import ExpiringDict
from bridge.incidents import (
    DEFAULT_PRIORITY_ORDER,
    Effect,
    apply_notification,
    close_unreported,
    create_priority,
    notification_digest,
    rank,
    reopenable,
    tell_refires,
    touched,
)
from bridge.metrics import Metrics
from bridge.model import (
    AlertStatus,
    Click,
    Incident,
    IncidentState,
    Notification,
    group_prefix,
    incident_key,
)
from bridge.render import RenderOptions
from bridge.rules import Route, Rules
from bridge.store import NewOutboxItem, Store, Stored
from bridge.store.base import PRESS
from bridge.texts import (
    render_comment,
    render_escalation,
    render_escalation_post,
    render_reminder,
    render_reply,
)
from bridge.timeline import Event, called, changes

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 5


def new_ref() -> str:
    """A short opaque incident reference for button data and page URLs: 16 hex chars.

    6 of the unix second (mod 2^24, about 194 days), then 40 random bits: references made
    together sort together, so the store's indexes keyed by reference grow at one end in a
    storm instead of taking a random page each per new incident (bench/storm.py --fingerprints
    hashed at 100,000 incidents: intake p99 about a quarter lower).
    """
    return f"{int(time.time()) & 0xFFFFFF:06x}{secrets.token_hex(5)}"


@dataclass(frozen=True)
class Accepted:
    """What happened to a notification in each chat it was routed to."""

    changed: list[str]  # incident refs that changed
    unchanged: int  # chats for which it changed nothing


@dataclass(frozen=True)
class KnownBody:
    """What a webhook body this process recorded said, to answer its byte-identical repeats
    without parsing them again (see `Inbox.repeat_of`)."""

    digest: str  # the notification's (see notification_digest)
    keys: tuple[str, ...]  # the incidents routing picked for it
    group_key: str
    status: str
    alert_statuses: tuple[str, ...]


# byte-identical bodies remembered per process (a few hundred bytes each)
KNOWN_BODIES = 4096


def body_id(source: str, body: bytes) -> bytes:
    """A webhook body's identity: equal ids mean byte-identical bodies from one source."""
    hashed = hashlib.blake2b(source.encode(), digest_size=16)
    hashed.update(b"\0")
    hashed.update(body)
    return hashed.digest()


def _log_accepted(source: str, group_key: str, status: str, alerts: int, what: list[str]) -> None:
    log.info(
        "accepted %s notification %s (%s, %d alerts): %s",
        source,
        group_key,
        status,
        alerts,
        "; ".join(what) if what else "no change (a repeat or a copy)",
    )


@dataclass(frozen=True)
class ClickOutcome:
    action: str  # for metrics: the button's action, or "malformed"
    reply: Reply | None  # None when the event had been processed before
    ref: str = ""

    @property
    def duplicate(self) -> bool:
        return self.reply is None


# Outbox items of presses that name no known incident are queued under this ref.
NO_INCIDENT = "-"


def post_item(chat_id: int, text: str) -> NewOutboxItem:
    """A message of its own to a chat (escalation elsewhere, digest, command replies)."""
    return NewOutboxItem(Effect.POST.value, json.dumps({"chat_id": chat_id, "text": text}))


EFFECT_VALUES = frozenset(e.value for e in Effect)


class Inbox:
    def __init__(
        self,
        store: Store,
        rules: Rules,
        metrics: Metrics,
        *,
        resolved_ttl: float,
        dedup_ttl: float,
        dedup_size: int,
        render_options: RenderOptions,
        stale_after: float = 13 * 3600,
        on_commit: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        priority_label: str = "severity",
        priority_order: tuple[str, ...] = DEFAULT_PRIORITY_ORDER,
    ) -> None:
        self.priority_label = priority_label  # which label orders creates, and how
        self.priority_order = priority_order
        self.store = store
        self.render_options = render_options

        self.rules = rules
        self.metrics = metrics
        self.resolved_ttl = timedelta(seconds=resolved_ttl)
        self.clock = clock
        self.on_commit = on_commit
        # notifications that changed nothing, per incident key, until its next write records
        # them as one "repeats" event (bounded: the key's next write or the cache's size)
        self._repeats: ExpiringDict[str, int] = ExpiringDict(maxsize=dedup_size, ttl=dedup_ttl)
        # an open incident's last_seen is renewed this often by repeats that change nothing,
        # so the cache lets a repeat through to the store at least that often (0: never closed
        # as unreported, nothing to renew)
        every = stale_after / 4 if stale_after > 0 else dedup_ttl
        self.touch_every = timedelta(seconds=every)
        self._seen: ExpiringDict[str, str] = ExpiringDict(
            maxsize=dedup_size, ttl=min(dedup_ttl, every), timer=self._timestamp
        )
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # key -> (digest, done) of the notification being recorded now
        self._in_flight: dict[str, tuple[str, asyncio.Future[None]]] = {}
        self._bodies: LRUCache[bytes, KnownBody] = LRUCache(maxsize=KNOWN_BODIES)

    def rank(self, note: Notification) -> int:
        """How urgent recording `note` is: its severity's rank (see incidents.rank)."""
        return rank(note.common_labels, self.priority_label, self.priority_order)

    def _timestamp(self) -> float:
        return self.clock().timestamp()  # the cache ages by the inbox's clock (tests move it)

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    def repeat_of(self, source: str, body_key: bytes) -> Accepted | None:
        """The answer to a byte-identical copy (`body_key`: see `body_id`) of a body this
        process recorded, if every incident it was routed to still holds what it said: the
        repeat `accept` would find (same metrics, same log line), without parsing the body
        again. None: parse the body and `accept` it. A body read by when it arrived (a status
        derived from `endsAt`) is never remembered, and `_seen` ages as it does for `accept`
        (dedup TTL, last_seen)."""
        known = self._bodies.get(body_key)
        if known is None or any(self._seen.get(key) != known.digest for key in known.keys):
            return None
        self._count(source, known.status, known.alert_statuses)
        for key in known.keys:
            self._repeated(key, source)
        _log_accepted(source, known.group_key, known.status, len(known.alert_statuses), [])
        return Accepted([], len(known.keys))

    def _count(self, source: str, status: str, alert_statuses: Iterable[str]) -> None:
        metrics = self.metrics
        metrics.child(metrics.notifications, source, status).inc()
        for alert_status, n in Counter(alert_statuses).items():
            metrics.child(metrics.alerts, source, alert_status).inc(n)

    def _repeated(self, key: str, source: str) -> None:
        """A notification changed nothing for incident `key` (counted for its next write)."""
        self._repeats[key] = self._repeats.get(key, 0) + 1
        self.metrics.child(self.metrics.deduplicated, source).inc()

    async def accept(self, note: Notification, body_key: bytes | None = None) -> Accepted:
        """Record `note` durably. Returns only once every change is committed; raises
        StoreError if it could not be (the caller answers 5xx so the sender retries).
        `body_key` (see `body_id`) lets its byte-identical repeats skip parsing."""
        self._count(note.source, note.status, [a.status for a in note.alerts])
        digest = notification_digest(note)
        changed: list[str] = []
        what: list[str] = []  # for the log line: each changed incident and what it will show
        unchanged = 0
        routed = {
            incident_key(note.source, note.receiver, note.group_key, r.config.chat_id): (
                r,
                r.config.chat_id,
            )
            for r in self.rules.route_for(note.labels_for_routing)
        }
        targets = routed
        group: dict[str, Stored] | None = None  # the group's incidents, once read
        if any(self._seen.get(key) != digest for key in routed):
            group = {
                s.incident.key: s
                for s in await self.store.load_group(
                    group_prefix(note.source, note.receiver, note.group_key)
                )
            }
            targets = self._where_it_lives(group, routed)
            for key in routed.keys() - targets.keys():
                self._seen[key] = digest  # routed elsewhere now: its repeats change nothing
        for key, (route, chat_id) in targets.items():
            if self._seen.get(key) == digest:
                self._repeated(key, note.source)
                unchanged += 1
                continue
            in_flight = self._in_flight.get(key)
            if in_flight is not None and in_flight[0] == digest:
                # the other copy of an HA pair is being recorded right now: once it is
                # committed, so is this one (and a failure to commit fails both)
                await asyncio.shield(in_flight[1])
                unchanged += 1
                self.metrics.child(self.metrics.deduplicated, note.source).inc()
                continue
            change = await self._apply_once(key, digest, note, route, chat_id, group)
            self._seen[key] = digest
            if change is None:
                unchanged += 1
                self.metrics.child(self.metrics.deduplicated, note.source).inc()
            else:
                changed.append(change[0])
                what.append(change[1])
        if changed:
            self.on_commit()
        if body_key is not None and not note.read_at_arrival:
            self._remember(body_key, note, digest, tuple(routed))
        _log_accepted(note.source, note.group_key, note.status, len(note.alerts), what)
        return Accepted(changed, unchanged)

    def _remember(
        self, body_key: bytes, note: Notification, digest: str, keys: tuple[str, ...]
    ) -> None:
        """Keep what the body said once all its incidents hold it (see `repeat_of`)."""
        if all(self._seen.get(key) == digest for key in keys):
            self._bodies[body_key] = KnownBody(
                digest, keys, note.group_key, note.status, tuple(a.status for a in note.alerts)
            )

    def _where_it_lives(
        self, group: dict[str, Stored], routed: dict[str, tuple[Route, int]]
    ) -> dict[str, tuple[Route, int]]:
        """An incident stays where it opened: while the group has a live incident (firing, or
        resolved recently enough to re-open), notifications go to it, whichever chat routing
        would pick now (a label that moves routing, an edited route). Routing decides the chat
        only when the group has none."""
        now = self.clock()
        live = {
            key: (self.rules.by_name(s.incident.route), s.incident.chat_id)
            for key, s in group.items()
            if reopenable(s.incident, now, self.resolved_ttl)
        }
        return live or routed

    async def _apply_once(
        self,
        key: str,
        digest: str,
        note: Notification,
        route: Route,
        chat_id: int,
        group: dict[str, Stored] | None = None,
    ) -> tuple[str, str] | None:
        """`_apply` under the incident's lock, announced so identical copies can wait for it."""
        async with self._lock(key):
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._in_flight[key] = (digest, done)
            try:
                change = await self._apply(key, note, route, chat_id, group, digest)
            except BaseException as exc:
                done.set_exception(exc)
                done.exception()  # seen here; copies waiting on it get it too
                raise
            else:
                done.set_result(None)
                return change
            finally:
                if self._in_flight.get(key, (None, None))[1] is done:
                    del self._in_flight[key]

    async def _apply(
        self,
        key: str,
        note: Notification,
        route: Route,
        chat_id: int,
        group: dict[str, Stored] | None = None,
        digest: str | None = None,
    ) -> tuple[str, str] | None:
        """`group`: the group's incidents as just read (one read fewer); a retry after a
        conflict reads the incident again. `digest`: the note's, computed once. Returns the
        changed incident's ref and a line saying what changed, or None."""
        for attempt in range(CONFLICT_RETRIES):
            if attempt == 0 and group is not None:
                stored = group.get(key)
            else:
                stored = await self.store.load_incident(key)
            current = stored.incident if stored else None
            now = self.clock()
            transition = apply_notification(
                current,
                note,
                route=route.name,
                chat_id=chat_id,
                now=now,
                resolved_ttl=self.resolved_ttl,
                new_ref=new_ref(),
                digest=digest,
                noise=route.noise,
            )
            if not transition.changed or transition.incident is None:
                if current is not None:
                    self._repeats[key] = self._repeats.get(key, 0) + 1
                fresh = touched(current, now, self.touch_every) if current else None
                if fresh is not None and current is not None:
                    try:  # still reported: renew last_seen (see incidents.close_unreported)
                        await self.store.save_incident(
                            fresh,
                            (current.ref, current.version),
                            [],
                            now.timestamp(),
                            timeline=self._history(current, fresh, now),
                        )
                    except ConflictError:
                        continue
                return None
            incident = transition.incident
            # the reply in the chat carries the mentions; the thread comment then goes quietly
            loud = Effect.REPLY_REOPENED not in transition.effects
            items = [
                self._notification_item(effect, incident, route, loud)
                for effect in transition.effects
            ]
            replaces = (current.ref, current.version) if current else None
            history = self._history(current, incident, now, transition.effects)
            try:
                await self.store.save_incident(
                    incident, replaces, items, now.timestamp(), timeline=history
                )
            except ConflictError:
                log.debug("incident %s changed under us; re-applying", key)
                continue
            if Effect.CREATE in transition.effects:
                self.metrics.incidents_opened.labels(route.name).inc()
            firing = sum(a.status is AlertStatus.FIRING for a in incident.alerts.values())
            effects = ", ".join(e.value for e in transition.effects) or "state only"
            return incident.ref, (
                f"incident {incident.ref} in chat {chat_id} {incident.state} "
                f"({firing} firing, {len(incident.alerts) - firing} resolved): {effects}"
            )
        raise StoreError(f"incident {key!r} kept changing; gave up after {CONFLICT_RETRIES} tries")

    async def click(self, click: Click) -> ClickOutcome:
        """Record a button press and what it causes, in one commit with its event id, so a
        redelivered or replayed event changes nothing. Raises StoreError if it could not be
        recorded (the caller answers 503 so Pachca retries)."""
        if await self.store.event_seen(click.event_id):
            return self.counted(ClickOutcome("duplicate", None))
        button = parse_button_data(click.data)
        if button is None:
            reply = render_reply(Reply.MALFORMED, None, self.rules.default.config.language)
            dm = NewOutboxItem(Effect.DM.value, reply, actor=click.user_id)
            return await self.record_reply(
                click.event_id, NO_INCIDENT, [dm], "malformed", Reply.MALFORMED
            )
        for _ in range(CONFLICT_RETRIES):
            incident = await self._live_incident(button.ref)
            route = self.rules.by_name(incident.route) if incident else self.rules.default
            now = self.clock()
            result = apply_click(
                incident,
                button,
                click.user_id,
                route.config,
                now,
                can_silence=incident is not None and self.render_options.can_silence(incident),
            )
            items = self._click_items(result, route, click.user_id)
            if not result.changed or result.incident is None or incident is None:
                return await self.record_reply(
                    click.event_id, button.ref, items, button.action, result.reply
                )
            try:
                await self.store.save_incident(
                    result.incident,
                    (incident.ref, incident.version),
                    items,
                    now.timestamp(),
                    event_id=click.event_id,
                    timeline=self._history(incident, result.incident, now, result.effects),
                )
            except ConflictError:
                continue
            except DuplicateEvent:
                return self.counted(ClickOutcome(button.action, None, button.ref))
            if result.reply is Reply.ACKED:
                self.metrics.time_to_ack.observe((now - incident.opened_at).total_seconds())
            self.on_commit()
            return self.counted(ClickOutcome(button.action, result.reply, button.ref))
        raise StoreError(f"incident {button.ref} kept changing; gave up")

    def _history(
        self,
        before: Incident | None,
        after: Incident,
        now: datetime,
        effects: Iterable[Effect] = (),
    ) -> list[Event]:
        """The timeline events of a write: the repeats counted since the incident's last
        write, then what changed."""
        events = []
        repeats = self._repeats.pop(after.key, 0)
        if repeats:
            events.append(Event(now.timestamp(), "repeats", {"count": repeats}))
        events += changes(before, after, now, effects)
        # whom the mentions that went out called, where they name a schedule
        route = self.rules.by_name(after.route).config
        schedules = self.render_options.schedules
        said_to = Effect.DM in effects  # a press answered: a person did it from the chat
        for index, event in enumerate(list(events)):
            if event.kind in ("silenced", "unsilenced"):
                via = "chat" if said_to else "alertmanager"
                events[index] = Event(event.at, event.kind, {**event.details, "via": via})
            if event.kind in ("reopened", "reminded"):
                events += called(route.mentions, schedules, now)
            elif event.kind == "escalated" and event.details["step"] <= len(route.escalation):
                events += called(
                    route.escalation[event.details["step"] - 1].mention, schedules, now
                )
        return events

    async def _live_incident(self, ref: str) -> Incident | None:
        """The incident a button names, if it is still the current one of its group
        (a button on a message long replaced by a newer incident is expired)."""
        stored = await self.store.load_by_ref(ref)
        if stored is None:
            return None
        current = await self.store.load_incident(stored.incident.key)
        if current is None or current.incident.ref != ref:
            return None
        return stored.incident

    def _notification_item(
        self, effect: Effect, incident: Incident, route: Route, loud: bool
    ) -> NewOutboxItem:
        """The outbox item for one effect of a notification: a create in its severity's lane,
        an edit (rendered when sent), or a comment with its text fixed now."""
        if effect is Effect.CREATE:
            lane = create_priority(incident, self.priority_label, self.priority_order)
            return NewOutboxItem(effect.value, priority=lane)
        if effect is Effect.EDIT:
            return NewOutboxItem(effect.value)
        mentions = loud or effect is not Effect.COMMENT_REFIRED
        text = render_comment(
            effect, incident, route.config, self.render_options, mentions=mentions
        )
        return NewOutboxItem(effect.value, text)

    def _click_items(
        self, result: ClickResult, route: Route, user_id: int, reason: Failure | None = None
    ) -> list[NewOutboxItem]:
        """Outbox items for the effects of a press (or of Alertmanager's answer to one): in
        the press lane when a person waits for them."""
        items = []
        for effect in result.effects:
            if effect is Effect.EDIT:
                items.append(NewOutboxItem(effect.value))
            elif effect is Effect.DM:
                text = render_reply(
                    result.reply,
                    result.incident,
                    route.config.language,
                    self.render_options,
                    reason,
                )
                items.append(NewOutboxItem(effect.value, text, actor=user_id))
            elif effect in (Effect.SILENCE, Effect.UNSILENCE):
                request = json.dumps({"duration": result.arg}) if result.arg else ""
                items.append(NewOutboxItem(effect.value, request, actor=user_id))
            elif result.incident is not None:
                text = render_comment(effect, result.incident, route.config, self.render_options)
                items.append(NewOutboxItem(effect.value, text, actor=user_id))
        return [replace(i, priority=PRESS) for i in items] if user_id > 0 else items

    # -- answers from Alertmanager, and what it reports -----------------------------------

    async def silence_created(
        self, ref: str, user_id: int, silence_id: str, until: datetime, by: str
    ) -> None:
        """Alertmanager made the silence a press asked for: show it, say so, tell the presser."""

        def decide(incident: Incident, route: Route, now: datetime) -> ClickResult:
            if incident.state is not IncidentState.FIRING:
                return ClickResult(incident, (Effect.DM,), Reply.SILENCED)
            after = silences.silenced(incident, silence_id, until, by, now)
            return ClickResult(
                after, (Effect.EDIT, Effect.COMMENT_SILENCED, Effect.DM), Reply.SILENCED
            )

        await self._change(ref, decide, user_id)

    async def silence_ended(self, ref: str, user_id: int) -> None:
        """The incident's silence was expired on a press (or was already gone)."""

        def decide(incident: Incident, route: Route, now: datetime) -> ClickResult:
            if incident.silence_id is None:
                return ClickResult(incident, (Effect.DM,), Reply.UNSILENCED)
            after = silences.unsilenced(incident, now)
            return ClickResult(
                after, (Effect.EDIT, Effect.COMMENT_UNSILENCED, Effect.DM), Reply.UNSILENCED
            )

        await self._change(ref, decide, user_id)

    async def silence_failed(self, ref: str, user_id: int, reason: Failure) -> None:
        """Alertmanager could not do what a press asked: the presser learns why."""

        def decide(incident: Incident, route: Route, now: datetime) -> ClickResult:
            return ClickResult(incident, (Effect.DM,), Reply.SILENCE_FAILED)

        await self._change(ref, decide, user_id, reason)

    async def follow_alertmanager(
        self,
        ref: str,
        alerts: dict[str, dict[str, Any]] | None,
        silences_by_id: dict[str, dict[str, Any]],
        gone: frozenset[str] = frozenset(),
    ) -> bool:
        """Align one incident with Alertmanager's current alerts and silences (`alerts` None:
        Alertmanager could not be asked, so only a silence long past its end is dropped)."""

        def decide(incident: Incident, route: Route, now: datetime) -> ClickResult:
            after, effects = silences.check_back(
                incident, alerts, silences_by_id, now, gone, self.touch_every
            )
            return ClickResult(after, effects, Reply.QUEUED)

        return await self._change(ref, decide, None)

    async def _change(
        self,
        ref: str,
        decide: Callable[[Incident, Route, datetime], ClickResult],
        user_id: int | None,
        reason: Failure | None = None,
    ) -> bool:
        """`_commit` for decisions that end in a reply to a person."""

        def with_items(
            incident: Incident, route: Route, now: datetime
        ) -> tuple[Incident, list[NewOutboxItem]]:
            result = decide(incident, route, now)
            items = self._click_items(result, route, user_id or 0, reason)
            return result.incident or incident, items

        return await self._commit(ref, with_items)

    async def close_if_unreported(self, ref: str, stale_after: timedelta) -> bool:
        """Close the incident if nothing has reported it for `stale_after`."""

        def decide(
            incident: Incident, route: Route, now: datetime
        ) -> tuple[Incident, list[NewOutboxItem]]:
            transition = close_unreported(incident, now, stale_after)
            after = transition.incident or incident
            return after, [
                NewOutboxItem(effect.value)
                if effect is Effect.EDIT
                else NewOutboxItem(
                    effect.value, render_comment(effect, after, route.config, self.render_options)
                )
                for effect in transition.effects
            ]

        return await self._commit(ref, decide)

    async def tell_refires(self, ref: str) -> bool:
        """The one thread comment naming the members that fired again, once it is due."""

        def decide(
            incident: Incident, route: Route, now: datetime
        ) -> tuple[Incident, list[NewOutboxItem]]:
            transition = tell_refires(incident, now)
            after = transition.incident or incident
            return after, [
                NewOutboxItem(
                    effect.value, render_comment(effect, after, route.config, self.render_options)
                )
                for effect in transition.effects
            ]

        return await self._commit(ref, decide)

    async def oncall(self, ref: str) -> bool:
        """Reminders and escalation steps due now for one incident."""

        def decide(
            incident: Incident, route: Route, now: datetime
        ) -> tuple[Incident, list[NewOutboxItem]]:
            due = oncall.due(incident, route.config, now)
            items = []
            for step in due.steps:
                items.append(
                    NewOutboxItem(
                        Effect.COMMENT_ESCALATED.value,
                        render_escalation(
                            step, due.incident, route.config, now, self.render_options.schedules
                        ),
                    )
                )
                if step.chat_id is not None:
                    post = render_escalation_post(
                        step, due.incident, route.config, now, self.render_options.schedules
                    )
                    items.append(post_item(step.chat_id, post))
            if Effect.COMMENT_REMINDER in due.effects:
                items.append(
                    NewOutboxItem(
                        Effect.COMMENT_REMINDER.value,
                        render_reminder(
                            due.incident, route.config, now, self.render_options.schedules
                        ),
                    )
                )
            return due.incident, items

        return await self._commit(ref, decide)

    async def _commit(
        self,
        ref: str,
        decide: Callable[[Incident, Route, datetime], tuple[Incident, list[NewOutboxItem]]],
    ) -> bool:
        """Apply `decide` to the live incident `ref` and commit the result with its items;
        False if the incident is gone or nothing is to be said."""
        for _ in range(CONFLICT_RETRIES):
            incident = await self._live_incident(ref)
            if incident is None:
                return False
            route = self.rules.by_name(incident.route)
            now = self.clock()
            after, items = decide(incident, route, now)
            if not items and after is incident:
                return False
            try:
                if after is not incident:
                    effects = [Effect(i.kind) for i in items if i.kind in EFFECT_VALUES]
                    await self.store.save_incident(
                        after,
                        (incident.ref, incident.version),
                        items,
                        now.timestamp(),
                        timeline=self._history(incident, after, now, effects),
                    )
                else:
                    await self.store.enqueue(ref, items, now.timestamp())
            except ConflictError:
                continue
            self.on_commit()
            return True
        raise StoreError(f"incident {ref} kept changing; gave up")

    async def record_reply(
        self, event_id: str, ref: str, items: list[NewOutboxItem], action: str, reply: Reply
    ) -> ClickOutcome:
        """Queue what answers an event (no incident change), once per event id: a person
        waits for it (the press lane)."""
        items = [replace(i, priority=PRESS) for i in items]
        try:
            await self.store.enqueue(ref, items, self.clock().timestamp(), event_id=event_id)
        except DuplicateEvent:
            return self.counted(ClickOutcome(action, None, ref))
        self.on_commit()
        return self.counted(ClickOutcome(action, reply, ref))

    def counted(self, outcome: ClickOutcome) -> ClickOutcome:
        result = "duplicate" if outcome.reply is None else outcome.reply.value
        self.metrics.callbacks.labels(outcome.action, result).inc()
        return outcome
