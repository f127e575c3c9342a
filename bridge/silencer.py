"""Carries out Silence and Unsilence presses against Alertmanager, from the outbox, and hands
the answer back to the inbox; and keeps silenced incidents in line with Alertmanager's view.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote

from bridge.alertmanager_api import (
    SUPPRESSED,
    AlertmanagerCluster,
    AlertmanagerError,
    Failure,
    Query,
    View,
    Why,
    groups_query,
)
from bridge.durations import parse_duration
from bridge.errors import StoreError
from bridge.inbox import Inbox
from bridge.model import Incident, IncidentState
from bridge.render import incident_title
from bridge.silences import (
    absence_evidence,
    check_back,
    made_for,
    silence_comment,
    silence_matchers,
)
from bridge.store import OutboxItem, Store
from bridge.store.base import OPEN_PAGE
from bridge.tasks import Pulse
from bridge.users import UserNames

log = logging.getLogger(__name__)

# incidents whose alerts the answer about suppressed alerts may lack are looked up by their
# groups' alerts, this many groups per question, so a pass asks in proportion to what it reads
GROUPS_PER_READ = 50
# ... and their label values this long at most once in the URL (percent-encoded: a Cyrillic
# letter takes 6 characters), well under the 8 KB request line a proxy in front of
# Alertmanager may allow (nginx's default)
GROUP_VALUES_PER_READ = 4000


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
        """Create the silence a press asked for. AlertmanagerError if it could not be made.
        After an attempt whose answer was lost (`in_doubt`), a silence it made is adopted."""
        assert item.actor is not None
        duration = parse_duration(json.loads(item.content)["duration"])
        name = await self.users.name(item.actor) or f"Pachca user {item.actor}"
        client = self._client(incident)
        matchers = silence_matchers(incident)
        now = self.clock()
        until = now + timedelta(seconds=duration)
        earlier = await self._made_earlier(client, matchers, incident) if item.in_doubt else None
        if earlier is not None:
            silence_id, until = str(earlier.get("id")), _ends_at(earlier, until)
        else:
            silence_id = await client.create_silence(
                matchers,
                starts_at=now,
                ends_at=until,
                created_by=name,
                comment=silence_comment(incident, incident_title(incident)),
            )
        await self.inbox.silence_created(incident.ref, item.actor, silence_id, until, name)

    async def _made_earlier(
        self, client: AlertmanagerCluster, matchers: dict[str, str], incident: Incident
    ) -> dict[str, Any] | None:
        """The silence an attempt whose answer was lost made for the incident, if any."""
        for silence in await client.silences():
            if made_for(silence, matchers, incident.ref):
                log.warning(
                    "silence of incident %s was made by an attempt whose answer was lost "
                    "(%s); adopting it",
                    incident.ref,
                    silence.get("id"),
                )
                return silence
        return None

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
        """One pass of the check-back; returns how many incidents changed.

        Its cost follows what Alertmanager suppresses and what shows a silence, not what is
        open: each Alertmanager is asked for its silenced and inhibited alerts only
        (`SUPPRESSED`), and the incidents read are those that hold one of them or show a
        silence (`Store.holding`, `Store.shown_silenced`): no other open incident can change
        by a look (see `silences.follow_alertmanager`). An incident whose alerts are not all
        in that answer is looked up with its own group's alerts (`group_query`); when more
        than one is, their groups are asked for together (`groups_query`). Open
        incidents Alertmanager does not suppress are renewed when they would go stale
        (`look_for`, from the scheduler). `progress` hears of each page of incidents."""
        now = self.clock()
        views = {source: await self._view(c) for source, c in self.alertmanagers.items()}
        suppressed = sorted({fp for view in views.values() if view for fp in view.alerts})
        refs = sorted(set(await store.shown_silenced()) | set(await store.holding(suppressed)))
        reads = _Reads(self, views)
        changed = 0
        for start in range(0, len(refs), OPEN_PAGE):
            page = await store.load_many(refs[start : start + OPEN_PAGE])
            followed = [s.incident for s in page if not s.incident.finished]
            await reads.prepare(followed)
            for incident in followed:
                if incident.source in self.alertmanagers:
                    changed += await self._check(incident, reads.view_for(incident), now)
            progress()
        self.forget(set(refs))
        return changed

    async def look_for(self, incidents: list[Incident]) -> dict[str, bool | None]:
        """The check-back of some incidents, outside the pass: the scheduler asks, a page at a
        time, before it closes those nothing has reported for BRIDGE_STALE_AFTER
        (Alertmanager sends nothing for an inhibited alert, nor again before its
        repeat_interval): one still in Alertmanager has its `last_seen` renewed here. Asked
        as a pass asks (suppressed alerts, then the groups of those not all among them,
        GROUPS_PER_READ a question): as many questions as the page needs, however many
        alerts Alertmanager holds. By ref: False: no Alertmanager to ask; None: it could not
        be asked (so nobody can say it ended); True: looked at."""
        now = self.clock()
        sources = {i.source for i in incidents} & set(self.alertmanagers)
        views = {source: await self._view(self.alertmanagers[source]) for source in sorted(sources)}
        reads = _Reads(self, views)
        await reads.prepare(incidents)
        looked: dict[str, bool | None] = {}
        for incident in incidents:
            view = reads.view_for(incident)
            if incident.source not in self.alertmanagers:
                looked[incident.ref] = False
            elif view is None:
                looked[incident.ref] = None
            else:
                await self._check(incident, view, now)
                looked[incident.ref] = True
        return looked

    async def _group_view(
        self,
        cluster: AlertmanagerCluster,
        groups: list[dict[str, str]],
        base: View,
        everything: Callable[[], Awaitable[View | None]],
    ) -> View | None:
        """The alerts of these groups (with the same label names; all their incidents need,
        maybe more), with `base`'s silences and settledness (the pass's view); every alert
        (`everything`) if Alertmanager refuses the matchers (an older one and a UTF-8 label
        name)."""
        try:
            return await self._ask(cluster, groups_query(groups), base)
        except AlertmanagerError as exc:
            if exc.retryable:
                log.warning("cannot ask Alertmanager about silences: %s", exc)
                return None
            log.info("Alertmanager refused a group's matchers, asking for every alert: %s", exc)
        return await everything()

    async def _ask(
        self, cluster: AlertmanagerCluster, query: Query, base: View | None = None
    ) -> View:
        if base is not None:
            return View(await cluster.alerts(query), base.silences, base.settled)
        return self._noted(
            cluster, await cluster.view(self.settle_seconds, self.clock(), True, query)
        )

    async def _view(
        self, cluster: AlertmanagerCluster, query: Query = SUPPRESSED, base: View | None = None
    ) -> View | None:
        try:
            return await self._ask(cluster, query, base)
        except AlertmanagerError as exc:
            log.warning("cannot ask Alertmanager about silences: %s", exc)
            return None

    def _noted(self, cluster: AlertmanagerCluster, view: View) -> View:
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
        changed, not every incident it reads. `view` holds every alert of the incident that
        Alertmanager holds; without one, only a silence long past its end is dropped."""
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


