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
from bridge.looks import LooksBasis, RouteTiming, looks_basis, next_look
from bridge.model import Incident, LookFacts
from bridge.oncall import due as oncall_due
from bridge.rules import Rules
from bridge.schedules import Schedule
from bridge.silences import drop_stale_silence
from bridge.store import Look, NewOutboxItem, Store, firing_on_routes, summaries
from bridge.tasks import Pulse, in_turns
from bridge.texts import render_digest, render_handoff

log = logging.getLogger(__name__)

# incidents due for a look are read this many at a time (Alertmanager is asked about those
# due to close together), LOOKED_AT_ONCE per store call and per turn of the event loop: read
# whole 500 at a time and looked at in one turn, a storm's new incidents had held the intake's
# requests for 10-47 ms at a time, and their garbage set off full collections of as long
# (bench/storm.py scale)
LOOKS_PER_READ = 500
LOOKED_AT_ONCE = 25
# when every open incident is timed again, this many per store call: the intake's reads and
# writes wait for the call in progress. bench/loops.py --quick at 10,000 open, p99 of
# recording a notification during the pass, SQLite / Redis: pages of 500: 96-112 / 276-296
# ms; 100: 73 / 211 ms; 25: 37 / 19 ms (the pass 2.1 / 4.0 s against 1.8 / 3.2 s with 100)
TIMED_AT_ONCE = 25
# the store setting naming the basis of the recorded look times (see `looks_basis`)
LOOKS_BASIS = "looks"
# an incident due to close as unreported whose Alertmanager cannot be asked is looked at
# again this much later
STALE_RETRY = timedelta(minutes=5)


