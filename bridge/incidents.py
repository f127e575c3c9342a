"""The pure heart: how a notification changes an incident, and what must be said about it.

No I/O and no clock reads: `now` and the new incident's `ref` are passed in, so every rule of
grouping, dedup and resolution is a plain function call in the tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from bridge.model import (
    Alert,
    AlertStatus,
    Incident,
    IncidentState,
    Notification,
    incident_key,
)

UNSILENCED: dict[str, object] = {"silence_id": None, "silenced_until": None, "silenced_by": ""}


class Effect(StrEnum):
    """What the chat must learn from a transition; each becomes one outbox item."""

    CREATE = "create"  # post the incident's message
    EDIT = "edit"  # bring the message up to date with the incident
    COMMENT_REFIRED = "comment_refired"  # thread comment: the incident fires again (mentions)
    COMMENT_MEMBERS_REFIRED = "comment_members_refired"  # thread comment: which members, quietly
    REPLY_REOPENED = "reply_reopened"  # a reply in the chat to the message: it re-opened
    COMMENT_RESOLVED = "comment_resolved"  # thread comment: all resolved
    COMMENT_ACKED = "comment_acked"  # thread comment: someone took it
    COMMENT_UNACKED = "comment_unacked"  # thread comment: someone let it go
    COMMENT_RESOLVED_BY_HAND = "comment_resolved_by_hand"  # thread comment: closed by a person
    COMMENT_SILENCED = "comment_silenced"  # thread comment: silenced until ...
    COMMENT_UNSILENCED = "comment_unsilenced"  # thread comment: someone lifted the silence
    COMMENT_SILENCE_ENDED = "comment_silence_ended"  # thread comment: it expired, still firing
    COMMENT_REMINDER = "comment_reminder"  # thread comment: still firing, nobody on it
    COMMENT_ESCALATED = "comment_escalated"  # thread comment: the next people are called
    COMMENT_UNREPORTED = "comment_unreported"  # thread comment: closed, no longer reported
    POST = "post"  # a message of its own to some chat (escalation elsewhere, digest, replies)
    UNFURL = "unfurl"  # link previews for a message that links to incidents
    DM = "dm"  # direct message to the person who pressed a button
    SILENCE = "silence"  # ask Alertmanager for a silence (then record it through the inbox)
    UNSILENCE = "unsilence"  # ask Alertmanager to expire the incident's silence


@dataclass(frozen=True)
class Transition:
    """The incident after a notification (None: nothing to open) and the effects to deliver."""

    incident: Incident | None
    effects: tuple[Effect, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.effects)


def notification_digest(note: Notification) -> str:
    """Identity of what a notification says: equal digests mean "nothing new".

    Covers the alerts' identities, statuses and start times, and the truncation count; leaves out
    `externalURL` (differs between HA replicas) and annotation text (Prometheus may re-render it
    on every evaluation, which is not a change worth a message edit).
    """
    parts = [note.source, note.receiver, note.group_key, note.status, str(note.truncated_alerts)]
    parts += sorted(f"{a.fingerprint}|{a.status}|{a.starts_at.isoformat()}" for a in note.alerts)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def apply_notification(
    current: Incident | None,
    note: Notification,
    *,
    route: str,
    chat_id: int,
    now: datetime,
    resolved_ttl: timedelta,
    new_ref: str,
    digest: str | None = None,
    noise: Noise | None = None,
) -> Transition:
    """Apply `note` to the incident it belongs to in one chat (`digest`: its
    `notification_digest`, if the caller has it already; `noise`: the route's rules for
    re-fires, see Noise).

    `current` is the stored incident with this key, if any. An incident resolved more than
    `resolved_ttl` ago (by the bridge's clock, so replays and skewed sources behave the same)
    is finished: a new firing then opens a new incident (and message).
    """
    digest = digest or notification_digest(note)
    over = current is not None and not reopenable(current, now, resolved_ttl)
    if current is None or (over and has_news(note, {**current.earlier, **current.alerts})):
        return _open(note, route=route, chat_id=chat_id, now=now, ref=new_ref, digest=digest)
    if over:  # a repeat of what it was closed on (e.g. by hand while still firing)
        return Transition(current)
    return _update(current, note, now=now, digest=digest, noise=noise or Noise())


@dataclass(frozen=True)
class Noise:
    """A route's rules for what fires again (SPEC 4: less noise, same information)."""

    # a re-open after being resolved this long also replies to the message in the chat,
    # where people who do not follow the thread see it (None: never)
    reopen_notice_after: timedelta | None = timedelta(minutes=10)
    # a member firing again more than `flap_threshold` times within `flap_window` is flapping
    flap_threshold: int = 3
    flap_window: timedelta = timedelta(minutes=10)


# members firing again inside a firing incident are told in one thread comment this long
# after the first of them (and not one comment each)
REFIRE_WINDOW = timedelta(seconds=60)


DEFAULT_PRIORITY_ORDER = ("critical", "error", "warning", "info", "none")


def create_priority(
    incident: Incident, label: str = "severity", order: tuple[str, ...] = DEFAULT_PRIORITY_ORDER
) -> int:
    """The outbox lane of the incident's create (see `rank`)."""
    return rank(incident.common_labels, label, order)


def rank(
    labels: Mapping[str, str],
    label: str = "severity",
    order: tuple[str, ...] = DEFAULT_PRIORITY_ORDER,
) -> int:
    """1 + the rank of the `label` value in `order` (critical first by default); a value not
    in `order` ranks as "none", or last."""
    value = labels.get(label, "").strip().lower() or "none"
    if value not in order:
        value = "none" if "none" in order else order[-1]
    return 1 + order.index(value)


def reopenable(incident: Incident, now: datetime, resolved_ttl: timedelta) -> bool:
    """Is the incident still the one its group's notifications go to: firing, or resolved
    less than `resolved_ttl` ago (a new firing re-opens the same message)?"""
    return incident.state is IncidentState.FIRING or now - incident.changed_at <= resolved_ttl


def end_alerts(
    alerts: dict[str, Alert], ended: Iterable[str], at: datetime, *, inferred: bool
) -> dict[str, Alert]:
    """`alerts` with those named in `ended` shown resolved at `at`; `inferred` when the
    source did not say so (see `Alert.inferred`)."""
    out = dict(alerts)
    for fp in ended:
        out[fp] = out[fp].model_copy(
            update={"status": AlertStatus.RESOLVED, "ends_at": at, "inferred": inferred}
        )
    return out


def new_episode(now: datetime, alerts: Iterable[Alert]) -> dict[str, object]:
    """What a re-opened incident starts afresh: ack, hand-closing, reminders, escalation."""
    return {
        "acked_by": None,
        "acked_at": None,
        "resolved_by": None,
        "firing_since": now,
        "episode_start": _earliest_firing(alerts),
        "reminded_at": None,
        "escalated": 0,
    }


def touched(incident: Incident, now: datetime, every: timedelta) -> Incident | None:
    """The incident with `last_seen` renewed, if the last renewal is older than `every`: a
    repeat that changes nothing still proves the source reports it, but is written only now
    and then. Same version: nothing for the chat to show."""
    if incident.state is not IncidentState.FIRING:
        return None
    seen = incident.last_seen or incident.changed_at
    if now - seen < every:
        return None
    return incident.model_copy(update={"last_seen": now})


def close_unreported(incident: Incident, now: datetime, stale_after: timedelta) -> Transition:
    """An open incident that no notification and no check-back has reported for `stale_after`
    is closed, so nothing stays firing forever (its group was re-routed, or Alertmanager lost
    it). Its alerts end provisionally: if the source still has them firing, the next
    notification re-opens it."""
    seen = incident.last_seen or incident.changed_at
    if incident.state is not IncidentState.FIRING or now - seen < stale_after:
        return Transition(incident)
    firing = [a.fingerprint for a in incident.firing]
    closed = incident.model_copy(
        update={
            "alerts": end_alerts(incident.alerts, firing, now, inferred=True),
            "state": IncidentState.RESOLVED,
            "resolved_at": now,
            "changed_at": now,
            "version": incident.version + 1,
        }
    )
    return Transition(closed, (Effect.EDIT, Effect.COMMENT_UNREPORTED))


def has_news(note: Notification, known: dict[str, Alert]) -> bool:
    """Does `note` report a firing the incident does not account for: an alert it never had, a
    newer `startsAt`, or a firing over a resolution the bridge only inferred? A repeat of what
    the source already said (however long ago) is not news."""
    for alert in note.alerts:
        if alert.status is not AlertStatus.FIRING:
            continue
        previous = known.get(alert.fingerprint)
        if previous is None or _is_newer(alert, previous):
            return True
    return False


def _open(
    note: Notification,
    *,
    route: str,
    chat_id: int,
    now: datetime,
    ref: str,
    digest: str,
) -> Transition:
    if not any(a.status is AlertStatus.FIRING for a in note.alerts):
        # A resolution for something never shown (or long closed) is not worth a message.
        return Transition(None)
    incident = Incident(
        ref=ref,
        key=incident_key(note.source, note.receiver, note.group_key, chat_id),
        source=note.source,
        route=route,
        chat_id=chat_id,
        receiver=note.receiver,
        group_key=note.group_key,
        group_labels=note.group_labels,
        common_labels=note.common_labels,
        common_annotations=note.common_annotations,
        external_url=note.external_url,
        alerts={a.fingerprint: a for a in note.alerts},
        truncated_alerts=note.truncated_alerts,
        state=IncidentState.FIRING,
        opened_at=now,
        changed_at=now,
        firing_since=now,
        last_seen=now,
        episode_start=_earliest_firing(note.alerts),
        last_digest=digest,
    )
    return Transition(incident, (Effect.CREATE,))


def _update(
    current: Incident, note: Notification, *, now: datetime, digest: str, noise: Noise
) -> Transition:
    alerts = dict(current.alerts)
    earlier = dict(current.earlier)
    refired_members: list[str] = []
    # Closed by hand while the source still said "firing": repeats of what the source already
    # said do not re-open it; news (see has_news) does, and then every alert the source still
    # reports firing is shown firing again.
    reopen_by_hand = current.resolved_by is not None and has_news(note, {**earlier, **alerts})
    for alert in note.alerts:
        previous = alerts.get(alert.fingerprint)
        if previous is None and alert.fingerprint in earlier:
            # of an earlier episode: back on the message only with something newer to say
            if _is_newer(alert, earlier[alert.fingerprint]):
                del earlier[alert.fingerprint]
                alerts[alert.fingerprint] = alert
                if alert.status is AlertStatus.FIRING:
                    refired_members.append(alert.fingerprint)
            continue
        if previous is None:
            alerts[alert.fingerprint] = alert
        elif _is_newer(alert, previous) or (
            reopen_by_hand
            and alert.status is AlertStatus.FIRING
            and previous.status is AlertStatus.RESOLVED
            and alert.starts_at >= previous.starts_at
        ):
            if previous.status is AlertStatus.RESOLVED and alert.status is AlertStatus.FIRING:
                refired_members.append(alert.fingerprint)
            alerts[alert.fingerprint] = alert
        elif alert.starts_at == previous.starts_at and alert.status == previous.status:
            alerts[alert.fingerprint] = alert  # same instance: take the freshest text
    if note.status is AlertStatus.RESOLVED:
        _resolve_absent(alerts, note)

    if _signature(alerts, note.truncated_alerts) == _signature(
        current.alerts, current.truncated_alerts
    ):
        return Transition(current)

    any_firing = any(a.status is AlertStatus.FIRING for a in alerts.values())
    state = IncidentState.FIRING if any_firing else IncidentState.RESOLVED
    resolved_at = None if any_firing else _last_end(alerts.values(), default=now)
    reopened = current.state is IncidentState.RESOLVED and state is IncidentState.FIRING
    people: dict[str, object] = {}
    if reopened:  # a new episode: the old ack, hand-closing, reminders and escalation reset
        # what the previous episode had and the source no longer lists leaves the message
        # (resolved alerts only: a firing one may just be silenced or cut by truncation)
        listed = {a.fingerprint for a in note.alerts}
        for fp, alert in list(alerts.items()):
            if fp not in listed and alert.status is AlertStatus.RESOLVED:
                earlier[fp] = alerts.pop(fp)
        # Alertmanager notified, so no silence covers it now
        people = {**new_episode(now, alerts.values()), **UNSILENCED}
    refires = _recent_refires(current.refires, refired_members, now, noise.flap_window)
    flapping = sorted(fp for fp, times in refires.items() if len(times) > noise.flap_threshold)
    quiet = [fp for fp in refired_members if fp not in flapping]  # worth a comment
    pending: dict[str, object] = {}
    if reopened or state is IncidentState.RESOLVED:
        pending = {"refired_pending": [], "refired_since": None}  # told by the re-open or moot
    elif quiet:
        pending = {
            "refired_pending": sorted({*current.refired_pending, *quiet}),
            "refired_since": current.refired_since or now,
        }
    updated = current.model_copy(
        update={
            **people,
            **pending,
            "refires": refires,
            "flapping": flapping,
            "last_digest": digest,
            "alerts": alerts,
            "earlier": earlier,
            "last_seen": now,
            "truncated_alerts": note.truncated_alerts,
            "group_labels": note.group_labels or current.group_labels,
            "common_labels": note.common_labels,
            "common_annotations": note.common_annotations,
            "state": state,
            "resolved_at": resolved_at,
            "changed_at": now,
            "version": current.version + 1,
        }
    )
    effects: tuple[Effect, ...] = (Effect.EDIT,)
    if current.state is IncidentState.FIRING and state is IncidentState.RESOLVED:
        effects += (Effect.COMMENT_RESOLVED,)
    elif reopened:
        effects += (Effect.COMMENT_REFIRED,)
        quiet_for = now - current.changed_at  # resolved since its last change (bridge clock)
        if noise.reopen_notice_after is not None and quiet_for >= noise.reopen_notice_after:
            effects += (Effect.REPLY_REOPENED,)
    return Transition(updated, effects)


def _recent_refires(
    known: dict[str, list[datetime]], refired: list[str], now: datetime, window: timedelta
) -> dict[str, list[datetime]]:
    """Each member's re-fire times within `window` of `now`, with this notification's."""
    out = {}
    for fp in {*known, *refired}:
        times = [t for t in known.get(fp, []) if now - t < window]
        if fp in refired:
            times.append(now)
        if times:
            out[fp] = times
    return out


def tell_refires(incident: Incident, now: datetime) -> Transition:
    """The thread comment naming the members that fired again (without mentions: the
    incident as a whole was firing already), once REFIRE_WINDOW has passed since the first,
    so a burst of re-fires makes one comment. No change if nothing is due."""
    due = incident.refired_since is not None and now - incident.refired_since >= REFIRE_WINDOW
    if not incident.refired_pending or not due or incident.state is not IncidentState.FIRING:
        return Transition(incident)
    told = incident.model_copy(
        update={
            "refired_told": incident.refired_pending,
            "refired_pending": [],
            "refired_since": None,
            "version": incident.version + 1,  # the compare-and-set: told once, by one replica
        }
    )
    return Transition(told, (Effect.COMMENT_MEMBERS_REFIRED,))


def _is_newer(alert: Alert, previous: Alert) -> bool:
    """Does `alert` tell something later than `previous` about the same label set?

    A re-fire has a newer `startsAt`; a resolution of the current instance has the same
    `startsAt` and status resolved. A stale firing copy (same `startsAt` as a resolution we have,
    e.g. from the lagging replica of an HA pair) is not newer, so it cannot re-open anything.
    """
    if alert.starts_at != previous.starts_at:
        return alert.starts_at > previous.starts_at
    if previous.status is AlertStatus.FIRING:
        return alert.status is AlertStatus.RESOLVED
    # only a resolution the source reported is final; an inferred one yields to the source
    return previous.inferred and alert.status is AlertStatus.FIRING


def _resolve_absent(alerts: dict[str, Alert], note: Notification) -> None:
    """A group reported resolved while we think some alerts it left out still fire. Left out
    by truncation (`truncatedAlerts`), they ended too: Alertmanager's status covers every alert
    of the group. Left out otherwise, they are silenced or inhibited, and nothing is known of
    them: they stay as they are (the silence check-back follows them). An inferred end is
    provisional (`Alert.inferred`)."""
    end = _last_end(note.alerts, default=None)
    if end is None or note.truncated_alerts == 0:
        return
    listed = {a.fingerprint for a in note.alerts}
    cut = [
        fp
        for fp, alert in alerts.items()
        if fp not in listed and alert.status is AlertStatus.FIRING and alert.starts_at <= end
    ]
    alerts.update(end_alerts(alerts, cut, end, inferred=True))


def _earliest_firing(alerts: Iterable[Alert]) -> datetime | None:
    starts = [a.starts_at for a in alerts if a.status is AlertStatus.FIRING]
    return min(starts) if starts else None


def _last_end(alerts: Iterable[Alert], default: datetime | None) -> datetime | None:
    ends = [a.ends_at for a in alerts if a.ends_at is not None]
    return max(ends) if ends else default


def _signature(alerts: dict[str, Alert], truncated: int) -> tuple[object, ...]:
    return (
        truncated,
        sorted((fp, a.status, a.starts_at, a.inferred) for fp, a in alerts.items()),
    )
