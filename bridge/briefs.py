"""What the summaries (the daily digest, /stats, a handoff's list) keep of an incident: a few
fields and its title, not its labels, annotations or alerts. After a storm they count a hundred
thousand incidents: as briefs that is tens of megabytes, as incidents it was gigabytes. The
stores pick these fields out of each incident themselves (`Store.briefs`: SQLite's
json_extract, a script in Redis), so a summary neither parses nor allocates whole incidents:
reading them had kept the event loop and the garbage collector busy for as long."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bridge.model import IncidentState
from bridge.render import group_title, incident_title

if TYPE_CHECKING:
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

    @staticmethod
    def from_json(ref: str, message_id: int | None, values: Sequence[Any]) -> Brief:
        """From the values at BRIEF_PATHS, in their order, as the incident's JSON holds them
        (datetimes as ISO text)."""
        route, chat_id, state, opened, changed, acked, firing, name, rule, grouped = values
        return Brief(
            ref,
            str(route),
            int(chat_id),
            IncidentState(state),
            datetime.fromisoformat(opened),
            datetime.fromisoformat(changed),
            None if acked is None else datetime.fromisoformat(acked),
            None if firing is None else datetime.fromisoformat(firing),
            group_title(name, rule, grouped or {}),
            message_id,
        )


# where a brief's values lie in an incident's JSON, in `Brief.from_json`'s order: a path is
# its keys, one after another (`$.a.b` in SQLite, body.a.b in Redis's script)
BRIEF_PATHS: tuple[tuple[str, ...], ...] = (
    ("route",),
    ("chat_id",),
    ("state",),
    ("opened_at",),
    ("changed_at",),
    ("acked_at",),
    ("firing_since",),
    ("common_labels", "alertname"),
    ("common_labels", "rulename"),
    ("group_labels",),
)
