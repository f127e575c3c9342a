"""The pure transitions, driven by the captured payloads in the order Alertmanager sent them."""

from datetime import UTC, datetime, timedelta

from bridge.actions import Action, ButtonData, apply_click
from bridge.incidents import (
    Effect,
    Transition,
    apply_notification,
    close_unreported,
    notification_digest,
    touched,
)
from bridge.model import AlertStatus, Incident, IncidentState, Notification
from bridge.render import RenderOptions, first_start, render_message, shared_labels
from bridge.rules import RouteConfig
from bridge.silences import silenced
from bridge.sources import alertmanager
from bridge.texts import render_comment
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


# -- why an alert is resolved: reported (final) or inferred (provisional) ---------------------


def _only(base: Notification, keep: int, status: AlertStatus) -> Notification:
    """`base` reduced to its alert number `keep`, with `status` (ended at NOW if resolved)."""
    alert = base.alerts[keep].model_copy(
        update={"status": status, "ends_at": NOW if status is AlertStatus.RESOLVED else None}
    )
    return base.model_copy(update={"status": status, "alerts": (alert,)})


def _apply(current: Incident | None, n: Notification, now: datetime = NOW) -> Transition:
    return apply_notification(
        current, n, route="default", chat_id=1000, now=now, resolved_ttl=TTL, new_ref="new"
    )


def test_a_member_left_out_of_a_resolved_notification_is_not_taken_for_resolved() -> None:
    """Group {X, S}, S silenced in Alertmanager: X recovers, the notification is "resolved" and
    lists X only (no truncation). Nothing is known of S: it stays firing (the check-back shows
    it silenced), and when its silence ends and Alertmanager sends it, nothing has to re-open."""
    group = note("alertmanager/02-group-3-firing.json")
    group = group.model_copy(update={"alerts": group.alerts[:2]})
    opened = _apply(None, group)
    x_resolved = _apply(opened.incident, _only(group, 0, AlertStatus.RESOLVED))
    incident = x_resolved.incident
    assert incident is not None and incident.state is IncidentState.FIRING
    assert incident.alerts[group.alerts[1].fingerprint].status is AlertStatus.FIRING
    assert incident.alerts[group.alerts[0].fingerprint].status is AlertStatus.RESOLVED
    assert x_resolved.effects == (Effect.EDIT,)  # no "resolved" comment
    assert _apply(incident, _only(group, 1, AlertStatus.FIRING)).effects == ()


def test_members_truncated_from_a_resolved_notification_end_provisionally() -> None:
    """A resolved notification that was truncated: the alerts it cut ended too (the status
    covers the whole group), but only provisionally: a firing copy with the same startsAt (the
    inference was wrong, e.g. one of them was silenced) re-opens the incident, however late."""
    group = note("alertmanager/02-group-3-firing.json")
    opened = _apply(None, group)
    cut = _only(group, 0, AlertStatus.RESOLVED).model_copy(update={"truncated_alerts": 2})
    resolved = _apply(opened.incident, cut)
    incident = resolved.incident
    assert incident is not None and incident.state is IncidentState.RESOLVED
    s = incident.alerts[group.alerts[1].fingerprint]
    assert s.status is AlertStatus.RESOLVED and s.inferred
    assert not incident.alerts[group.alerts[0].fingerprint].inferred
    fires_on = _apply(incident, _only(group, 1, AlertStatus.FIRING))
    assert fires_on.incident is not None
    assert fires_on.incident.state is IncidentState.FIRING
    assert fires_on.effects == (Effect.EDIT, Effect.COMMENT_REFIRED)
    assert fires_on.incident.ref == incident.ref
    later = incident.changed_at + TTL * 5
    assert _apply(incident, _only(group, 1, AlertStatus.FIRING), later).effects == (Effect.CREATE,)


def test_a_reported_resolution_is_final_for_its_starts_at() -> None:
    """The HA guarantee holds: a late firing copy never re-opens a resolution the source sent."""
    group = note("alertmanager/02-group-3-firing.json")
    opened = _apply(None, group)
    resolved = _apply(opened.incident, note("alertmanager/05-group-all-resolved.json"))
    assert resolved.incident is not None
    assert not any(a.inferred for a in resolved.incident.alerts.values())
    assert _apply(resolved.incident, group).effects == ()
    later = resolved.incident.changed_at + TTL * 5
    assert _apply(resolved.incident, group, later).effects == ()


def test_a_hand_resolved_incident_stays_closed_for_repeats_however_long_ago() -> None:
    """Resolved by hand while the source still says firing: repeats (also ones that differ, e.g.
    one member now reported resolved) do not re-open it, within the resolved TTL or past it;
    a newer startsAt does."""
    group = note("alertmanager/02-group-3-firing.json")
    opened = _apply(None, group)
    assert opened.incident is not None
    closed = apply_click(
        opened.incident,
        ButtonData(Action.RESOLVE, opened.incident.ref),
        7,
        RouteConfig(name="default", chat_id=1),
        NOW,
    ).incident
    assert closed is not None and closed.state is IncidentState.RESOLVED
    assert _apply(closed, group).effects == ()
    one_resolved = note("alertmanager/04-group-1-resolved-2-firing.json")
    assert _apply(closed, one_resolved).incident == closed
    for later in (NOW + TTL * 2, NOW + timedelta(days=3)):
        assert _apply(closed, group, later).effects == ()
    newer = _only(group, 0, AlertStatus.FIRING)
    refired = newer.alerts[0].model_copy(update={"starts_at": NOW + timedelta(minutes=1)})
    news = _apply(closed, newer.model_copy(update={"alerts": (refired,)}))
    assert news.incident is not None and news.incident.state is IncidentState.FIRING
    assert news.effects == (Effect.EDIT, Effect.COMMENT_REFIRED)


