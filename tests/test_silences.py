"""Silence rules without Alertmanager running: the pure follow-up logic, and how the bridge
answers when Alertmanager is unreachable or refuses (with its captured answers)."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.alertmanager_api import (
    AlertmanagerClient,
    AlertmanagerCluster,
    AlertmanagerError,
    Why,
)
from bridge.incidents import Effect
from bridge.model import AlertStatus, IncidentState
from bridge.silences import (
    absence_evidence,
    drop_stale_silence,
    follow_alertmanager,
    made_for,
    silenced,
)
from bridge.web.state import OUTBOX
from tests.conftest import BridgeFactory, Clock, fixture_json
from tests.test_callbacks import ALICE, click_body, data_buttons, dms, press
from tests.test_render import fixture_incident

NOW = datetime(2026, 11, 24, 13, 10, tzinfo=UTC)
SILENCE_ID = "48bb06e9-3cc5-4ef8-941f-480e1420aae0"


def am_alerts(name: str) -> dict[str, dict[str, Any]]:
    body = fixture_json(f"alertmanager-api/{name}")["response"]["body"]
    return {a["fingerprint"]: a for a in body}


def silence_demo() -> Any:
    """The SilenceDemo incident (app-1..3) as the bridge holds it."""
    return fixture_incident("alertmanager/13-after-silences-expired.json")


def test_every_alert_silenced_in_alertmanager_shows_the_incident_silenced() -> None:
    alerts = {
        fp: {**a, "status": {"state": "suppressed", "silencedBy": [SILENCE_ID], "inhibitedBy": []}}
        for fp, a in am_alerts("43-alerts-all-unfiltered.json").items()
    }
    silences = {
        SILENCE_ID: {"id": SILENCE_ID, "createdBy": "Иван", "endsAt": "2026-11-24T15:07:52.238Z"}
    }
    after, effects = follow_alertmanager(silence_demo(), alerts, silences, NOW)
    assert effects == (Effect.EDIT, Effect.COMMENT_SILENCED)
    assert after.silence_id == SILENCE_ID and after.silenced_by == "Иван"
    assert after.silenced_until == datetime(2026, 11, 24, 15, 7, 52, 238000, tzinfo=UTC)


def test_one_of_three_silenced_is_not_the_incident_silenced() -> None:
    """06: only app-2 silenced; the others still notify."""
    incident = silence_demo()
    alerts = am_alerts("43-alerts-all-unfiltered.json") | am_alerts(
        "06-alerts-filtered-one-silenced.json"
    )
    assert follow_alertmanager(incident, alerts, {}, NOW) == (incident, ())


def test_silence_gone_while_alerts_fire_drops_the_silenced_state() -> None:
    incident = silenced(silence_demo(), SILENCE_ID, NOW + timedelta(hours=1), "Иван", NOW)
    active = {
        fp: {**a, "status": {"state": "active", "silencedBy": [], "inhibitedBy": []}}
        for fp, a in am_alerts("43-alerts-all-unfiltered.json").items()
    }
    after, effects = follow_alertmanager(incident, active, {}, NOW)
    assert effects == (Effect.EDIT, Effect.COMMENT_SILENCE_ENDED)
    assert after.silence_id is None


def test_silenced_alerts_gone_from_alertmanager_resolve_the_incident() -> None:
    incident = silenced(silence_demo(), SILENCE_ID, NOW + timedelta(hours=1), "Иван", NOW)
    gone = frozenset(a.fingerprint for a in incident.firing)
    after, effects = follow_alertmanager(incident, {}, {}, NOW, gone)
    assert effects == (Effect.EDIT, Effect.COMMENT_RESOLVED)
    assert after.state is IncidentState.RESOLVED
    assert after.silence_id == SILENCE_ID and not after.finished  # shown while it lasts
    assert all(a.inferred for a in after.alerts.values())  # provisional: a firing re-opens
    # absent, but not (yet) evidence: nothing changes
    assert follow_alertmanager(incident, {}, {}, NOW) == (incident, ())


def test_absence_is_evidence_only_from_a_settled_alertmanager_and_twice_in_a_row() -> None:
    firing = frozenset({"a", "b"})
    present = {"b": {"fingerprint": "b"}}
    # just started: nothing is evidence, and nothing is remembered
    assert absence_evidence(firing, {}, False, frozenset({"a", "b"})) == (frozenset(), frozenset())
    # settled, first time missing: remembered, not yet gone
    gone, missing = absence_evidence(firing, present, True, frozenset())
    assert gone == frozenset() and missing == frozenset({"a"})
    # missing again at the next check: gone
    assert absence_evidence(firing, present, True, missing)[0] == frozenset({"a"})
    # back in between: starts over
    assert absence_evidence(firing, {**present, "a": {}}, True, missing)[1] == frozenset()


def test_one_alert_of_a_silenced_incident_gone_is_shown_resolved_the_rest_silenced() -> None:
    incident = silenced(silence_demo(), SILENCE_ID, NOW + timedelta(hours=1), "Иван", NOW)
    alerts = {
        fp: {**a, "status": {"state": "suppressed", "silencedBy": [SILENCE_ID], "inhibitedBy": []}}
        for fp, a in am_alerts("43-alerts-all-unfiltered.json").items()
    }
    first = sorted(alerts)[0]
    del alerts[first]
    after, effects = follow_alertmanager(incident, alerts, {}, NOW, frozenset({first}))
    assert effects == (Effect.EDIT,)
    assert after.state is IncidentState.FIRING and after.silence_id == SILENCE_ID
    assert after.alerts[first].status is AlertStatus.RESOLVED and after.alerts[first].inferred
    assert len(after.firing) == len(incident.firing) - 1


async def test_a_cluster_reads_the_union_of_the_replicas_that_answer() -> None:
    """Replica A is down, B and C answer: an alert only C holds is present, silencedBy is
    merged, absence counts if any answering replica has settled; all down is an error."""
    status = json.dumps({"uptime": "2026-11-24T13:00:00Z"})
    fresh = json.dumps({"uptime": "2026-11-24T13:09:30Z"})

    def replica(alerts: list[dict[str, Any]], uptime: str) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            body = {
                "/api/v2/alerts": json.dumps(alerts),
                "/api/v2/silences": json.dumps([{"id": "s1"}]),
                "/api/v2/status": uptime,
            }[request.path]
            return web.Response(text=body, content_type="application/json")

        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        return app

    def am(fp: str, by: list[str]) -> dict[str, Any]:
        return {"fingerprint": fp, "status": {"state": "suppressed", "silencedBy": by}}

    b = TestServer(replica([am("x", ["s1"])], fresh))
    c = TestServer(replica([am("x", ["s2"]), am("y", [])], status))
    for server in (b, c):
        await server.start_server()
    urls = ["http://127.0.0.1:9", str(b.make_url("")), str(c.make_url(""))]
    cluster = AlertmanagerCluster([AlertmanagerClient(u.rstrip("/"), None) for u in urls])
    view = await cluster.view(120, NOW)
    assert set(view.alerts) == {"x", "y"}
    assert view.alerts["x"]["status"]["silencedBy"] == ["s1", "s2"]
    assert set(view.silences) == {"s1"} and view.settled
    assert await cluster.alerts() == view.alerts  # alerts alone: the same union
    assert not (await AlertmanagerCluster(cluster.clients[:2]).view(120, NOW)).settled
    down = AlertmanagerCluster(cluster.clients[:1])
    with pytest.raises(AlertmanagerError) as failed:
        await down.view(120, NOW)
    assert failed.value.failure.why is Why.UNREACHABLE
    with pytest.raises(AlertmanagerError):
        await down.alerts()
    await cluster.close()
    for server in (b, c):
        await server.close()


def test_a_silence_long_past_its_end_is_dropped_without_alertmanager() -> None:
    incident = silenced(silence_demo(), SILENCE_ID, NOW - timedelta(minutes=6), "Иван", NOW)
    after, effects = drop_stale_silence(incident, NOW)
    assert effects and after.silence_id is None
    fresh = silenced(silence_demo(), SILENCE_ID, NOW + timedelta(minutes=6), "Иван", NOW)
    assert drop_stale_silence(fresh, NOW) == (fresh, ())


async def captured_alertmanager(name: str) -> TestServer:
    """Answers every request with one captured Alertmanager response."""
    response = fixture_json(f"alertmanager-api/{name}")["response"]

    async def answer(request: web.Request) -> web.Response:
        return web.Response(
            status=response["status"],
            text=json.dumps(response["body"]),
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # nothing listens on the discard port
        ("http://127.0.0.1:9", "Не получилось: Alertmanager недоступен."),
        ("captured:22-err-bad-regex.json", "Не получилось: Alertmanager отказал (HTTP 400 "),
        ("captured:27-err-missing-comment.json", "Не получилось: Alertmanager отказал (HTTP 422"),
    ],
)
async def test_alertmanager_failing_tells_the_presser_and_changes_nothing(
    make_bridge: BridgeFactory, url: str, reason: str
) -> None:
    server = None
    if url.startswith("captured:"):
        server = await captured_alertmanager(url.removeprefix("captured:"))
        url = str(server.make_url("")).rstrip("/")
    bridge = await make_bridge(ALERTMANAGER_URL=url)
    clock = Clock()
    bridge.app[OUTBOX].clock = clock
    response = await bridge.post_fixture("alertmanager/01-single-firing.json")
    (ref,) = (await response.json())["changed"]
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    before = json.dumps(message, sort_keys=True)
    await press(bridge, click_body(f"silence:{ref}:1h"))
    for _ in range(4):  # bounded retries for what may pass, then the answer
        await bridge.deliver()
        clock.now += 600
    (dm,) = dms(bridge, ALICE)
    assert dm.startswith("Не получилось:") and reason in dm and dm.endswith("Ничего не изменено.")
    assert json.dumps(message, sort_keys=True) == before
    assert f"silence:{ref}:1h" in data_buttons(message)
    if server is not None:
        await server.close()


async def test_group_without_labels_cannot_be_silenced(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(ALERTMANAGER_URL="http://127.0.0.1:9")
    payload = fixture_json("alertmanager/01-single-firing.json")
    payload["groupLabels"] = {}
    response = await bridge.post(payload)
    (ref,) = (await response.json())["changed"]
    await press(bridge, click_body(f"silence:{ref}:1h"))
    await bridge.deliver()
    assert dms(bridge, ALICE)[-1].startswith("«HighCPU» нельзя заглушить")


def _resolved_under_silence() -> Any:
    incident = silenced(silence_demo(), SILENCE_ID, NOW + timedelta(hours=1), "Иван", NOW)
    gone = frozenset(a.fingerprint for a in incident.firing)
    after, _ = follow_alertmanager(incident, {}, {}, NOW, gone)
    assert after.state is IncidentState.RESOLVED and after.silence_id == SILENCE_ID
    return after


ACTIVE = {SILENCE_ID: {"id": SILENCE_ID, "status": {"state": "active"}}}


def test_a_refire_under_the_silence_of_a_resolved_incident_reopens_it_silenced() -> None:
    """Alertmanager sends nothing for it: the check-back sees the alert back (newer startsAt,
    silenced by the silence the message shows) and re-opens it, shown silenced, no pings."""
    resolved = _resolved_under_silence()
    fp = sorted(resolved.alerts)[0]
    back = {
        fp: {
            "fingerprint": fp,
            "startsAt": (NOW + timedelta(minutes=5)).isoformat(),
            "annotations": {"summary": "again"},
            "status": {"state": "suppressed", "silencedBy": [SILENCE_ID]},
        }
    }
    after, effects = follow_alertmanager(resolved, back, ACTIVE, NOW + timedelta(minutes=6))
    assert effects == (Effect.EDIT,)  # no "firing again" comment: the silence asked for quiet
    assert after.state is IncidentState.FIRING and after.silence_id == SILENCE_ID
    assert after.alerts[fp].status is AlertStatus.FIRING
    assert after.alerts[fp].starts_at == NOW + timedelta(minutes=5)
    # the same startsAt as the resolution: nothing new
    same = {fp: {**back[fp], "startsAt": resolved.alerts[fp].starts_at.isoformat()}}
    assert follow_alertmanager(resolved, same, ACTIVE, NOW) == (resolved, ())


def test_the_silence_of_a_resolved_incident_leaves_the_message_when_it_ends() -> None:
    resolved = _resolved_under_silence()
    assert follow_alertmanager(resolved, {}, ACTIVE, NOW) == (resolved, ())
    expired = {SILENCE_ID: {"id": SILENCE_ID, "status": {"state": "expired"}}}
    after, effects = follow_alertmanager(resolved, {}, expired, NOW)
    assert effects == (Effect.EDIT,) and after.silence_id is None and after.finished


def test_a_silence_is_taken_for_an_earlier_attempts_only_if_exactly_the_incidents() -> None:
    """Adopted after a lost answer: not over, exactly the group's matchers, and a comment
    naming the incident; anything else (a person's silence from the UI, a wider or regex
    one, another incident's, an expired one) is not the press's."""
    matchers = {"alertname": "DiskFull", "team": "db"}
    ours: dict[str, Any] = {
        "id": "s1",
        "status": {"state": "active"},
        "matchers": [
            {"name": "team", "value": "db", "isRegex": False, "isEqual": True},
            {"name": "alertname", "value": "DiskFull", "isRegex": False},
        ],
        "comment": "From Pachca chat 1000: incident r1 «DiskFull» (pachca-alert-bridge)",
    }
    assert made_for(ours, matchers, "r1")
    assert made_for({**ours, "status": {"state": "pending"}}, matchers, "r1")
    assert not made_for({**ours, "status": {"state": "expired"}}, matchers, "r1")
    assert not made_for(ours, matchers, "r12")
    assert not made_for({**ours, "comment": "maintenance, incident r1 too"}, matchers, "r1")
    assert not made_for(ours, {"alertname": "DiskFull"}, "r1")
    regex = [{**m, "isRegex": True} for m in ours["matchers"]]
    assert not made_for({**ours, "matchers": regex}, matchers, "r1")
    negated = [{**m, "isEqual": False} for m in ours["matchers"]]
    assert not made_for({**ours, "matchers": negated}, matchers, "r1")
    assert not made_for({**ours, "matchers": "team=db"}, matchers, "r1")
    assert not made_for({"id": "s2"}, matchers, "r1")
