"""The bridge's plain data: what a source told us (Notification, Alert) and what we keep (Incident).

All frozen: the pure core in `incidents.py` returns new values instead of changing old ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(Frozen):
    """One alert as a source reported it. `ends_at` is None while firing."""

    fingerprint: str
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    starts_at: datetime
    ends_at: datetime | None = None
    # resolved by the bridge's inference, not by the source: left out of a resolved notification
    # (silenced or inhibited members are), or absent from Alertmanager's list. Provisional: a
    # firing copy with the same startsAt re-opens it, where a reported resolution is final.
    inferred: bool = False
    generator_url: str = ""
    # Grafana extras (empty for Alertmanager)
    value_string: str = ""
    dashboard_url: str = ""
    panel_url: str = ""
    silence_url: str = ""
    image_url: str = ""


class Notification(Frozen):
    """One webhook request, reduced to what decides and shows an incident.

    `external_url` is deliberately kept out of `digest()`: the two replicas of an HA pair send
    copies that differ only there.
    """

    source: str
    receiver: str
    group_key: str
    status: AlertStatus
    alerts: tuple[Alert, ...]
    group_labels: dict[str, str] = {}
    common_labels: dict[str, str] = {}
    common_annotations: dict[str, str] = {}
    external_url: str = ""
    truncated_alerts: int = 0
    title: str = ""
    # some status was derived from the time it arrived (an alert sent without one, its endsAt
    # deciding): the same body may read differently later, so it is never answered from memory
    read_at_arrival: bool = False

    @property
    def labels_for_routing(self) -> dict[str, str]:
        """Labels routes match on: common labels, else those of the first alert."""
        if self.common_labels:
            return self.common_labels
        return self.alerts[0].labels if self.alerts else dict(self.group_labels)


class IncidentState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Incident(Frozen):
    """One group delivered to one chat: its alerts and its lifecycle.

    `version` grows by one on every change that the message must show; the outbox compares it
    with the version last rendered to Pachca, so many changes coalesce into one edit.
    """

    ref: str
    key: str
    source: str
    route: str
    chat_id: int
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    common_labels: dict[str, str]
    common_annotations: dict[str, str]
    external_url: str
    alerts: dict[str, Alert]  # this episode's: what the message shows and counts
    truncated_alerts: int
    state: IncidentState
    opened_at: datetime
    changed_at: datetime  # bridge clock: when the last change was recorded
    resolved_at: datetime | None = None  # when the last alert ended (source clock)
    version: int = 1
    acked_by: int | None = None  # Pachca user id
    acked_at: datetime | None = None
    resolved_by: int | None = None  # set when closed by hand (Resolve button)
    last_digest: str = ""  # of the last notification applied (see incidents.notification_digest)
    silence_id: str | None = None  # the Alertmanager silence now covering it
    silenced_until: datetime | None = None
    silenced_by: str = ""  # the silence's createdBy (a display name)
    firing_since: datetime | None = None  # start of this firing episode (bridge clock)
    # start of this episode by the source's clock: the earliest startsAt that fired in it
    # (durations count from here, not from an earlier episode's alerts)
    episode_start: datetime | None = None
    # alerts of earlier episodes the source no longer listed when it re-opened: off the
    # message, but remembered, so a late copy of what they said is not taken for news
    earlier: dict[str, Alert] = {}
    # bridge clock: when a notification or the check-back last reported any of its alerts
    # (renewed now and then, not on every repeat: see incidents.touched)
    last_seen: datetime | None = None
    reminded_at: datetime | None = None
    escalated: int = 0  # escalation steps already taken in this episode
    # members that fired again while the incident was firing, not yet told in the thread: one
    # comment names them all once REFIRE_WINDOW has passed since the first (incidents.py)
    refired_pending: list[str] = []
    refired_since: datetime | None = None
    refired_told: list[str] = []  # the members the last such comment named
    # bridge-clock times each member fired again, within its route's flap_window
    refires: dict[str, list[datetime]] = {}
    flapping: list[str] = []  # members over flap_threshold: marked, and no comments for them

    @property
    def finished(self) -> bool:
        """Nothing left to follow: resolved, and no silence shown on it (a silence still active
        is shown until it ends, and a re-fire under it is looked for by the check-back)."""
        return finished(self.state, self.silence_id)

    def look_facts(self) -> LookFacts:
        return LookFacts.from_json(
            self.ref, self.version, [getattr(self, name) for name in LOOK_FIELDS]
        )

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.status is AlertStatus.FIRING]

    @property
    def resolved(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.status is AlertStatus.RESOLVED]


class Delivery(Frozen):
    """What Pachca knows of an incident: its message, thread and the version last shown."""

    message_id: int | None = None
    thread_id: int | None = None
    rendered_version: int = 0
    # unix time a create was sent whose outcome is not known (set just before posting, cleared
    # when the answer is known): the next attempt waits until that create could have landed,
    # then looks for it in the chat instead of posting a second message
    create_sent_at: float | None = None
    # digest of what that create posted (see attempts.content_digest): how it is recognised in
    # the chat when it carries no button naming the incident (posted already resolved)
    create_digest: str | None = None


class Click(Frozen):
    """A button press, from Pachca's webhook or its event history (same shape either way).

    `data` is the button's data as sent; it is only ever used as a reference to look up.
    """

    event_id: str  # trigger_id: the same click redelivered has the same id
    data: str
    user_id: int
    chat_id: int | None = None
    message_id: int | None = None


class Reaction(Frozen):
    """An emoji put on (or taken off) a message."""

    event_id: str
    message_id: int
    code: str
    user_id: int
    added: bool


class Command(Frozen):
    """A chat message that starts with `/` (`/alerts`, `/ack <ref>`)."""

    event_id: str
    chat_id: int
    user_id: int
    text: str


class LinkShared(Frozen):
    """Links posted in a chat that an unfurl bot may preview."""

    event_id: str
    message_id: int
    urls: tuple[str, ...]


PachcaEvent = Click | Reaction | Command | LinkShared


def incident_key(source: str, receiver: str, group_key: str, chat_id: int) -> str:
    """The identity of an incident: one group of one receiver in one chat."""
    return f"{group_prefix(source, receiver, group_key)}{chat_id}"


def group_prefix(source: str, receiver: str, group_key: str) -> str:
    """What the keys of one group's incidents (one per chat) start with."""
    return f"{source}\x1f{receiver}\x1f{group_key}\x1f"