class Scheduler:
    def __init__(
        self,
        store: Store,
        inbox: Inbox,
        rules: Rules,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stale_after: float = 13 * 3600,
        look_for: Callable[[list[Incident]], Awaitable[dict[str, bool | None]]] | None = None,
    ) -> None:
        self.store = store
        self.inbox = inbox
        self.rules = rules
        self.clock = clock
        self.stale_after = timedelta(seconds=stale_after) if stale_after else None
        # asks Alertmanager about a page of incidents before they are closed as unreported
        # (see `Silencer.look_for`)
        self.look_for = look_for
        self._started = False

    async def tick(self, progress: Callable[[], None] = lambda: None) -> int:
        """Do what is due now; returns how many things were recorded. `progress` hears of
        each page of incidents looked at (a long first tick is alive, not stalled)."""
        now = self.clock()
        done = await self._look_at_due(now, progress)
        for due in digests_due(self.rules, now):
            done += await self._contained(f"digest {due.key}", self._digest(due, now))
        schedules = self.inbox.render_options.schedules  # with the chat's swaps laid over
        for name in self.rules.schedules:
            schedule = schedules[name]
            if schedule.announce_chat is not None:
                done += await self._contained(
                    f"handoff of {name}", self._announce(name, schedule, now)
                )
        return done

    async def _look_at_due(self, now: datetime, progress: Callable[[], None]) -> int:
        """Look at the open incidents due for it (changed since the last look, or their time
        came), a page at a time. At the first tick after a start under other timing (see
        `LooksBasis`), the open incidents it changed for are timed again first: their times
        were set under the old one."""
        done = 0
        if not self._started:
            recorded = LooksBasis.loads(await self.store.setting(LOOKS_BASIS))
            basis = looks_basis(self.rules, self.stale_after, recorded)
            if basis != recorded:
                routes = basis.changed_routes(recorded)
                if routes is None:
                    await self._time_again(await self.store.open_refs(), progress)
                elif routes:
                    await self._time_again(await self.store.open_refs_on(routes), progress)
                await self.store.put_setting(LOOKS_BASIS, basis.dumps())
            self._started = True
        seen: set[str] = set()  # looked at in this tick (one may be due again at once)
        while True:
            limit = LOOKS_PER_READ + len(seen)
            refs = await self.store.looks_due(now.timestamp(), limit)
            fresh = [ref for ref in refs if ref not in seen]
            seen.update(fresh)
            done += await self._look_at_page(fresh, now)
            progress()
            if len(refs) < limit or not fresh:
                return done

    async def _time_again(self, refs: list[str], progress: Callable[[], None]) -> None:
        """When to look next at these open incidents, under these rules, from what the store
        reads of each without its alerts (`Store.look_facts`), a page per write; those due now
        are looked at whole by the pass over what is due that follows."""
        for start in range(0, len(refs), TIMED_AT_ONCE):
            looks = [
                self._next_look(facts)
                for facts in await self.store.look_facts(refs[start : start + TIMED_AT_ONCE])
                if not facts.finished
            ]
            await self.store.look_again(looks)
            progress()

    def _next_look(self, facts: LookFacts) -> Look:
        timing = RouteTiming.of(self.rules.by_name(facts.route).config)
        at = next_look(facts, timing, self.stale_after)
        return Look(facts.ref, facts.version, at.timestamp() if at is not None else None)

    async def _look_at_page(self, refs: list[str], now: datetime) -> int:
        """Each incident timed first from what the store reads of it without its alerts
        (`look_facts`, `next_look`): those nothing is due for yet (a storm's new incidents,
        due because they changed) get their next look, and only the others are read whole and
        looked at (`_look`), Alertmanager asked first about those due to close as unreported
        (together: `Silencer.look_for`). LOOKED_AT_ONCE per store call (a read, or a write of
        their next looks) and per turn of the event loop."""
        done = 0
        due: list[str] = []
        async for some_refs in in_turns(refs, LOOKED_AT_ONCE):
            later = []
            for facts in await self.store.look_facts(some_refs):
                if facts.finished:
                    continue
                look = self._next_look(facts)
                # a second's margin: nothing is due a second before its look (test_looks.py)
                if look.at is not None and look.at <= now.timestamp() + 1.0:
                    due.append(facts.ref)
                else:
                    later.append(look)
            await self.store.look_again(later)
        looks: list[Look] = []
        incidents = [
            stored.incident
            async for some_due in in_turns(due, LOOKED_AT_ONCE)
            for stored in await self.store.load_many(some_due)
            if not stored.incident.finished
        ]
        asked = await self._ask_before_closing(incidents, now)
        async for some in in_turns(incidents, LOOKED_AT_ONCE):
            for incident in some:
                done += await self._look(incident, now, looks, asked)
        await self.store.look_again(looks)
        return done

    async def _ask_before_closing(
        self, incidents: list[Incident], now: datetime
    ) -> dict[str, bool | None]:
        """What `look_for` says of those among `incidents` due to close as unreported; a
        failure to ask is logged and taken as "could not be asked" for all of them (the
        incidents stay open), never the tick's end (StoreError aside)."""
        if self.stale_after is None or self.look_for is None:
            return {}
        stale_after = self.stale_after
        closing = [
            i
            async for some in in_turns(incidents, LOOKED_AT_ONCE)
            for i in some
            if close_unreported(i, now, stale_after).changed
        ]
        if not closing:
            return {}
        try:
            return await self.look_for(closing)
        except StoreError:
            raise
        except Exception:
            log.exception("scheduler: asking Alertmanager before closing failed; kept open")
            return {i.ref: None for i in closing}

    async def _look(
        self, incident: Incident, now: datetime, looks: list[Look], asked: dict[str, bool | None]
    ) -> int:
        """Everything the tick does for one incident, decided first on the copy just read
        (pure): only what is due goes through the inbox, which decides again under
        compare-and-set (and its save makes the incident due for another look). When
        nothing was due, when to look next is added to `looks` for the store."""
        done = 0
        acted = False
        what = f"incident {incident.ref}"
        route = self.rules.by_name(incident.route).config
        if incident.refired_pending and tell_refires(incident, now).changed:
            acted = True
            done += await self._contained(what, self.inbox.tell_refires(incident.ref))
        if (route.remind_every or route.escalation) and oncall_due(incident, route, now).effects:
            acted = True
            done += await self._contained(what, self.inbox.oncall(incident.ref))
        if (
            self.stale_after is not None
            and close_unreported(incident, now, self.stale_after).changed
        ):
            acted = True
            done += await self._contained(
                what, self._close_unreported(incident, now, asked.get(incident.ref, False))
            )
        elif drop_stale_silence(incident, now)[1]:
            # a silence shown long past its end that no check-back will drop (no
            # Alertmanager configured any more): dropped, so the incident can finish
            acted = True
            done += await self._contained(
                what, self.inbox.follow_alertmanager(incident.ref, None, {})
            )
        if not acted:
            looks.append(self._next_look(incident.look_facts()))
        return done

    async def _close_unreported(
        self, incident: Incident, now: datetime, asked: bool | None
    ) -> bool:
        """Close an incident nothing reported for BRIDGE_STALE_AFTER, unless Alertmanager
        still holds it (`look_for` renewed it then, and the inbox, deciding again, finds it
        reported). While Alertmanager cannot be asked (`asked` None), nobody can say it
        ended: it stays open, looked at again after STALE_RETRY."""
        assert self.stale_after is not None
        if asked is None:
            at = (now + STALE_RETRY).timestamp()
            await self.store.look_again([Look(incident.ref, incident.version, at)])
            return False
        return await self.inbox.close_if_unreported(incident.ref, self.stale_after)

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
        firing = await firing_on_routes(self.store, {r.name for r in routes})
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
            return False  # sent already: not worth reading its incidents again
        # what it counts: changed in the period, and whatever still fires
        held = await summaries(self.store, due.start.timestamp(), float("-inf"))
        schedules = self.inbox.render_options.schedules
        duty = [
            (name, schedules[name].on_duty(due.start), schedules[name].on_duty(now))
            for name in self.rules.schedules_in_chat(due.chat_id)
            if name in schedules
        ]
        text = render_digest(due, held, now, duty)
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
                await self.tick(progress=lambda: pulse.excuse(0))
            except StoreError as exc:
                log.warning("scheduler: store unavailable, will retry: %s", exc)
            pulse.beat(interval)
            await asyncio.sleep(interval)
