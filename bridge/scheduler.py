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

from bridge.digest import DigestDue, digests_due
from bridge.errors import DuplicateEvent, StoreError
from bridge.inbox import Inbox, post_item
from bridge.incidents import close_unreported, tell_refires
from bridge.oncall import needs_attention
from bridge.rules import Rules
from bridge.silences import drop_stale_silence
from bridge.store import Store
from bridge.tasks import Pulse
from bridge.texts import render_digest

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

    async def _digest(self, due: DigestDue, now: datetime) -> bool:
        """Claimed and enqueued in one write (the key is the write's event id): one replica
        wins the period, and a store error cannot claim it without sending it."""
        if await self.store.event_seen(due.key):
            return False  # sent already: not worth reading every incident again
        stored = await self.store.all_incidents()
        text = render_digest(due, stored, now)
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
