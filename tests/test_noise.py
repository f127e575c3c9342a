"""Less noise, same information (SPEC 4): members firing again inside a firing incident make one
quiet thread comment naming them; a flapping member is marked and stops making comments; a
re-open after a while is also a reply in the chat, where the mentions go."""

from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.incidents import (
    REFIRE_WINDOW,
    Effect,
    Noise,
    Transition,
    apply_notification,
    tell_refires,
)
from bridge.model import Alert, AlertStatus, Incident, Notification
from bridge.render import RenderOptions, render_message
from bridge.rules import RouteConfig
from bridge.texts import render_comment
from tests.conftest import Bridge, BridgeFactory
from tests.test_incidents import NOW, TTL

ROUTE = RouteConfig(name="default", chat_id=1000, mentions=["@dba_oncall"])
OPTIONS = RenderOptions(timezone=UTC)


def member(n: int, status: AlertStatus, starts: datetime) -> Alert:
    return Alert(
        fingerprint=f"{n:016x}",
        status=status,
        labels={"alertname": "TargetDown", "instance": f"node-{n}:9100"},
        annotations={"summary": f"TargetDown on node-{n}:9100"},
        starts_at=starts,
        ends_at=starts + timedelta(seconds=30) if status is AlertStatus.RESOLVED else None,
    )


def group(*alerts: Alert) -> Notification:
    firing = any(a.status is AlertStatus.FIRING for a in alerts)
    return Notification(
        source="alertmanager",
        receiver="pachca",
        group_key='{}:{alertname="TargetDown"}',
        status=AlertStatus.FIRING if firing else AlertStatus.RESOLVED,
        alerts=alerts,
        common_labels={"alertname": "TargetDown"},
    )


def apply(
    current: Incident | None, note: Notification, now: datetime, noise: Noise | None = None
) -> Transition:
    return apply_notification(
        current,
        note,
        route="default",
        chat_id=1000,
        now=now,
        resolved_ttl=TTL,
        new_ref="ab12cd34ef",
        noise=noise or Noise(),
    )


def flap(incident: Incident, n: int, at: datetime) -> Incident:
    """Member `n` resolves and fires again (a new startsAt) while the others keep firing."""
    others = [a for a in incident.alerts.values() if a.fingerprint != f"{n:016x}"]
    down = apply(incident, group(*others, member(n, AlertStatus.RESOLVED, at)), at)
    incident = down.incident or incident
    up = apply(
        incident,
        group(*others, member(n, AlertStatus.FIRING, at + timedelta(seconds=1))),
        at + timedelta(seconds=1),
    )
    assert up.incident is not None
    assert Effect.COMMENT_REFIRED not in up.effects  # the incident as a whole never stopped
    assert up.effects == (Effect.EDIT,)  # the message follows; no comment, no mention yet
    return up.incident


def opened_with(*members: int) -> Incident:
    transition = apply(None, group(*(member(n, AlertStatus.FIRING, NOW) for n in members)), NOW)
    assert transition.incident is not None
    return transition.incident


def test_members_firing_again_make_one_quiet_comment_naming_them_after_the_window() -> None:
    incident = opened_with(1, 2, 3, 4, 5, 6)
    t = NOW + timedelta(minutes=1)
    for n in (1, 2, 3, 4, 5):  # five re-fires within seconds
        incident = flap(incident, n, t + timedelta(seconds=n * 2))
    assert len(incident.refired_pending) == 5
    early = tell_refires(incident, t + timedelta(seconds=20))
    assert early.effects == ()  # the window is not over: more may come
    told = tell_refires(incident, t + REFIRE_WINDOW + timedelta(seconds=10))
    assert told.effects == (Effect.COMMENT_MEMBERS_REFIRED,)
    assert told.incident is not None and told.incident.refired_pending == []
    comment = render_comment(Effect.COMMENT_MEMBERS_REFIRED, told.incident, ROUTE, OPTIONS)
    for n in (1, 2, 3, 4, 5):
        assert f"TargetDown on node-{n}:9100" in comment
    assert "@dba_oncall" not in comment and "node-6" not in comment
    assert tell_refires(told.incident, t + timedelta(hours=1)).effects == ()  # told once


def test_a_flapping_member_is_marked_and_stops_making_comments_until_it_settles() -> None:
    assert Noise().flap_threshold == 3 and Noise().flap_window == timedelta(minutes=10)
    incident = opened_with(1, 2)
    t = NOW + timedelta(minutes=1)
    for i in range(4):  # the fourth re-fire in ten minutes is over the threshold of 3
        incident = flap(incident, 1, t + timedelta(minutes=i))
        incident = (
            tell_refires(incident, t + timedelta(minutes=i) + REFIRE_WINDOW).incident or incident
        )
    assert incident.flapping == [f"{1:016x}"]
    assert incident.refired_pending == []  # the fourth made no comment
    message = render_message(incident, ROUTE, OPTIONS).content
    assert "〰️ мигает: 4 раз за 10m" in message
    # settled: no re-fire for a whole window, then one is news again
    later = t + timedelta(minutes=30)
    incident = flap(incident, 1, later)
    assert incident.flapping == [] and incident.refired_pending == [f"{1:016x}"]
    assert "мигает" not in render_message(incident, ROUTE, OPTIONS).content


