"""Carries out Silence and Unsilence presses against Alertmanager, from the outbox, and hands
the answer back to the inbox; and keeps silenced incidents in line with Alertmanager's view.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.alertmanager_api import AlertmanagerCluster, AlertmanagerError, Failure, View, Why
from bridge.durations import parse_duration
from bridge.errors import StoreError
from bridge.inbox import Inbox
from bridge.model import Incident
from bridge.render import incident_title
from bridge.silences import absence_evidence, check_back, silence_matchers
from bridge.store import OutboxItem, Store, open_pages
from bridge.tasks import Pulse
from bridge.users import UserNames

log = logging.getLogger(__name__)


class Silencer:
    def __init__(
        self,
        alertmanagers: dict[str, AlertmanagerCluster],
        inbox: Inbox,
        users: UserNames,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        settle_seconds: float = 120.0,
    ) -> None:
        # by incident source: Alertmanager's own API, and Grafana's managed Alertmanager
        self.alertmanagers = alertmanagers
        self.inbox = inbox
        self.users = users
        self.clock = clock
        self.settle_seconds = settle_seconds
        # per incident: its firing alerts missing from Alertmanager at the last check
        self._missing: dict[str, frozenset[str]] = {}

    async def silence(self, item: OutboxItem, incident: Incident) -> None:
        """Create the silence a press asked for. AlertmanagerError if it could not be made."""
        assert item.actor is not None
        duration = parse_duration(json.loads(item.content)["duration"])
        name = await self.users.name(item.actor) or f"Pachca user {item.actor}"
        now = self.clock()
        until = now + timedelta(seconds=duration)
        silence_id = await self._client(incident).create_silence(
            silence_matchers(incident),
            starts_at=now,
            ends_at=until,
            created_by=name,
            comment=f"From Pachca chat {incident.chat_id}: incident {incident.ref} "
            f"«{incident_title(incident)}» (pachca-alert-bridge)",
        )
        await self.inbox.silence_created(incident.ref, item.actor, silence_id, until, name)

    async def unsilence(self, item: OutboxItem, incident: Incident) -> None:
        """Expire the incident's silence; one Alertmanager no longer knows is as good as expired."""
        assert item.actor is not None
        if incident.silence_id is not None:
            found = await self._client(incident).expire_silence(incident.silence_id)
            if not found:
                log.info(
                    "silence %s of incident %s was already gone", incident.silence_id, incident.ref
                )
        await self.inbox.silence_ended(incident.ref, item.actor)

    def _client(self, incident: Incident) -> AlertmanagerCluster:
        client = self.alertmanagers.get(incident.source)
        if client is None:
            raise AlertmanagerError(
                f"no silence API configured for {incident.source} alerts",
                retryable=False,
                why=Why.NOT_CONFIGURED,
            )
        return client

    async def failed(self, item: OutboxItem, failure: Failure) -> None:
        if item.actor is not None:
            await self.inbox.silence_failed(item.ref, item.actor, failure)

    async def check_once(self, store: Store, progress: Callable[[], None] = lambda: None) -> int:
        """One look at each Alertmanager that has open incidents, then through those
        incidents a page at a time (see `open_pages`: `progress` hears of each); returns how
        many changed."""
        views: dict[str, View | None] = {}  # by source; None: it could not be asked
        looked: set[str] = set()
        changed = 0
        now = self.clock()
        async for page in open_pages(store, progress=progress):
            for incident in page:
                looked.add(incident.ref)
                cluster = self.alertmanagers.get(incident.source)
                if cluster is None:
                    continue
                if incident.source not in views:
                    views[incident.source] = await self._view(cluster)
                changed += await self._check(incident, views[incident.source], now)
        self.forget(looked)
        return changed

    async def _view(self, cluster: AlertmanagerCluster) -> View | None:
        try:
            view = await cluster.view(self.settle_seconds, self.clock(), silences=True)
        except AlertmanagerError as exc:
            log.warning("cannot ask Alertmanager about silences: %s", exc)
            return None
        if not view.settled:
            log.info(
                "Alertmanager %s started less than %.0fs ago: alerts it lacks are not taken "
                "as resolved yet",
                cluster.base_url,
                self.settle_seconds,
            )
        return view

    async def _check(self, incident: Incident, view: View | None, now: datetime) -> bool:
        """Decided first on the copy just read (pure): only an incident the look changes goes
        through the inbox, which decides again under compare-and-set, so a pass writes what
        changed, not every open incident. Without a view, only a silence long past its end
        is dropped."""
        alerts, silences, gone = None, {}, frozenset[str]()
        if view is not None:
            alerts, silences = view.alerts, view.silences
            firing = frozenset(a.fingerprint for a in incident.firing)
            gone, self._missing[incident.ref] = absence_evidence(
                firing, alerts, view.settled, self._missing.get(incident.ref, frozenset())
            )
        touch_every = self.inbox.touch_every
        after, _ = check_back(incident, alerts, silences, now, gone, touch_every)
        if after is incident:
            return False
        return await self._follow(incident.ref, alerts, silences, gone)

    def forget(self, open_refs: set[str]) -> None:
        """Drop what was noted about incidents no longer open (bounded memory)."""
        for ref in set(self._missing) - open_refs:
            del self._missing[ref]

    async def _follow(
        self,
        ref: str,
        alerts: dict[str, dict[str, Any]] | None,
        silences: dict[str, dict[str, Any]],
        gone: frozenset[str] = frozenset(),
    ) -> bool:
        """One incident's update; its failure is logged and the others go on (StoreError
        ends the pass: the store is down for everyone)."""
        try:
            return await self.inbox.follow_alertmanager(ref, alerts, silences, gone)
        except StoreError:
            raise
        except Exception:
            log.exception("silence check of incident %s failed; the others go on", ref)
            return False

    async def watch(self, store: Store, interval: float, pulse: Pulse) -> None:
        while True:
            try:
                # a pass over many open incidents may outlast BRIDGE_STALL_AFTER: each page
                # done shows it is alive
                await self.check_once(store, progress=lambda: pulse.excuse(0))
            except StoreError as exc:
                log.warning("silence check failed, will retry: %s", exc)
            pulse.beat(interval)
            await asyncio.sleep(interval)
