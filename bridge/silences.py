"""Pure rules for Alertmanager silences on an incident: what a silence matches, what its
creation or end does to the incident, and how the incident follows what Alertmanager reports.

Alertmanager sends nothing for silenced alerts, not even "resolved" (prometheus/alertmanager#226),
so while silenced an incident is kept true by `follow_alertmanager`, fed from `GET /api/v2/alerts`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bridge.incidents import UNSILENCED, Effect, end_alerts, new_episode, touched
from bridge.model import AlertStatus, Incident, IncidentState

# A silence shown past its end by this much is dropped even if Alertmanager cannot be asked.
STALE_SILENCE = timedelta(minutes=5)


def silence_matchers(incident: Incident) -> dict[str, str]:
    """Exact matchers for the incident's group: its group labels with a non-empty value.
    Empty when the group has none, and then no silence may be made: it would match all."""
    return {k: v for k, v in incident.group_labels.items() if v}


def silence_comment(incident: Incident, title: str) -> str:
    """The comment of a silence made from the chat: says where it came from, and names the
    incident (see `made_for`)."""
    return (
        f"From Pachca chat {incident.chat_id}: incident {incident.ref} «{title}» "
        "(pachca-alert-bridge)"
    )


def made_for(silence: dict[str, Any], matchers: dict[str, str], ref: str) -> bool:
    """Is this silence (as `GET /api/v2/silences` lists it) one made for incident `ref`, not
    yet over: exactly `matchers`, and a comment naming the incident? An earlier attempt whose
    answer was lost may have made it: found, it is adopted rather than made twice (a twin
    would keep the alerts silenced after Unsilence expired the one the incident knows)."""
    state = (silence.get("status") or {}).get("state")
    listed = silence.get("matchers")
    if state not in ("active", "pending") or not isinstance(listed, list):
        return False
    exact = sorted(
        (str(m.get("name")), str(m.get("value")))
        for m in listed
        if isinstance(m, dict) and not m.get("isRegex") and m.get("isEqual", True)
    )
    named = f": incident {ref} «" in str(silence.get("comment", ""))
    return named and len(exact) == len(listed) and exact == sorted(matchers.items())


def silenced(
    incident: Incident, silence_id: str, until: datetime | None, by: str, now: datetime
) -> Incident:
    return _changed(incident, now, silence_id=silence_id, silenced_until=until, silenced_by=by)


def unsilenced(incident: Incident, now: datetime) -> Incident:
    return _changed(incident, now, **UNSILENCED)


def follow_alertmanager(
    incident: Incident,
    alerts: dict[str, dict[str, Any]],
    silences: dict[str, dict[str, Any]],
    now: datetime,
    gone: frozenset[str] = frozenset(),
) -> tuple[Incident, tuple[Effect, ...]]:
    """Bring a firing incident in line with Alertmanager's own view.

    `alerts` are Alertmanager's current alerts by fingerprint; `silences` its silences by id;
    `gone` the incident's firing alerts whose absence is evidence (see `absence_evidence`).
    - shown silenced, some of its alerts gone: they resolved unseen -> shown resolved
      (provisionally: a firing copy re-opens them); all gone -> the incident resolved;
    - shown silenced, no silence covers its alerts any more (expired, or expired in the UI)
      -> silence dropped, Silence buttons back, the thread says so;
    - not shown silenced, but every alert still present is silenced (e.g. from Alertmanager's
      UI) -> shown silenced.
    """
    if incident.state is IncidentState.RESOLVED:
        return follow_silenced_resolution(incident, alerts, silences, now)
    firing = [a.fingerprint for a in incident.alerts.values() if a.status is AlertStatus.FIRING]
    present = [alerts[fp] for fp in firing if fp in alerts]
    covering = [_covering(a) for a in present]
    if incident.silence_id is not None:
        ended = [fp for fp in firing if fp not in alerts and fp in gone]
        if ended and len(ended) == len(firing):
            return _resolved_unseen(incident, ended, now), (Effect.EDIT, Effect.COMMENT_RESOLVED)
        if not present:
            return incident, ()  # absent, but not yet for long enough to say it ended
        if not any(covering):
            return unsilenced(incident, now), (Effect.EDIT, Effect.COMMENT_SILENCE_ENDED)
        after = _ended_unseen(incident, ended, now) if ended else incident
        ids = set().union(*covering)
        if incident.silence_id not in ids:  # another silence took over: show that one
            return _shown(after, sorted(ids)[0], silences, now), (Effect.EDIT,)
        return after, ((Effect.EDIT,) if ended else ())
    if present and all(covering):
        common = set.intersection(*covering) or set().union(*covering)
        return _shown(incident, sorted(common)[0], silences, now), (
            Effect.EDIT,
            Effect.COMMENT_SILENCED,
        )
    return incident, ()


def follow_silenced_resolution(
    incident: Incident,
    alerts: dict[str, dict[str, Any]],
    silences: dict[str, dict[str, Any]],
    now: datetime,
) -> tuple[Incident, tuple[Effect, ...]]:
    """A resolved incident that still shows its silence. Alertmanager sends nothing for alerts
    under a silence, so its view is the only news:
    - one of the incident's alerts fires again (a newer startsAt) under the silence -> the
      incident re-opens, shown silenced, without pinging anyone (that is what the silence
      asked for);
    - the silence is no longer active -> it leaves the message (and the incident is done).
    """
    if incident.silence_id is None:
        return incident, ()
    silence = silences.get(incident.silence_id)
    active = silence is not None and (silence.get("status") or {}).get("state") == "active"
    refired = {}
    for fp, known in incident.alerts.items():
        seen = alerts.get(fp)
        start = _parse_time(seen.get("startsAt")) if seen else None
        if seen is not None and start is not None and start > known.starts_at:
            refired[fp] = known.model_copy(
                update={
                    "status": AlertStatus.FIRING,
                    "starts_at": start,
                    "ends_at": None,
                    "inferred": False,
                    "annotations": seen.get("annotations") or known.annotations,
                }
            )
    if refired and active and all(incident.silence_id in _covering(alerts[fp]) for fp in refired):
        reopened = _changed(
            incident,
            now,
            **new_episode(now, refired.values()),
            alerts={**incident.alerts, **refired},
            state=IncidentState.FIRING,
            resolved_at=None,
            last_seen=now,
        )
        return reopened, (Effect.EDIT,)
    if not active:
        return unsilenced(incident, now), (Effect.EDIT,)
    return incident, ()


def absence_evidence(
    firing: frozenset[str], alerts: dict[str, dict[str, Any]], settled: bool, before: frozenset[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """Which firing alerts Alertmanager's silence on them let go unseen. An alert missing from
    its list counts only when Alertmanager has run long enough to have heard from Prometheus
    (`settled`) and it was missing at the check before too (`before`): a restarted Alertmanager
    holds nothing for up to a minute. Returns (gone, missing now: the next check's `before`)."""
    if not settled:
        return frozenset(), frozenset()
    missing = frozenset(fp for fp in firing if fp not in alerts)
    return missing & before, missing


def check_back(
    incident: Incident,
    alerts: dict[str, dict[str, Any]] | None,
    silences: dict[str, dict[str, Any]],
    now: datetime,
    gone: frozenset[str],
    touch_every: timedelta,
) -> tuple[Incident, tuple[Effect, ...]]:
    """What one look at Alertmanager changes in an incident (`alerts` None: it could not be
    asked, so only a silence long past its end is dropped); while Alertmanager still has one
    of its firing alerts, `last_seen` is renewed now and then (see `touched`). The incident
    itself comes back when nothing changes, so a caller can skip the write."""
    if alerts is None:
        return drop_stale_silence(incident, now)
    after, effects = follow_alertmanager(incident, alerts, silences, now, gone)
    reported = any(a.fingerprint in alerts for a in after.firing)
    if not effects and reported:  # Alertmanager still has it: renew last_seen
        after = touched(after, now, touch_every) or after
    return after, effects


def drop_stale_silence(incident: Incident, now: datetime) -> tuple[Incident, tuple[Effect, ...]]:
    """A silence shown well past its end, when Alertmanager could not be asked."""
    until = incident.silenced_until
    if incident.silence_id is not None and until is not None and now > until + STALE_SILENCE:
        return unsilenced(incident, now), (Effect.EDIT, Effect.COMMENT_SILENCE_ENDED)
    return incident, ()


def _covering(alert: dict[str, Any]) -> set[str]:
    status = alert.get("status") or {}
    return {str(s) for s in status.get("silencedBy") or []}


def _shown(
    incident: Incident, silence_id: str, silences: dict[str, dict[str, Any]], now: datetime
) -> Incident:
    silence = silences.get(silence_id, {})
    until = _parse_time(silence.get("endsAt"))
    return silenced(incident, silence_id, until, str(silence.get("createdBy") or ""), now)


def _ended_unseen(incident: Incident, ended: list[str], now: datetime) -> Incident:
    """These alerts left Alertmanager while silenced: shown resolved, provisionally."""
    return _changed(incident, now, alerts=end_alerts(incident.alerts, ended, now, inferred=True))


def _resolved_unseen(incident: Incident, ended: list[str], now: datetime) -> Incident:
    after = _ended_unseen(incident, ended, now)
    # the silence stays shown while it lasts: a re-fire under it is looked for (see
    # `follow_silenced_resolution`)
    return after.model_copy(update={"state": IncidentState.RESOLVED, "resolved_at": now})


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _changed(incident: Incident, now: datetime, **update: object) -> Incident:
    return incident.model_copy(
        update={**update, "changed_at": now, "version": incident.version + 1}
    )
