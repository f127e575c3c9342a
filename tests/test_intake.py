"""Every bad request gets a clear 4xx with a JSON body and changes nothing."""

import json
from typing import Any

import pytest

from bridge.errors import StoreError
from bridge.web.state import METRICS, STORE
from tests.conftest import Bridge, BridgeFactory, fixture_bytes

GOOD = fixture_bytes("alertmanager/02-group-3-firing.json")
WIRE = json.loads(fixture_bytes("alertmanager-wire/requests.json"))


def wire_header(scenario: str, name: str) -> str:
    request = next(r for r in WIRE if r["scenario"] == scenario)
    return next(v for k, v in request["headers"] if k == name)


async def assert_nothing_changed(bridge: Bridge) -> None:
    await bridge.deliver()
    assert bridge.fake.calls == []
    assert (await bridge.store.outbox_stats(0))[:2] == (0, 0.0)
    from bridge.model import incident_key

    assert (
        await bridge.store.load_incident(
            incident_key("alertmanager", "pachca", '{}:{alertname="DiskFull"}', 1001)
        )
        is None
    )


async def refused(bridge: Bridge, status: int, body: bytes | str, **headers: str) -> dict[str, Any]:
    response = await bridge.post(body, headers=headers)
    assert response.status == status
    assert response.content_type == "application/json"
    answer: dict[str, Any] = await response.json()
    assert answer["error"]
    await assert_nothing_changed(bridge)
    return answer


async def test_malformed_json_is_400(bridge: Bridge) -> None:
    answer = await refused(bridge, 400, GOOD[:-20])
    assert "malformed JSON" in answer["error"]


async def test_wrong_schema_is_400_with_field_details(bridge: Bridge) -> None:
    payload = json.loads(GOOD)
    payload["alerts"][0]["startsAt"] = "yesterday"
    payload["version"] = "3"
    answer = await refused(bridge, 400, json.dumps(payload))
    assert any(d.startswith("version:") for d in answer["details"])
    assert any(d.startswith("alerts.0.startsAt:") for d in answer["details"])


async def test_not_json_content_type_is_415(bridge: Bridge) -> None:
    response = await bridge.client.post(
        "/webhook/alertmanager", data=GOOD, headers={"Content-Type": "text/plain"}
    )
    assert response.status == 415
    assert "application/json" in (await response.json())["error"]
    await assert_nothing_changed(bridge)


