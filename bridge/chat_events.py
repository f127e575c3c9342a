"""Pachca events other than button presses, each turned into what the inbox already does:
the ack emoji acks like the button, `/ack <ref>` too, `/alerts` answers with the chat's
active incidents, and shared links to incidents get previews."""

from __future__ import annotations

import json

from bridge.actions import Reply
from bridge.inbox import ClickOutcome, Inbox, post_item
from bridge.incidents import Effect
from bridge.model import Click, Command, IncidentState, LinkShared, PachcaEvent, Reaction
from bridge.store import NewOutboxItem
from bridge.texts import render_active, render_preview
from bridge.unfurl import incident_for


class ChatEvents:
    def __init__(
        self, inbox: Inbox, ack_reaction: str = "👀", public_url: str | None = None
    ) -> None:
        self.inbox = inbox
        self.store = inbox.store
        self.ack_reaction = ack_reaction
        self.public_url = public_url

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
        if word != "/alerts":
            return None
        rules = self.inbox.rules
        route = next(
            (r for r in rules.routes if r.config.chat_id == command.chat_id), rules.default
        )
        # a firing incident is always its group's current one (only resolved ones get replaced)
        active = [
            s
            for s in await self.store.all_incidents()
            if s.incident.chat_id == command.chat_id and s.incident.state is IncidentState.FIRING
        ]
        text = render_active(active, route.config, self.inbox.render_options)
        return await self.inbox.record_reply(
            command.event_id,
            f"chat-{command.chat_id}",
            [post_item(command.chat_id, text)],
            "alerts",
            Reply.QUEUED,
        )

    async def unfurl(self, shared: LinkShared) -> ClickOutcome | None:
        """Links to incidents (their sources, Alertmanager filters, the bridge's own) get a
        preview with the incident's current state."""
        incidents = [s.incident for s in await self.store.all_incidents()]
        previews = {}
        for url in shared.urls:
            incident = incident_for(url, incidents, self.public_url)
            if incident is not None:
                route = self.inbox.rules.by_name(incident.route).config
                previews[url] = render_preview(incident, route, self.inbox.render_options)
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
