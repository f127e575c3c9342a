"""Pachca events other than button presses, each turned into what the inbox already does:
the ack emoji acks like the button, `/ack <ref>` too, `/alerts` answers with the chat's
active incidents, and shared links to incidents get previews."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

from bridge.actions import Reply
from bridge.inbox import ClickOutcome, Inbox, post_item
from bridge.incidents import Effect
from bridge.markdown import escape
from bridge.model import (
    Click,
    Command,
    Incident,
    IncidentState,
    LinkShared,
    PachcaEvent,
    Reaction,
)
from bridge.rules import Route
from bridge.schedules import LiveSchedules, Schedule, take_until
from bridge.store import READ_PAGE, NewOutboxItem, changed_pages, open_stored
from bridge.texts import render_active, render_preview
from bridge.timeline import Event
from bridge.unfurl import incident_for, linked_ref
from bridge.words import WORDS

# incidents a link to a source or to Alertmanager is searched among, the most recently changed
LINKS_SEARCH_AT_MOST = 2000

NicknameOf = Callable[[int], Awaitable[str | None]]


async def _no_nickname(user_id: int) -> str | None:
    return None


class ChatEvents:
    def __init__(
        self,
        inbox: Inbox,
        ack_reaction: str = "👀",
        public_url: str | None = None,
        schedules: LiveSchedules | None = None,
        nickname_of: NicknameOf = _no_nickname,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.inbox = inbox
        self.store = inbox.store
        self.ack_reaction = ack_reaction
        self.public_url = public_url
        self.schedules = schedules or LiveSchedules({})
        self.nickname_of = nickname_of
        self.clock = clock

    async def handle(self, event: PachcaEvent) -> ClickOutcome | None:
        """A Pachca event from the webhook or the event history; None when it asks nothing
        of the bridge (another emoji, a message that is not a command of ours)."""
        if isinstance(event, Click):
            return await self.inbox.click(event)
        if isinstance(event, Reaction):
            return await self.react(event)
        if isinstance(event, LinkShared):
            return await self.unfurl(event)
        return await self.command(event)

    async def react(self, reaction: Reaction) -> ClickOutcome | None:
        """The ack emoji put on an incident's message acks it, as the button would; taking it
        off does nothing (an ack is undone with Unack)."""
        if not reaction.added or reaction.code != self.ack_reaction:
            return None
        ref = await self.store.find_by_message(reaction.message_id)
        if ref is None:
            return None
        return await self.inbox.click(
            Click(event_id=reaction.event_id, data=f"ack:{ref}", user_id=reaction.user_id)
        )

    async def command(self, command: Command) -> ClickOutcome | None:
        """`/ack <ref>` acks as the button would; `/alerts` answers in the chat with its
        active incidents."""
        word, _, argument = command.text.partition(" ")
        if word == "/ack" and argument.strip():
            return await self.inbox.click(
                Click(
                    event_id=command.event_id,
                    data=f"ack:{argument.strip()}",
                    user_id=command.user_id,
                )
            )
        if word == "/oncall":
            return await self.oncall(command, argument.split())
        if word != "/alerts":
            return None
        route = self._route_of(command.chat_id)
        # a firing incident is open and its group's current one: read a page of the open ones
        # at a time, not every incident held
        active = [
            s
            async for page in open_stored(self.store, await self.store.open_refs())
            for s in page
            if s.incident.chat_id == command.chat_id and s.incident.state is IncidentState.FIRING
        ]
        text = render_active(active, route.config, self.inbox.render_options)
        return await self._answer(command, text, "alerts")

    def _route_of(self, chat_id: int) -> Route:
        """The first route posting to this chat (its language answers there), or the default."""
        rules = self.inbox.rules
        return next((r for r in rules.routes if r.config.chat_id == chat_id), rules.default)

    async def _answer(self, command: Command, text: str, action: str) -> ClickOutcome:
        """A command's answer, posted in its chat, once per event."""
        return await self.inbox.record_reply(
            command.event_id,
            f"chat-{command.chat_id}",
            [post_item(command.chat_id, text)],
            action,
            Reply.QUEUED,
        )

    async def oncall(self, command: Command, args: list[str]) -> ClickOutcome | None:
        """`/oncall`: who is on duty now and next for the chat's schedules; `/oncall take
        <schedule> [2h|until 18:00]` makes the sender its on-call for that time (a member of
        the schedule, or an allowed user of a route using it); `/oncall release <schedule>`
        ends that early. Answered in the chat."""
        rules = self.inbox.rules
        words = WORDS[self._route_of(command.chat_id).config.language]
        now = self.clock()
        if not args:
            names = rules.schedules_in_chat(command.chat_id) or list(self.schedules)
            text = render_oncall(names, self.schedules, now, words)
        elif args[0] in ("take", "release") and len(args) >= 2:
            text = await self._swap(command, args[0], args[1], " ".join(args[2:]), now, words)
        else:
            text = words["oncall_usage"]
        return await self._answer(command, text, "oncall")

    async def _swap(
        self,
        command: Command,
        verb: str,
        name: str,
        length: str,
        now: datetime,
        words: dict[str, str],
    ) -> str:
        if name not in self.schedules:
            return words["oncall_unknown"].format(name=escape(name))
        schedule = self.schedules[name]
        me = f"<@{command.user_id}>"
        if not await self._may_take(command.user_id, name):
            return words["oncall_not_member"].format(name=escape(name))
        if verb == "release":
            swap = self.schedules.swap(name)
            if swap is None or me not in swap.who:
                return words["oncall_nothing_to_release"].format(name=escape(name))
            await self.store.clear_swap(name)
        else:
            end = take_until(length, schedule, now)
            if end is None:
                return words["oncall_usage"]
            await self.store.set_swap(name, me, now.timestamp(), end.timestamp())
        self.schedules.update(await self.store.swaps(now.timestamp()))
        who = " ".join(self.schedules[name].on_duty(now)) or "—"
        await self._note_swap(name, verb, me, end if verb == "take" else None, now)
        until = self.schedules[name].next_handoff(now)
        return words["oncall_taken" if verb == "take" else "oncall_released"].format(
            name=escape(name), who=who, until=_when(end if verb == "take" else until, schedule)
        )

    async def _note_swap(
        self, name: str, verb: str, who: str, until: datetime | None, now: datetime
    ) -> None:
        """The swap, in the timeline of every open incident whose route calls the schedule."""
        routes = {r.name for r in self.inbox.rules.routes_calling(name)}
        details = {"schedule": name, "action": verb, "who": who}
        if until is not None:
            details["until"] = until.isoformat()
        event = Event(now.timestamp(), "swap", details)
        for incident in await self.store.open_incidents():
            if incident.route in routes:
                await self.store.enqueue(incident.ref, [], now.timestamp(), timeline=[event])

    async def _linked(self, urls: Sequence[str]) -> dict[str, Incident]:
        """The incidents these links point at: the bridge's own pages by their refs; sources'
        and Alertmanager's links searched for together among the incidents most recently
        changed, firing first, LINKS_SEARCH_AT_MOST of them (never every incident held)."""
        found: dict[str, Incident] = {}
        sought = []
        for url in urls:
            ref = linked_ref(url, self.public_url)
            if ref is None:
                sought.append(url)
            elif ref and (stored := await self.store.load_by_ref(ref)) is not None:
                found[url] = stored.incident
        searched, size = 0, min(READ_PAGE, LINKS_SEARCH_AT_MOST)
        for firing in (True, False):
            async for page in changed_pages(self.store, firing, size=size):
                read = [s.incident for _, s in page]
                for url in [u for u in sought if u not in found]:
                    if (incident := incident_for(url, read, self.public_url)) is not None:
                        found[url] = incident
                searched += len(page)
                if all(u in found for u in sought) or searched >= LINKS_SEARCH_AT_MOST:
                    return found
        return found

    async def _may_take(self, user_id: int, name: str) -> bool:
        schedule = self.schedules[name]
        if f"<@{user_id}>" in schedule.members:
            return True
        using = self.inbox.rules.routes_calling(name)
        if any(r.config.allowed_users and user_id in r.config.allowed_users for r in using):
            return True
        nickname = await self.nickname_of(user_id)
        return nickname is not None and f"@{nickname}" in schedule.members

    async def unfurl(self, shared: LinkShared) -> ClickOutcome | None:
        """Links to incidents (their sources, Alertmanager filters, the bridge's own) get a
        preview with the incident's current state."""
        previews = {}
        linked = await self._linked(shared.urls)
        for url in (u for u in shared.urls if u in linked):
            route = self.inbox.rules.by_name(linked[url].route).config
            previews[url] = render_preview(linked[url], route, self.inbox.render_options)
        if not previews:
            return None
        request = json.dumps({"message_id": shared.message_id, "previews": previews})
        return await self.inbox.record_reply(
            shared.event_id,
            f"links-{shared.message_id}",
            [NewOutboxItem(Effect.UNFURL.value, request)],
            "unfurl",
            Reply.QUEUED,
        )


def _when(moment: datetime | None, schedule: Schedule) -> str:
    return moment.astimezone(schedule.zone).strftime("%d.%m %H:%M") if moment else "—"


def render_oncall(
    names: list[str], schedules: Mapping[str, Schedule], now: datetime, words: dict[str, str]
) -> str:
    """Who is on duty now and next, one line per schedule."""
    if not names:
        return words["oncall_none"]
    lines = []
    for name in names:
        schedule = schedules[name]
        handoff = schedule.next_handoff(now)
        later = schedule.on_duty(handoff) if handoff else ()
        lines.append(
            words["oncall_line"].format(
                name=escape(name),
                who=" ".join(schedule.on_duty(now)) or "—",
                until=_when(handoff, schedule),
                next=" ".join(later) or "—",
            )
        )
    return "\n".join(lines)
