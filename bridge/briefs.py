"""What the summaries (the daily digest, /stats, a handoff's list) keep of an incident: a few
fields and its title, not its labels, annotations or alerts. After a storm they count a hundred
thousand incidents: as briefs that is tens of megabytes, as incidents it was gigabytes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bridge.model import IncidentState
from bridge.render import incident_title
from bridge.store.base import Stored


@dataclass(frozen=True, slots=True)
class Brief:
    ref: str
    route: str
    chat_id: int
    state: IncidentState
    opened_at: datetime
    changed_at: datetime
    acked_at: datetime | None
    firing_since: datetime | None
    title: str  # `incident_title`
    message_id: int | None  # its Pachca message, once posted

    @staticmethod
    def of(stored: Stored) -> Brief:
        i = stored.incident
        return Brief(
            i.ref,
            i.route,
            i.chat_id,
            i.state,
            i.opened_at,
            i.changed_at,
            i.acked_at,
            i.firing_since,
            incident_title(i),
            stored.delivery.message_id,
        )