# -- episodes --------------------------------------------------------------------------------


def test_a_reopened_incident_is_a_new_episode_counts_and_duration_cover_it() -> None:
    """Episode 1: three alerts fired and resolved. Episode 2, an hour later: one of them fires
    again. The message counts one alert, not "1 of 3"; its duration counts from its start."""
    options = RenderOptions(timezone=UTC)

    group = note("alertmanager/02-group-3-firing.json")
    opened = _apply(None, group)
    resolved = _apply(opened.incident, note("alertmanager/05-group-all-resolved.json"))
    assert resolved.incident is not None
    again = group.alerts[1].model_copy(
        update={"starts_at": group.alerts[1].starts_at + timedelta(hours=1)}
    )
    second = group.model_copy(update={"alerts": (again,), "common_labels": dict(again.labels)})
    reopened = _apply(resolved.incident, second, NOW + timedelta(minutes=5))
    incident = reopened.incident
    assert incident is not None and incident.state is IncidentState.FIRING
    assert list(incident.alerts) == [again.fingerprint]
    assert incident.episode_start == again.starts_at
    assert first_start(incident) == again.starts_at
    comment = render_comment(
        Effect.COMMENT_REFIRED, incident, RouteConfig(name="d", chat_id=1), options
    )
    assert "(1 из 1)" in comment
    # the header's labels are those of every alert shown, not the last notification's
    three = opened.incident
    assert three is not None
    only_first = three.model_copy(update={"common_labels": dict(group.alerts[0].labels)})
    assert "instance" not in shared_labels(only_first)
    content = render_message(only_first, RouteConfig(name="d", chat_id=1), options).content
    header_labels = content.splitlines()[1]
    assert "instance" not in header_labels and "team: `db`" in header_labels


def test_a_late_copy_from_the_previous_episode_adds_nothing_back() -> None:
    """Found by the model-based test: alerts of the previous episode leave the message when it
    re-opens without them, but are remembered; a late copy of the old "firing" notification
    (the lagging replica) neither shows them firing again nor re-opens anything."""
    group = note("alertmanager/02-group-3-firing.json")
    opened = _apply(None, group)
    resolved = _apply(opened.incident, note("alertmanager/05-group-all-resolved.json"))
    again = group.alerts[0].model_copy(
        update={"starts_at": group.alerts[0].starts_at + timedelta(hours=1)}
    )
    reopened = _apply(resolved.incident, group.model_copy(update={"alerts": (again,)}))
    incident = reopened.incident
    assert incident is not None and list(incident.alerts) == [again.fingerprint]
    assert set(incident.earlier) == {a.fingerprint for a in group.alerts[1:]}
    late = _apply(incident, group)
    assert late.effects == () and late.incident == incident


def test_close_unreported_and_touched() -> None:
    opened = _apply(None, note("alertmanager/02-group-3-firing.json")).incident
    assert opened is not None and opened.last_seen == NOW
    stale = timedelta(hours=13)
    assert close_unreported(opened, NOW + timedelta(hours=12), stale).effects == ()
    closed = close_unreported(opened, NOW + stale, stale)
    assert closed.effects == (Effect.EDIT, Effect.COMMENT_UNREPORTED)
    assert closed.incident is not None and closed.incident.state is IncidentState.RESOLVED
    assert all(a.inferred for a in closed.incident.alerts.values())
    # it fires on after all: the same startsAt is news over an inferred end
    again = _apply(closed.incident, note("alertmanager/02-group-3-firing.json"), NOW + stale)
    assert again.effects == (Effect.EDIT, Effect.COMMENT_REFIRED)
    every = timedelta(hours=3)
    assert touched(opened, NOW + timedelta(hours=2), every) is None
    renewed = touched(opened, NOW + timedelta(hours=4), every)
    assert renewed is not None and renewed.last_seen == NOW + timedelta(hours=4)
    assert renewed.version == opened.version  # nothing for the chat


def test_a_notification_that_reopens_a_silenced_resolution_clears_the_silence() -> None:
    """Alertmanager notified: no silence covers the alert any more."""
    opened = _apply(None, note("alertmanager/02-group-3-firing.json")).incident
    assert opened is not None
    quiet = silenced(opened, "s1", NOW + timedelta(hours=4), "Иван", NOW)
    resolved = _apply(quiet, note("alertmanager/05-group-all-resolved.json")).incident
    assert resolved is not None and resolved.silence_id == "s1" and not resolved.finished
    group = note("alertmanager/02-group-3-firing.json")
    later = group.alerts[0].model_copy(
        update={"starts_at": group.alerts[0].starts_at + timedelta(hours=1)}
    )
    reopened = _apply(resolved, group.model_copy(update={"alerts": (later,)})).incident
    assert reopened is not None and reopened.state is IncidentState.FIRING
    assert reopened.silence_id is None