def test_a_reopen_after_the_notice_time_also_replies_in_the_chat_with_the_mentions() -> None:
    incident = opened_with(1)
    resolved = apply(
        incident, group(member(1, AlertStatus.RESOLVED, NOW)), NOW + timedelta(minutes=1)
    )
    assert resolved.incident is not None

    def reopen(after: timedelta, noise: Noise | None = None) -> tuple[Effect, ...]:
        again = group(member(1, AlertStatus.FIRING, NOW + after))
        assert resolved.incident is not None
        return apply(resolved.incident, again, NOW + timedelta(minutes=1) + after, noise).effects

    assert reopen(timedelta(minutes=5)) == (Effect.EDIT, Effect.COMMENT_REFIRED)
    assert reopen(timedelta(minutes=15)) == (
        Effect.EDIT,
        Effect.COMMENT_REFIRED,
        Effect.REPLY_REOPENED,
    )
    assert reopen(timedelta(minutes=15), Noise(reopen_notice_after=None)) == (
        Effect.EDIT,
        Effect.COMMENT_REFIRED,
    )


def test_route_keys_for_noise_are_validated() -> None:
    import pytest
    from pydantic import ValidationError

    route = RouteConfig(
        name="r", chat_id=1, reopen_notice_after="30m", flap_threshold=5, flap_window="1h"
    )
    assert route.noise == Noise(timedelta(minutes=30), 5, timedelta(hours=1))
    assert (
        RouteConfig(name="r", chat_id=1, reopen_notice_after="off").noise.reopen_notice_after
        is None
    )
    for bad in ({"flap_window": "0s"}, {"flap_threshold": 0}, {"reopen_notice_after": "soon"}):
        with pytest.raises(ValidationError):
            RouteConfig(name="r", chat_id=1, **bad)


async def test_end_to_end_reply_on_reopen_and_one_quiet_comment_for_refires(
    make_bridge: BridgeFactory,
) -> None:
    from bridge.scheduler import Scheduler
    from bridge.web.state import INBOX, RULES, STORE

    clock = {"now": NOW}
    bridge: Bridge = await make_bridge()
    bridge.app[INBOX].clock = lambda: clock["now"]  # the bridge's clock for incidents

    async def post(*alerts: Alert) -> None:
        body: dict[str, Any] = {
            "version": "4",
            "groupKey": '{}:{alertname="TargetDown"}',
            "receiver": "pachca",
            "status": "firing"
            if any(a.status is AlertStatus.FIRING for a in alerts)
            else "resolved",
            "commonLabels": {"alertname": "TargetDown", "team": "db"},
            "alerts": [
                {
                    "status": a.status.value,
                    "labels": {**a.labels, "team": "db"},
                    "annotations": a.annotations,
                    "startsAt": a.starts_at.isoformat(),
                    "endsAt": (a.ends_at or datetime(1, 1, 1, tzinfo=NOW.tzinfo)).isoformat(),
                    "fingerprint": a.fingerprint,
                }
                for a in alerts
            ],
        }
        assert (await bridge.post(body)).status == 200
        await bridge.deliver()

    await post(member(1, AlertStatus.FIRING, NOW), member(2, AlertStatus.FIRING, NOW))
    (message,) = bridge.fake.channel_messages()
    # member 1 fires again twice within the window: the message follows, the thread waits
    for k in (1, 2):
        clock["now"] = NOW + timedelta(seconds=10 * k)
        await post(
            member(1, AlertStatus.RESOLVED, NOW + timedelta(seconds=10 * k)),
            member(2, AlertStatus.FIRING, NOW),
        )
        await post(
            member(1, AlertStatus.FIRING, NOW + timedelta(seconds=10 * k + 1)),
            member(2, AlertStatus.FIRING, NOW),
        )
    assert bridge.fake.thread_comments(message["id"]) == []
    scheduler = Scheduler(
        bridge.app[STORE], bridge.app[INBOX], bridge.app[RULES], clock=lambda: clock["now"]
    )
    clock["now"] = NOW + REFIRE_WINDOW + timedelta(seconds=30)
    await scheduler.tick()
    await bridge.deliver()
    (comment,) = bridge.fake.thread_comments(message["id"])
    assert comment.startswith("🔥 Снова сработали: TargetDown on node-1:9100")
    assert "@" not in comment
    # all resolved, then back 20 minutes later: a reply in the chat, mentions there only
    resolve_at = clock["now"]
    await post(
        member(1, AlertStatus.RESOLVED, resolve_at), member(2, AlertStatus.RESOLVED, resolve_at)
    )
    clock["now"] = resolve_at + timedelta(minutes=20)
    await post(member(1, AlertStatus.FIRING, clock["now"]), member(2, AlertStatus.FIRING, NOW))
    (reply,) = bridge.fake.replies(message["id"])
    assert reply.startswith("🔁 Снова горит: **TargetDown**") and "@dba_oncall" in reply
    assert bridge.fake.thread_comments(message["id"])[-1].startswith("🔥 Снова горит")
    assert "@dba_oncall" not in bridge.fake.thread_comments(message["id"])[-1]
    assert len(bridge.fake.channel_messages()) == 1  # still one message
