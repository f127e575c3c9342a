"""Pure rules for button presses: what Ack, Unack and Resolve do to an incident, and what the
person who pressed is told. No I/O, `now` passed in, like `incidents.py`.

Button data is `<action>:<incident-ref>[:<arg>]`; it is only ever a reference to look up,
never trusted to say anything about the incident itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bridge.incidents import Effect, end_alerts
from bridge.model import Incident, IncidentState
from bridge.rules import RouteConfig
from bridge.silences import silence_matchers


class Action(StrEnum):
    ACK = "ack"
    UNACK = "unack"
    RESOLVE = "resolve"
    SILENCE = "silence"
    UNSILENCE = "unsilence"
    TEST = "test"  # the buttons of `send-test`'s sample message: proves presses arrive


class Reply(StrEnum):
    """What the presser is told in a direct message: done, or why not."""

    ACKED = "acked"
    UNACKED = "unacked"
    RESOLVED = "resolved"
    QUEUED = "queued"  # Alertmanager is asked first; the DM follows its answer
    SILENCED = "silenced"
    UNSILENCED = "unsilenced"
    SILENCE_FAILED = "silence_failed"
    ALREADY_SILENCED = "already_silenced"
    NOT_SILENCED = "not_silenced"
    NO_SILENCE_MATCHERS = "no_silence_matchers"
    MALFORMED = "malformed"
    UNKNOWN_INCIDENT = "unknown_incident"
    NOT_ALLOWED = "not_allowed"
    ALREADY_ACKED = "already_acked"
    NOT_ACKED = "not_acked"
    ALREADY_RESOLVED = "already_resolved"
    NOT_AVAILABLE = "not_available"
    TEST_RECEIVED = "test_received"

    @property
    def refused(self) -> bool:
        return self not in (
            Reply.ACKED,
            Reply.UNACKED,
            Reply.RESOLVED,
            Reply.QUEUED,
            Reply.SILENCED,
            Reply.UNSILENCED,
            Reply.TEST_RECEIVED,
        )


@dataclass(frozen=True)
class ButtonData:
    action: Action
    ref: str
    arg: str = ""


_DATA = re.compile(r"(?P<action>[a-z]{1,16}):(?P<ref>[0-9a-f]{6,32})(?::(?P<arg>[0-9a-z]{1,16}))?")


def parse_button_data(data: str) -> ButtonData | None:
    """The parts of a button's data, or None if it is not data this bridge makes."""
    match = _DATA.fullmatch(data)
    if not match:
        return None
    try:
        action = Action(match["action"])
    except ValueError:
        return None
    return ButtonData(action, match["ref"], match["arg"] or "")


@dataclass(frozen=True)
class ClickResult:
    incident: Incident | None  # the incident after the press (unchanged when refused)
    effects: tuple[Effect, ...]  # ends with the DM to the presser, or an Alertmanager request
    reply: Reply
    arg: str = ""  # for an Alertmanager request: the silence duration

    @property
    def changed(self) -> bool:
        return any(e is Effect.EDIT for e in self.effects)


def refuse(incident: Incident | None, reply: Reply) -> ClickResult:
    return ClickResult(incident, (Effect.DM,), reply)


def apply_click(
    incident: Incident | None,
    button: ButtonData,
    user_id: int,
    route: RouteConfig,
    now: datetime,
    *,
    can_silence: bool = False,
) -> ClickResult:
    """Apply one press by `user_id` to the incident its data names (None if unknown).
    Silence and Unsilence change nothing yet: they queue a request to Alertmanager, whose
    answer is recorded later (`silences.py`)."""
    if button.action is Action.TEST:  # a sample message's button: nothing to change
        return ClickResult(None, (Effect.DM,), Reply.TEST_RECEIVED)
    if incident is None:
        return refuse(None, Reply.UNKNOWN_INCIDENT)
    if route.allowed_users is not None and user_id not in route.allowed_users:
        return refuse(incident, Reply.NOT_ALLOWED)
    if incident.state is IncidentState.RESOLVED:
        return refuse(incident, Reply.ALREADY_RESOLVED)
    if button.action is Action.SILENCE:
        if not can_silence:
            return refuse(incident, Reply.NOT_AVAILABLE)
        if button.arg not in route.silence_durations:
            return refuse(incident, Reply.MALFORMED)
        if incident.silence_id is not None:
            return refuse(incident, Reply.ALREADY_SILENCED)
        if not silence_matchers(incident):
            return refuse(incident, Reply.NO_SILENCE_MATCHERS)
        return ClickResult(incident, (Effect.SILENCE,), Reply.QUEUED, button.arg)
    if button.action is Action.UNSILENCE:
        if not can_silence:
            return refuse(incident, Reply.NOT_AVAILABLE)
        if incident.silence_id is None:
            return refuse(incident, Reply.NOT_SILENCED)
        return ClickResult(incident, (Effect.UNSILENCE,), Reply.QUEUED)
    if button.action is Action.ACK:
        if incident.acked_by is not None:
            return refuse(incident, Reply.ALREADY_ACKED)
        acked = _changed(incident, now, acked_by=user_id, acked_at=now)
        return ClickResult(acked, (Effect.EDIT, Effect.COMMENT_ACKED, Effect.DM), Reply.ACKED)
    if button.action is Action.UNACK:
        if incident.acked_by is None:
            return refuse(incident, Reply.NOT_ACKED)
        unacked = _changed(incident, now, acked_by=None, acked_at=None)
        return ClickResult(unacked, (Effect.EDIT, Effect.COMMENT_UNACKED, Effect.DM), Reply.UNACKED)
    firing = [a.fingerprint for a in incident.firing]
    closed = _changed(
        incident,
        now,
        alerts=end_alerts(incident.alerts, firing, now, inferred=False),
        state=IncidentState.RESOLVED,
        resolved_at=now,
        resolved_by=user_id,
    )
    return ClickResult(
        closed, (Effect.EDIT, Effect.COMMENT_RESOLVED_BY_HAND, Effect.DM), Reply.RESOLVED
    )


def _changed(incident: Incident, now: datetime, **update: object) -> Incident:
    return incident.model_copy(
        update={**update, "changed_at": now, "version": incident.version + 1}
    )