class _Reads:
    """Where one pass finds each incident's alerts: the answer about suppressed alerts when it
    holds all of the incident's (see `needs_own_read`), else its group's own alerts, asked for
    with other groups' of the same page (`groups_query`: a question per GROUPS_PER_READ
    groups with the same label names); an incident grouped by no label needs every alert,
    read once. The silences and settledness read with the suppressed alerts serve them all."""

    def __init__(self, silencer: Silencer, views: dict[str, View | None]) -> None:
        self.silencer = silencer
        self.views = views
        self.own: dict[str, View | None] = {}  # by incident ref: its group's alerts
        self.everything: dict[str, View | None] = {}  # by source: every alert, once asked

    async def prepare(self, incidents: list[Incident]) -> None:
        """Ask for the groups of those among `incidents` that need their own read."""
        wanted: dict[tuple[str, tuple[str, ...]], list[Incident]] = {}
        for incident in incidents:
            view = self.views.get(incident.source)
            if view is not None and needs_own_read(incident, view):
                names = tuple(sorted(incident.group_labels))
                wanted.setdefault((incident.source, names), []).append(incident)
        for (source, names), some in wanted.items():
            cluster, view = self.silencer.alertmanagers[source], self.views[source]
            assert view is not None  # only incidents of a source that answered are wanted
            everything = partial(self._everything, source, cluster, view)
            if not names:
                every = await everything()
                self.own.update((i.ref, every) for i in some)
                continue
            for batch in _batches(some):
                groups = [i.group_labels for i in batch]
                own = await self.silencer._group_view(cluster, groups, view, everything)
                self.own.update((i.ref, own) for i in batch)

    async def _everything(
        self, source: str, cluster: AlertmanagerCluster, view: View
    ) -> View | None:
        """Every alert the source's Alertmanager holds, asked for once in a pass."""
        if source not in self.everything:
            self.everything[source] = await self.silencer._view(cluster, (), view)
        return self.everything[source]

    def view_for(self, incident: Incident) -> View | None:
        """Where a `prepare`d incident's alerts are (None: its Alertmanager could not be
        asked)."""
        view = self.views.get(incident.source)
        if view is None or not needs_own_read(incident, view):
            return view
        return self.own.get(incident.ref)


def _batches(incidents: list[Incident]) -> list[list[Incident]]:
    """`incidents` cut into batches of at most GROUPS_PER_READ, their group label values
    GROUP_VALUES_PER_READ characters at most in the URL (one incident alone may exceed it)."""
    batches: list[list[Incident]] = []
    size = 0
    for incident in incidents:
        length = sum(len(quote(v, safe="")) + 3 for v in incident.group_labels.values())
        if (
            not batches
            or len(batches[-1]) >= GROUPS_PER_READ
            or size + length > GROUP_VALUES_PER_READ
        ):
            batches.append([])
            size = 0
        batches[-1].append(incident)
        size += length
    return batches


def needs_own_read(incident: Incident, view: View) -> bool:
    """Whether the answer about suppressed alerts may lack some of the incident's alerts that
    Alertmanager holds (its firing ones; all of a resolved one's, a re-fire is looked for):
    one not there may be active, or gone, and the look must tell which."""
    if incident.state is IncidentState.RESOLVED:
        watched = list(incident.alerts)
    else:
        watched = [a.fingerprint for a in incident.firing]
    return any(fp not in view.alerts for fp in watched)


def _ends_at(silence: dict[str, Any], otherwise: datetime) -> datetime:
    """When a listed silence ends (`otherwise` if Alertmanager wrote it in a form not read)."""
    try:
        return datetime.fromisoformat(str(silence.get("endsAt")).replace("Z", "+00:00"))
    except ValueError:
        return otherwise