def finished(state: IncidentState, silence_id: str | None) -> bool:
    return state is IncidentState.RESOLVED and silence_id is None


@dataclass(frozen=True, slots=True)
class LookFacts:
    """What the scheduler times an incident by (`looks.next_look`): some of its fields, none
    of its alerts. The stores read these alone (SQLite's json_extract, a script in Redis), so
    a start under new rules re-times every open incident without reading them whole."""

    ref: str
    version: int
    route: str
    state: IncidentState
    acked_by: int | None
    silence_id: str | None
    silenced_until: datetime | None
    firing_since: datetime | None
    opened_at: datetime
    escalated: int
    reminded_at: datetime | None
    last_seen: datetime | None
    changed_at: datetime
    refired_pending: bool
    refired_since: datetime | None

    @property
    def finished(self) -> bool:
        return finished(self.state, self.silence_id)

    @classmethod
    def from_json(cls, ref: str, version: int, values: Sequence[Any]) -> LookFacts:
        """From the values of LOOK_FIELDS, in their order, as the incident's JSON holds them
        (datetimes as ISO text; any list or object for `refired_pending`: whether it has
        something) or as the incident itself does."""
        raw = dict(zip(LOOK_FIELDS, values, strict=True))
        when = {name: _when(raw[name]) for name in _TIMES}
        return cls(
            ref=ref,
            version=version,
            route=str(raw["route"]),
            state=IncidentState(raw["state"]),
            acked_by=raw["acked_by"],
            silence_id=raw["silence_id"],
            escalated=int(raw["escalated"] or 0),
            refired_pending=bool(raw["refired_pending"]),
            **when,  # type: ignore[arg-type]
        )


# the incident's fields a LookFacts holds (after its ref and version), in its order
LOOK_FIELDS = tuple(f.name for f in fields(LookFacts))[2:]
_TIMES = (
    "silenced_until",
    "firing_since",
    "opened_at",
    "reminded_at",
    "last_seen",
    "changed_at",
    "refired_since",
)


def _when(value: datetime | str | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value
