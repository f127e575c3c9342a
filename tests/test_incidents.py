"""The pure transitions, driven by the captured payloads in the order Alertmanager sent them."""

from datetime import UTC, datetime, timedelta

from bridge.incidents import Effect, Transition, apply_notification, notification_digest
from bridge.model import AlertStatus, Incident, IncidentState, Notification
from bridge.sources import alertmanager
from tests.conftest import fixture_bytes

NOW = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
TTL = timedelta(hours=1)


def note(name: str) -> Notification:
    return alertmanager.parse(fixture_bytes(name))


def step(current: Incident | None, name: str, now: datetime = NOW) -> Transition:
    return apply_notification(
        current,
        note(name),
        route="default",
        chat_id=1000,
        now=now,
        resolved_ttl=TTL,
        new_ref=f"ref{now.timestamp():.0f}",
    )


def run(*names: str) -> list[Transition]:
    out, current = [], None
    for name in names:
        transition = step(current, name)
        out.append(transition)
        current = transition.incident
    return out


def test_first_notification_opens_with_one_create() -> None:
    (opened,) = run("alertmanager/02-group-3-firing.json")
    assert opened.effects == (Effect.CREATE,)
    assert opened.incident is not None
    assert opened.incident.state is IncidentState.FIRING
    assert len(opened.incident.firing) == 3


def test_repeat_changes_nothing() -> None:
    opened, repeat = run(
        "alertmanager/02-group-3-firing.json", "alertmanager/03-group-3-repeat.json"
    )
    assert repeat.effects == ()
    assert repeat.incident == opened.incident


def test_partial_then_full_resolution_edit_the_same_incident() -> None:
    opened, partial, full = run(
        "alertmanager/02-group-3-firing.json",
        "alertmanager/04-group-1-resolved-2-firing.json",
        "alertmanager/05-group-all-resolved.json",
    )
    assert partial.effects == (Effect.EDIT,)
    assert partial.incident is not None and len(partial.incident.resolved) == 1
    assert full.effects == (Effect.EDIT, Effect.COMMENT_RESOLVED)
    assert full.incident is not None and full.incident.state is IncidentState.RESOLVED
    assert full.incident.ref == opened.incident.ref  # type: ignore[union-attr]
    assert full.incident.resolved_at is not None


def test_resolution_of_a_group_never_seen_opens_nothing() -> None:
    (resolved,) = run("alertmanager/14-flap-resolved.json")
    assert resolved.incident is None
    assert resolved.effects == ()


def test_flap_resolved_then_fired_again_reopens_same_message() -> None:
    firing = note("alertmanager/15-flap-fired-again-new-startsAt.json")
    resolved = note("alertmanager/14-flap-resolved.json")
    # Build the flap: the earlier instance fired (same labels, older startsAt), then resolved.
    earlier = firing.model_copy(
        update={
            "alerts": tuple(
                a.model_copy(update={"starts_at": r.starts_at})
                for a, r in zip(firing.alerts, resolved.alerts, strict=True)
            )
        }
    )
    kw = {"route": "default", "chat_id": 1000, "resolved_ttl": TTL, "new_ref": "x"}
    opened = apply_notification(None, earlier, now=NOW, **kw)
    closed = apply_notification(opened.incident, resolved, now=NOW, **kw)
    again = apply_notification(closed.incident, firing, now=NOW + timedelta(seconds=3), **kw)
    assert closed.effects == (Effect.EDIT, Effect.COMMENT_RESOLVED)
    assert again.effects == (Effect.EDIT, Effect.COMMENT_REFIRED)
    assert again.incident is not None and again.incident.ref == opened.incident.ref  # type: ignore[union-attr]
    assert again.incident.state is IncidentState.FIRING and again.incident.resolved_at is None


def test_refire_after_resolved_ttl_opens_a_new_incident() -> None:
    opened = step(None, "alertmanager/02-group-3-firing.json")
    closed = step(opened.incident, "alertmanager/05-group-all-resolved.json")
    assert closed.incident is not None
    later = closed.incident.changed_at + TTL + timedelta(seconds=1)
    new_firing = step(closed.incident, "alertmanager-ha-split/01-firing-from-am-a.json", now=later)
    assert new_firing.effects == (Effect.CREATE,)
    assert new_firing.incident is not None and new_firing.incident.ref != opened.incident.ref  # type: ignore[union-attr]