async def test_body_over_limit_is_413(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(BRIDGE_MAX_BODY="1000")
    assert len(GOOD) > 1000
    answer = await refused(bridge, 413, GOOD)
    assert "1000-byte limit" in answer["error"]


async def test_chunked_body_over_limit_is_413(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(BRIDGE_MAX_BODY="1000")

    async def chunks() -> Any:
        for start in range(0, len(GOOD), 256):
            yield GOOD[start : start + 256]

    response = await bridge.client.post(
        "/webhook/alertmanager", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    await assert_nothing_changed(bridge)


@pytest.mark.parametrize("pause", [0.0, 0.05])
async def test_a_body_is_read_whole_however_it_arrives(bridge: Bridge, pause: float) -> None:
    """With the headers at once (read without waiting), or in pieces with pauses between (read
    as they come): the same notification is recorded, its message the same."""
    import asyncio

    async def pieces() -> Any:
        for start in range(0, len(GOOD), 300):
            yield GOOD[start : start + 300]
            await asyncio.sleep(pause)

    body: Any = GOOD if pause == 0 else pieces()
    response = await bridge.client.post(
        "/webhook/alertmanager", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 200, await response.text()
    assert len((await response.json())["changed"]) == 1
    await bridge.deliver()
    [create] = [c for c in bridge.fake.calls if c.method == "POST"]
    assert "DiskFull" in create.body["message"]["content"]


async def test_default_body_limit_is_one_mebibyte(bridge: Bridge) -> None:
    payload = json.loads(GOOD)
    payload["commonAnnotations"]["padding"] = "x" * (1024 * 1024)
    await refused(bridge, 413, json.dumps(payload))


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        "Bearer",
        "Basic !!!",
        "Basic YWxlcnRtYW5hZ2VyOndyb25n",
        "Token tok-abc",
    ],
)
async def test_missing_or_wrong_bearer_is_401(
    make_bridge: BridgeFactory, authorization: str | None
) -> None:
    bridge = await make_bridge(BRIDGE_WEBHOOK_TOKEN="tok-abc")
    headers = {"Authorization": authorization} if authorization else {}
    response = await bridge.post(GOOD, headers=headers)
    assert response.status == 401
    assert "WWW-Authenticate" in response.headers
    await assert_nothing_changed(bridge)


async def test_auth_is_checked_before_the_body(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(BRIDGE_WEBHOOK_TOKEN="tok-abc")
    await refused(bridge, 401, b"{broken")


async def test_alertmanager_bearer_header_is_accepted(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(BRIDGE_WEBHOOK_TOKEN="tok-abc")
    response = await bridge.post(
        GOOD, headers={"Authorization": wire_header("bearer", "Authorization")}
    )
    assert response.status == 200


async def test_alertmanager_basic_auth_header_is_accepted(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(BRIDGE_WEBHOOK_BASIC_AUTH="alertmanager:s3cret-pass")
    header = wire_header("basic_auth", "Authorization")
    response = await bridge.post(GOOD, headers={"Authorization": header})
    assert response.status == 200
    response = await bridge.post(GOOD, headers={"Authorization": "Bearer s3cret-pass"})
    assert response.status == 401


async def test_either_credential_works_when_both_are_set(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(
        BRIDGE_WEBHOOK_TOKEN="tok-abc", BRIDGE_WEBHOOK_BASIC_AUTH="alertmanager:s3cret-pass"
    )
    for header in ("Bearer tok-abc", wire_header("basic_auth", "Authorization")):
        assert (await bridge.post(GOOD, headers={"Authorization": header})).status == 200


async def test_store_failure_answers_503_so_alertmanager_retries(bridge: Bridge) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise StoreError("disk full")

    bridge.app[STORE].save_incident = broken  # type: ignore[method-assign]
    response = await bridge.post(GOOD)
    assert response.status == 503
    assert "retry" in (await response.json())["error"]
    # and it is not remembered as seen: the retry is processed in full
    del bridge.app[STORE].save_incident  # type: ignore[attr-defined]
    response = await bridge.post(GOOD)
    assert (await response.json())["changed"]


async def test_unknown_path_and_method_answer_json(bridge: Bridge) -> None:
    response = await bridge.client.get("/webhook/alertmanager")
    assert response.status == 405
    assert (await response.json())["error"]
    response = await bridge.client.get("/nowhere")
    assert response.status == 404
    assert (await response.json())["error"]


async def test_refusals_are_counted(bridge: Bridge) -> None:
    await bridge.post(b"{")
    metric = bridge.app[METRICS].rejected.labels("alertmanager", "400")
    assert metric._value.get() == 1


async def test_health_ready_and_metrics(bridge: Bridge) -> None:
    assert (await bridge.client.get("/healthz")).status == 200
    ready = await bridge.client.get("/readyz")
    assert ready.status == 200
    await bridge.post_fixture("alertmanager/02-group-3-firing.json")
    await bridge.post_fixture("alertmanager/03-group-3-repeat.json")
    await bridge.deliver()
    text = await (await bridge.client.get("/metrics")).text()
    assert 'bridge_notifications_received_total{source="alertmanager",status="firing"} 2.0' in text
    assert 'bridge_notifications_deduplicated_total{source="alertmanager"} 1.0' in text
    assert 'bridge_alerts_received_total{source="alertmanager",status="firing"} 6.0' in text
    assert 'bridge_pachca_requests_total{code="201",endpoint="POST /messages"} 1.0' in text


async def test_readyz_fails_when_the_store_does(bridge: Bridge) -> None:
    async def down() -> None:
        raise StoreError("unreachable")

    bridge.app[STORE].ping = down  # type: ignore[method-assign]
    response = await bridge.client.get("/readyz")
    assert response.status == 503
    assert "store" in (await response.json())["problems"][0]


async def test_copies_waiting_on_a_failed_commit_fail_too(bridge: Bridge) -> None:
    """The second copy of an HA pair waits for the first's commit; if that fails, both answer
    503 so Alertmanager retries (nothing is recorded)."""
    import asyncio

    async def slow_broken(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(0.05)
        raise StoreError("disk full")

    bridge.app[STORE].save_incident = slow_broken  # type: ignore[method-assign]
    first, second = await asyncio.gather(bridge.post(GOOD), bridge.post(GOOD))
    assert (first.status, second.status) == (503, 503)
    del bridge.app[STORE].save_incident  # type: ignore[attr-defined]
    assert (await (await bridge.post(GOOD)).json())["changed"]


async def test_payloads_of_other_alertmanager_speaking_senders_make_one_message_each(
    bridge: Bridge,
) -> None:
    """An Alertmanager before 0.19 (no fingerprints, no alert statuses) and a script (no
    version, no groupKey) are understood; each sent twice and then resolved keeps to one
    message that ends resolved."""
    from tests.test_sources_alertmanager import OLD_ALERTMANAGER, SCRIPT

    for payload in (OLD_ALERTMANAGER, SCRIPT):
        for _ in range(2):
            response = await bridge.post(json.dumps(payload))
            assert response.status == 200, await response.text()
        await bridge.deliver()
    messages = bridge.fake.channel_messages()
    assert len(messages) == 2
    resolved = json.loads(json.dumps(SCRIPT))
    resolved["status"] = "resolved"
    for alert in resolved["alerts"]:
        del alert["status"]  # a resolved group resolves its alerts
    assert (await bridge.post(json.dumps(resolved))).status == 200
    await bridge.deliver()
    assert len(bridge.fake.channel_messages()) == 2
    script_message = next(m for m in bridge.fake.channel_messages() if "BackupLate" in m["content"])
    assert "РЕШЕНО" in script_message["content"]
