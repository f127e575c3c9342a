"""Pure rules for reminders and escalation chains: what is due for an incident at `now`.

Due things are recorded in the incident (`reminded_at`, `escalated`) in the same commit as the
comments they cause, so a restart does not repeat them and several replicas checking at once
fire each step once (the loser of the compare-and-set finds it done).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bridge.incidents import Effect
from bridge.model import Incident, IncidentState, LookFacts
from bridge.rules import EscalationStep, RouteConfig


@dataclass(frozen=True)
class Due:
    incident: Incident
    effects: tuple[Effect, ...] = ()
    steps: list[EscalationStep] = field(default_factory=list)  # escalation steps taken now


def needs_attention(incident: Incident | LookFacts) -> bool:
    """Firing, nobody acknowledged it, and it is not silenced."""
    return (
        incident.state is IncidentState.FIRING
        and incident.acked_by is None
        and incident.silence_id is None
    )


def due(incident: Incident, route: RouteConfig, now: datetime) -> Due:
    if not needs_attention(incident):
        return Due(incident)
    since = incident.firing_since or incident.opened_at
    effects: list[Effect] = []
    update: dict[str, object] = {}
    steps = [
        step
        for step in route.escalation[incident.escalated :]
        if now - since >= timedelta(seconds=step.after_seconds)
    ]
    # steps fire in order; a later one is not taken before an earlier one is due
    taken: list[EscalationStep] = []
    for step in route.escalation[incident.escalated :]:
        if step not in steps:
            break
        taken.append(step)
    if taken:
        effects += [Effect.COMMENT_ESCALATED] * len(taken)
        effects += [Effect.POST for step in taken if step.chat_id is not None]
        update["escalated"] = incident.escalated + len(taken)
    every = route.remind_seconds
    last = incident.reminded_at or since
    if every is not None and now - last >= timedelta(seconds=every):
        effects.append(Effect.COMMENT_REMINDER)
        update["reminded_at"] = now
    if not update:
        return Due(incident)
    changed = incident.model_copy(update={**update, "version": incident.version + 1})
    return Due(changed, tuple(effects), taken)