def test_ha_stale_firing_copy_does_not_reopen() -> None:
    """alertmanager-ha 04-07: firing (B), resolved (B), stale firing copy (A), resolved (A)."""
    firing, resolved, stale, resolved_again = run(
        "alertmanager-ha/04-short-timers-firing-from-am-b.json",
        "alertmanager-ha/05-short-timers-resolved-from-am-b.json",
        "alertmanager-ha/06-short-timers-stale-firing-from-am-a.json",
        "alertmanager-ha/07-short-timers-resolved-again-from-am-a.json",
    )
    assert firing.effects == (Effect.CREATE,)
    assert Effect.COMMENT_RESOLVED in resolved.effects
    assert stale.effects == ()
    assert resolved_again.effects == ()
    assert resolved_again.incident is not None
    assert resolved_again.incident.state is IncidentState.RESOLVED


def test_split_ha_copies_are_one_change() -> None:
    a, b, ra, rb = run(
        "alertmanager-ha-split/01-firing-from-am-a.json",
        "alertmanager-ha-split/02-firing-from-am-b.json",
        "alertmanager-ha-split/03-resolved-from-am-a.json",
        "alertmanager-ha-split/04-resolved-from-am-b.json",
    )
    assert [t.effects for t in (a, b, ra, rb)] == [
        (Effect.CREATE,),
        (),
        (Effect.EDIT, Effect.COMMENT_RESOLVED),
        (),
    ]


def test_digest_ignores_external_url_but_not_status() -> None:
    a = note("alertmanager-ha-split/01-firing-from-am-a.json")
    b = note("alertmanager-ha-split/02-firing-from-am-b.json")
    assert a.external_url != b.external_url
    assert notification_digest(a) == notification_digest(b)
    resolved = note("alertmanager-ha-split/03-resolved-from-am-a.json")
    assert notification_digest(a) != notification_digest(resolved)


def test_truncation_count_change_is_a_change() -> None:
    _, t08, t09 = run(
        "alertmanager/07-truncated-max-alerts-3-of-7.json",
        "alertmanager/08-truncated-2-resolved-of-7.json",
        "alertmanager/09-truncated-after-resolved-dropped.json",
    )
    assert t08.effects == (Effect.EDIT,)
    assert t09.effects == (Effect.EDIT,)
    assert t09.incident is not None and t09.incident.truncated_alerts == 2
    # the two resolved alerts dropped from 09 stay resolved in the incident
    assert len(t09.incident.resolved) == 2


def test_annotation_text_alone_is_not_a_change() -> None:
    first = note("alertmanager/02-group-3-firing.json")
    reworded = first.model_copy(
        update={
            "alerts": tuple(
                a.model_copy(
                    update={"annotations": {**a.annotations, "description": "value now 97%"}}
                )
                for a in first.alerts
            )
        }
    )
    opened = step(None, "alertmanager/02-group-3-firing.json")
    again = apply_notification(
        opened.incident,
        reworded,
        route="default",
        chat_id=1000,
        now=NOW,
        resolved_ttl=TTL,
        new_ref="x",
    )
    assert again.effects == ()


def test_silenced_alert_missing_from_repeat_keeps_its_state() -> None:
    """12: app-2 silenced vanishes from the repeat; nothing marks it, so it stays as it was."""
    payload_13 = note("alertmanager/13-after-silences-expired.json")
    opened = apply_notification(
        None, payload_13, route="default", chat_id=1000, now=NOW, resolved_ttl=TTL, new_ref="x"
    )
    after = apply_notification(
        opened.incident,
        note("alertmanager/12-one-of-three-silenced-repeat.json"),
        route="default",
        chat_id=1000,
        now=NOW,
        resolved_ttl=TTL,
        new_ref="y",
    )
    assert after.effects == ()
    assert after.incident is not None
    assert all(a.status is AlertStatus.FIRING for a in after.incident.alerts.values())


def test_group_resolved_resolves_alerts_it_left_out() -> None:
    opened = step(None, "alertmanager/07-truncated-max-alerts-3-of-7.json")
    resolved_payload = note("alertmanager/07-truncated-max-alerts-3-of-7.json")
    end = NOW
    all_resolved = resolved_payload.model_copy(
        update={
            "status": AlertStatus.RESOLVED,
            "alerts": tuple(
                a.model_copy(update={"status": AlertStatus.RESOLVED, "ends_at": end})
                for a in resolved_payload.alerts[:1]
            ),
        }
    )
    assert opened.incident is not None
    closed = apply_notification(
        opened.incident,
        all_resolved,
        route="default",
        chat_id=1000,
        now=NOW,
        resolved_ttl=TTL,
        new_ref="x",
    )
    assert closed.incident is not None and closed.incident.state is IncidentState.RESOLVED
