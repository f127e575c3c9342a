"""Polling mode, for clusters Pachca cannot reach: pull the bot's event history, process each
event through the same path as the webhook, then delete it.

Processing commits the event id with its effects, so a stop between processing and deleting
only means the event is seen again next time, recognised as processed, and deleted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from bridge.chat_events import ChatEvents
from bridge.errors import PachcaError, PayloadError, StoreError
from bridge.sources.pachca import event_from_payload

log = logging.getLogger(__name__)

PAGE_SIZE = 50


class EventHistory(Protocol):
    async def list_events(self, limit: int = 50, cursor: str | None = None) -> dict[str, Any]: ...

    async def delete_event(self, event_id: str) -> None: ...


class Poller:
    def __init__(self, history: EventHistory, events: ChatEvents, interval: float) -> None:
        self.history = history
        self.events = events
        self.interval = interval

    async def run(self) -> None:
        while True:
            try:
                handled = await self.poll_once()
            except (PachcaError, StoreError) as exc:
                log.warning("polling Pachca events failed, will retry: %s", exc)
                handled = 0
            if handled < PAGE_SIZE:
                await asyncio.sleep(self.interval)

    async def poll_once(self) -> int:
        """Process and delete every event now in the history; returns how many."""
        handled = 0
        cursor: str | None = None
        while True:
            page = await self.history.list_events(PAGE_SIZE, cursor)
            for event in page["data"]:
                await self._process(event)
                await self.history.delete_event(str(event["id"]))
                handled += 1
            paginate = (page.get("meta") or {}).get("paginate") or {}
            cursor = paginate.get("next_page")
            if not page["data"] or not paginate.get("has_next") or not cursor:
                return handled

    async def _process(self, event: dict[str, Any]) -> None:
        payload = event.get("payload")
        if not isinstance(payload, dict):
            log.error("Pachca event %s has no payload; deleting it", event.get("id"))
            return
        try:
            parsed = event_from_payload(payload)
        except PayloadError as exc:
            log.error("Pachca event %s is unusable (%s); deleting it", event.get("id"), exc)
            return
        if parsed is not None:
            # StoreError: stop here, the event stays for next time
            await self.events.handle(parsed)
