"""An incident's history, recorded as it happens: what changed between two versions of an
incident, as events. Pure, like `incidents.py`: the inbox (the single writer) stores them in the
same write as the change; the outbox adds its deliveries the same way (store.finish_item ...).

An event is `{at, kind, ...}`: `at` a Unix time, `kind` one of KINDS, the rest its details.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.incidents import Effect
from bridge.model import AlertStatus, Incident, IncidentState
from bridge.schedules import Schedule, is_oncall, resolve_mentions

MAX_EVENTS = 1000  # per incident: the oldest are dropped past it, and the drop is counted

KINDS = (
    "opened",  # the incident's first notification
    "fired",  # an alert joined, firing
    "fired_again",  # an alert fired again (a new startsAt)
    "resolved",  # an alert ended: `reported` by the source, or inferred by the bridge
    "acked",
    "unacked",
    "silenced",  # `by`, `until`, `silence_id`
    "unsilenced",  # lifted before its end (from the chat or Alertmanager's UI)
    "silence_ended",
    "reminded",
    "escalated",  # `step` (1-based)
    "resolved_by_hand",  # `by`
    "reopened",
    "closed_unreported",
    "called",  # `mention` resolved to `who` (oncall:<schedule>)
    "swap",  # someone took (or released) the on-call of a schedule the incident calls
    "repeats",  # `count` notifications that changed nothing since the last event
    "delivery",  # `op` (create/edit/comment_...), `result` (sent/retry/dead), `latency`, `error`
)


@dataclass(frozen=True)
class Event:
    at: float
    kind: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"at": self.at, "kind": self.kind, **self.details}, ensure_ascii=False)

    @staticmethod
    def from_json(text: str) -> Event:
        data = json.loads(text)
        at, kind = float(data.pop("at")), str(data.pop("kind"))
        return Event(at, kind, data)

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, **self.details}


def called(mentions: Iterable[str], schedules: Mapping[str, Schedule], at: datetime) -> list[Event]:
    """Whom each `oncall:<schedule>` among `mentions` called at `at`."""
    return [
        Event(
            at.timestamp(),
            "called",
            {"mention": m, "who": list(resolve_mentions([m], schedules, at))},
        )
        for m in dict.fromkeys(mentions)
        if is_oncall(m)
    ]


def changes(
    before: Incident | None, after: Incident, at: datetime, effects: Iterable[Effect] = ()
) -> list[Event]:
    """What happened between `before` (None: nothing yet) and `after`, as events at `at`."""
    when = at.timestamp()
    events: list[Event] = []

    def add(kind: str, **details: Any) -> None:
        events.append(Event(when, kind, {k: v for k, v in details.items() if v is not None}))

    if before is None:
        add("opened", route=after.route, chat_id=after.chat_id)
    old = before.alerts if before else {}
    for fp, alert in after.alerts.items():
        was = old.get(fp)
        name = alert.labels.get("instance") or alert.labels.get("alertname") or fp
        if alert.status is AlertStatus.FIRING:
            if was is None and (before is None or fp not in before.earlier):
                add("fired", alert=name, fingerprint=fp, starts_at=alert.starts_at.timestamp())
            elif was is None or was.status is AlertStatus.RESOLVED:
                add(
                    "fired_again", alert=name, fingerprint=fp, starts_at=alert.starts_at.timestamp()
                )
        elif was is not None and was.status is AlertStatus.FIRING:
            ended = alert.ends_at.timestamp() if alert.ends_at else None
            how = "by_hand" if after.resolved_by is not None and not alert.inferred else None
            source = "inferred" if alert.inferred else "reported"
            add("resolved", alert=name, fingerprint=fp, how=how or source, ends_at=ended)
    if before is not None:
        if before.state is IncidentState.RESOLVED and after.state is IncidentState.FIRING:
            add("reopened")
        if after.acked_by != before.acked_by:
            if after.acked_by is not None:
                add("acked", by=after.acked_by)
            else:
                add("unacked", by=before.acked_by)
        if after.silence_id != before.silence_id:
            if after.silence_id is not None:
                until = after.silenced_until.timestamp() if after.silenced_until else None
                add("silenced", by=after.silenced_by, until=until, silence_id=after.silence_id)
            elif Effect.COMMENT_SILENCE_ENDED in effects:
                add("silence_ended", silence_id=before.silence_id)
            else:
                add("unsilenced", silence_id=before.silence_id)
        if after.reminded_at != before.reminded_at and after.reminded_at is not None:
            add("reminded")
        if after.escalated > before.escalated:
            for step in range(before.escalated + 1, after.escalated + 1):
                add("escalated", step=step)
        if after.resolved_by is not None and before.resolved_by is None:
            add("resolved_by_hand", by=after.resolved_by)
    if Effect.COMMENT_UNREPORTED in effects:
        add("closed_unreported")
    return events


def incident_json(incident: Incident, events: list[Event], dropped: int) -> dict[str, Any]:
    """An incident with its timeline: the shape `incident --json` and
    `/incidents/<ref>.json` return (README)."""
    data: dict[str, Any] = json.loads(incident.model_dump_json())
    data["timeline"] = [e.as_dict() for e in events]
    data["timeline_dropped"] = dropped
    return data
