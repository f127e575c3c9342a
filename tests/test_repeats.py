"""Byte-identical repeats answered from memory (SPEC 6, #18 goal 4): the same answer, the
same metrics and the same chat as when every body is parsed; never for a body whose reading
depends on when it arrived; never past a check a body must pass (signature)."""

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest

import bridge.sources.alertmanager as alertmanager
from bridge.inbox import body_id
from bridge.web.state import INBOX, METRICS
from tests.conftest import Bridge, BridgeFactory, fixture_bytes, fixture_json
from tests.test_grafana import sign

FIRING = fixture_bytes("alertmanager/02-group-3-firing.json")
HA_COPY = FIRING.replace(b"http://vm:19093", b"http://vm:29093")  # the HA pair's other one
SEQUENCE = [
    FIRING,
    FIRING,
    HA_COPY,
    fixture_bytes("alertmanager/03-group-3-repeat.json"),  # a real repeat: the same bytes
    fixture_bytes("alertmanager/04-group-1-resolved-2-firing.json"),
    FIRING,  # an old copy arriving late: its bytes were seen, but the incident moved on
    fixture_bytes("alertmanager/05-group-all-resolved.json"),
    FIRING,
    fixture_bytes("alertmanager/15-flap-fired-again-new-startsAt.json"),  # another group
    FIRING,  # so this one repeats the one before it
]


def counters(bridge: Bridge) -> list[str]:
    """The intake's counters as exported (notifications, alerts, deduplicated)."""
    text = generate_latest(bridge.app[METRICS].registry).decode()
    wanted = ("bridge_notifications_received_total", "bridge_alerts_received_total")
    wanted += ("bridge_notifications_deduplicated_total",)
    return sorted(line for line in text.splitlines() if line.startswith(wanted))


async def run(bridge: Bridge, bodies: list[bytes]) -> tuple[list[Any], list[str], list[str]]:
    answers = []
    before = len(bridge.fake.channel_messages())  # the bridges of a test share one Pachca
    for body in bodies:
        response = await bridge.post(body)
        assert response.status == 200
        answer = await response.json()
        answers.append((len(answer["changed"]), answer["unchanged"]))
        await bridge.deliver()
    shown = [m["content"] for m in bridge.fake.channel_messages()[before:]]
    return answers, counters(bridge), shown


async def test_answers_from_memory_are_what_parsing_every_body_gives(
    make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert HA_COPY != FIRING
    parsed = []
    validated = alertmanager.validated
    monkeypatch.setattr(
        alertmanager,
        "validated",
        lambda *a: parsed.append(1) or validated(*a),  # type: ignore[func-returns-value]
    )
    remembering = await make_bridge()
    remembered = await run(remembering, SEQUENCE)
    from_memory = len(SEQUENCE) - len(parsed)
    # every body made unique (trailing spaces: other bytes, the same JSON): all parsed
    parsing = await make_bridge()
    parsed.clear()
    unique = [body + b" " * n for n, body in enumerate(SEQUENCE)]
    assert await run(parsing, unique) == remembered
    assert len(parsed) == len(SEQUENCE)
    assert from_memory == 3, "the second, the captured repeat and the last"
    assert remembered[0][1] == remembered[0][9] == (0, 1)
    assert remembered[0][5] == (0, 1), "the late copy changes nothing, parsed or not"


def arriving_with_end(end: datetime) -> bytes:
    """A notification whose alerts carry no status: `endsAt` decides (Alertmanager's rule)."""
    body = fixture_json("alertmanager/01-single-firing.json")
    body.pop("status", None)
    for alert in body["alerts"]:
        alert.pop("status", None)
        alert["endsAt"] = end.isoformat().replace("+00:00", "Z")
    return json.dumps(body).encode()


async def test_a_body_read_by_its_arrival_time_is_read_again(bridge: Bridge) -> None:
    body = arriving_with_end(datetime.now(UTC) + timedelta(seconds=1.5))
    first = await bridge.post(body)
    assert (await first.json())["changed"], "firing: endsAt is still ahead"
    assert bridge.app[INBOX].repeat_of("alertmanager", body_id("alertmanager", body)) is None
    time.sleep(1.6)
    again = await bridge.post(body)  # the same bytes, now past endsAt: resolved
    assert (await again.json())["changed"], "answered from memory as a repeat"
    (incident,) = [s.incident for s in await bridge.store.all_incidents()]
    assert incident.state == "resolved"


async def test_a_repeat_still_needs_its_signature(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(GRAFANA_WEBHOOK_SECRET="grafana-secret")
    body = fixture_bytes("grafana/01-firing-two-alerts.json")
    headers = {"X-Grafana-Alerting-Signature": sign(body)}
    for _ in range(2):
        assert (await bridge.post(body, headers, "/webhook/grafana")).status == 200
    assert bridge.app[INBOX].repeat_of("grafana", body_id("grafana", body)) is not None
    forged = {"X-Grafana-Alerting-Signature": "0" * 64}
    assert (await bridge.post(body, forged, "/webhook/grafana")).status == 401
    assert (await bridge.post(body, path="/webhook/grafana")).status == 401
