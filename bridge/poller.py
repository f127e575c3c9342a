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
from bridge.errors import PachcaError, PachcaRequestError, PayloadError, StoreError
from bridge.sources.pachca import event_from_payload
from bridge.tasks import Pulse

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

    async def run(self, pulse: Pulse) -> None:
        while True:
            try:
                handled = await self.poll_once()
            except (PachcaError, StoreError) as exc:
                log.warning("polling Pachca events failed, will retry: %s", exc)
                handled = 0
            idle = self.interval if handled < PAGE_SIZE else 0.0
            pulse.beat(idle)
            await asyncio.sleep(idle)

    async def poll_once(self) -> int:
        """Process and delete every event now in the history; returns how many were done.
        One event's failure never stops the others: it stays in the history for next time."""
        handled = 0
        cursor: str | None = None
        while True:
            page = await self.history.list_events(PAGE_SIZE, cursor)
            events = page["data"]
            for event in events:
                handled += await self._one(event)
            paginate = (page.get("meta") or {}).get("paginate") or {}
            cursor = paginate.get("next_page")
            if not events or not paginate.get("has_next") or not cursor:
                return handled

    async def _one(self, event: Any) -> bool:
        """Process and delete one event; False if it is left for the next poll."""
        event_id = event.get("id") if isinstance(event, dict) else None
        if not isinstance(event_id, str | int) or isinstance(event_id, bool) or event_id == "":
            log.warning("skipping a Pachca history entry without an id: %.200r", event)
            return False
        try:
            await self._process(event)
        except StoreError as exc:
            log.warning("Pachca event %s not recorded (will retry): %s", event_id, exc)
            return False
        except Exception:
            log.exception("Pachca event %s failed; left for the next poll", event_id)
            return False
        try:
            await self.history.delete_event(str(event_id))
        except PachcaRequestError as exc:
            if exc.status != 404:  # 404: already deleted (by another replica): done
                log.warning("could not delete Pachca event %s: %s", event_id, exc)
        except PachcaError as exc:
            # processed and recorded: seen again next time, recognised, deleted then
            log.warning("could not delete Pachca event %s (will retry): %s", event_id, exc)
        return True

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
