"""The bridge's own clock-driven work (Pachca has no scheduler): reminders and escalation of
unacknowledged incidents, each chat's daily digest, and closing open incidents nothing has
reported for BRIDGE_STALE_AFTER. Every tick is safe to run on several
replicas at once: what it does is decided and recorded through the inbox's compare-and-set,
and each digest is claimed once per period in the store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from bridge.digest import LATE_BY_AT_MOST, DigestDue, digests_due
from bridge.errors import DuplicateEvent, StoreError
from bridge.inbox import Inbox, post_item
from bridge.incidents import Effect, close_unreported, tell_refires
from bridge.model import IncidentState
from bridge.oncall import needs_attention
from bridge.rules import Rules
from bridge.schedules import Schedule
from bridge.silences import drop_stale_silence
from bridge.store import NewOutboxItem, Store
from bridge.tasks import Pulse
from bridge.texts import render_digest, render_handoff

log = logging.getLogger(__name__)

# open incidents are looked at for staleness this often (it reads every open incident)
STALE_CHECK_EVERY = timedelta(minutes=5)


class Scheduler:
    def __init__(
        self,
        store: Store,
        inbox: Inbox,
        rules: Rules,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stale_after: float = 13 * 3600,
    ) -> None:
        self.store = store
        self.inbox = inbox
        self.rules = rules
        self.clock = clock
        self.stale_after = timedelta(seconds=stale_after) if stale_after else None
        self._stale_checked: datetime | None = None

    async def tick(self) -> int:
        """Do what is due now; returns how many things were recorded."""
        done = 0
        now = self.clock()
        oncall_used = any(r.config.remind_every or r.config.escalation for r in self.rules.routes)
        stale_due = self.stale_after is not None and (
            self._stale_checked is None or now - self._stale_checked >= STALE_CHECK_EVERY
        )
        # reading every open incident costs the store's time: only when something needs it
        # (re-fires this replica recorded are told within a tick of being due; those another
        # replica recorded, at the latest with the staleness pass)
        refires_waiting = self.inbox.refires_waiting
        if oncall_used or stale_due or refires_waiting:
            self.inbox.refires_waiting = False
            opened = await self.store.open_incidents()
        else:
            opened = []
        for incident in opened:
            if incident.refired_pending:
                self.inbox.refires_waiting = True  # until told
                if tell_refires(incident, now).changed:
                    done += await self._contained(
                        f"incident {incident.ref}", self.inbox.tell_refires(incident.ref)
                    )
            route = self.rules.by_name(incident.route).config
            uses_oncall = bool(route.remind_every or route.escalation)
            if oncall_used and uses_oncall and needs_attention(incident):
                done += await self._contained(
                    f"incident {incident.ref}", self.inbox.oncall(incident.ref)
                )
        for due in digests_due(self.rules, now):
            done += await self._contained(f"digest {due.key}", self._digest(due, now))
        schedules = self.inbox.render_options.schedules  # with the chat's swaps laid over
        for name in self.rules.schedules:
            schedule = schedules[name]
            if schedule.announce_chat is not None:
                done += await self._contained(
                    f"handoff of {name}", self._announce(name, schedule, now)
                )
        if stale_due and self.stale_after is not None:
            self._stale_checked = now
            for incident in opened:
                if close_unreported(incident, now, self.stale_after).changed:
                    done += await self._contained(
                        f"incident {incident.ref}",
                        self.inbox.close_if_unreported(incident.ref, self.stale_after),
                    )
                elif drop_stale_silence(incident, now)[1]:
                    # a silence shown long past its end that no check-back will drop (no
                    # Alertmanager configured any more): dropped, so the incident can finish
                    done += await self._contained(
                        f"incident {incident.ref}",
                        self.inbox.follow_alertmanager(incident.ref, None, {}),
                    )
        return done

    async def _announce(self, name: str, schedule: Schedule, now: datetime) -> bool:
        """At each handoff, who is now on duty and until when, with what still fires on the
        routes that call the schedule, in its chat; the incoming person (an `<@id>`) by DM.
        Claimed once per handoff in the store (replicas, restarts); one missed by more than an
        hour is skipped."""
        handoff = schedule.last_handoff(now)
        if handoff is None or now - handoff > LATE_BY_AT_MOST or schedule.announce_chat is None:
            return False
        key = f"handoff:{name}:{handoff.astimezone(UTC).isoformat()}"
        if await self.store.event_seen(key):
            return False
        routes = self.rules.routes_calling(name)
        refs = {r.name for r in routes}
        firing = [
            s
            for s in await self.store.all_incidents()
            if s.incident.route in refs and s.incident.state is IncidentState.FIRING
        ]
        language = routes[0].config.language if routes else self.rules.default.config.language
        who = schedule.on_duty(now)
        post, dm = render_handoff(name, schedule, who, now, firing, language)
        items = [post_item(schedule.announce_chat, post)]
        items += [
            NewOutboxItem(Effect.DM.value, dm, actor=int(person[2:-1]))
            for person in who
            if person.startswith("<@")  # a nickname cannot be written to without its id
        ]
        try:
            await self.store.enqueue(key, items, now.timestamp(), event_id=key)
        except DuplicateEvent:
            return False  # another replica announced it meanwhile
        self.inbox.on_commit()
        return True

    async def _digest(self, due: DigestDue, now: datetime) -> bool:
        """Claimed and enqueued in one write (the key is the write's event id): one replica
        wins the period, and a store error cannot claim it without sending it."""
        if await self.store.event_seen(due.key):
            return False  # sent already: not worth reading every incident again
        stored = await self.store.all_incidents()
        schedules = self.inbox.render_options.schedules
        duty = [
            (name, schedules[name].on_duty(due.start), schedules[name].on_duty(now))
            for name in self.rules.schedules_in_chat(due.chat_id)
            if name in schedules
        ]
        text = render_digest(due, stored, now, duty)
        try:
            await self.store.enqueue(
                due.key, [post_item(due.chat_id, text)], now.timestamp(), event_id=due.key
            )
        except DuplicateEvent:
            return False  # another replica won it meanwhile
        self.inbox.on_commit()
        return True

    @staticmethod
    async def _contained(what: str, work: Awaitable[bool]) -> int:
        """One incident's or digest's failure is logged and skipped, never the whole tick
        (StoreError still ends the tick: the store is down for everyone)."""
        try:
            return int(await work)
        except StoreError:
            raise
        except Exception:
            log.exception("scheduler: %s failed; the others go on", what)
            return 0

    async def run(self, interval: float, pulse: Pulse) -> None:
        while True:
            try:
                await self.tick()
            except StoreError as exc:
                log.warning("scheduler: store unavailable, will retry: %s", exc)
            pulse.beat(interval)
            await asyncio.sleep(interval)
