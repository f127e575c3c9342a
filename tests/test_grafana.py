"""Grafana's webhook contact point: same incidents, dedup and buttons; its signature."""

import hashlib
import hmac
import time

import pytest

from tests.conftest import FIXTURES, Bridge, BridgeFactory, fixture_bytes
from tests.test_callbacks import data_buttons

GRAFANA = sorted(str(p.relative_to(FIXTURES)) for p in (FIXTURES / "grafana").glob("*.json"))


@pytest.mark.parametrize("name", GRAFANA)
@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_every_grafana_payload_is_accepted(bridge: Bridge, name: str, method: str) -> None:
    response = await bridge.client.request(
        method,
        "/webhook/grafana",
        data=fixture_bytes(name),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()
    await bridge.deliver()
    firing = b'"status": "firing"' in fixture_bytes(name)
    assert len(bridge.fake.channel_messages()) == (1 if firing else 0)


async def post_grafana(bridge: Bridge, name: str, **headers: str) -> int:
    response = await bridge.post(fixture_bytes(name), path="/webhook/grafana", headers=headers)
    return response.status


async def test_firing_partial_and_full_resolution_edit_one_message(bridge: Bridge) -> None:
    for name in (
        "grafana/01-firing-two-alerts.json",
        "grafana/01-firing-two-alerts.json",
        "grafana/02-one-resolved-one-firing.json",
        "grafana/03-all-resolved.json",
    ):
        assert await post_grafana(bridge, name) == 200
        await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    assert message["content"].startswith("✅ **РЕШЕНО**")
    edits = [c for c in bridge.fake.ok_calls("/messages/{id}") if c.method == "PUT"]
    assert len(edits) == 2  # the repeat cost nothing


async def test_values_links_and_image_are_shown(bridge: Bridge) -> None:
    await post_grafana(bridge, "grafana/05-firing-values-image.json")
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    content = message["content"]
    assert "значения: `A=97.31, B=97.31, C=1`" in content
    assert "[панель](https://grafana.example.com/d/rYdddlPWk?" in content
    assert (
        "[снимок](https://grafana.example.com/public/img/attachments/q1w2e3r4t5y6.png)" in content
    )
    assert "[заглушить в Grafana](https://grafana.example.com/alerting/silence/new?" in content
    urls = [b["url"] for row in message["buttons"] for b in row if "url" in b]
    assert any(u.startswith("https://grafana.example.com/d/rYdddlPWk") for u in urls)


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("grafana/04-datasource-nodata.json", "NoData: Postgres replication lag"),
        ("grafana/06-datasource-error.json", "DatasourceError: Postgres replication lag"),
    ],
)
async def test_nodata_and_datasource_errors_say_what_broke(
    bridge: Bridge, name: str, title: str
) -> None:
    await post_grafana(bridge, name)
    await bridge.deliver()
    (message,) = bridge.fake.channel_messages()
    assert f"**{title}**" in message["content"].splitlines()[0]
    if "error" in name:
        assert "⚠️ [sse.dataQueryError] failed to execute query" in message["content"]


async def test_silence_offered_for_grafana_only_with_grafanas_api(
    make_bridge: BridgeFactory,
) -> None:
    only_am = await make_bridge(ALERTMANAGER_URL="http://127.0.0.1:9")
    await post_grafana(only_am, "grafana/05-firing-values-image.json")
    await only_am.deliver()
    (message,) = only_am.fake.channel_messages()
    assert not any(d.startswith("silence:") for d in data_buttons(message))
    only_am.fake.messages.clear()
    with_grafana = await make_bridge(GRAFANA_URL="https://grafana.example.com", GRAFANA_TOKEN="g")
    await post_grafana(with_grafana, "grafana/05-firing-values-image.json")
    await with_grafana.deliver()
    (message,) = with_grafana.fake.channel_messages()
    assert any(d.startswith("silence:") for d in data_buttons(message))


def sign(body: bytes, secret: str = "grafana-secret", timestamp: str | None = None) -> str:
    message = f"{timestamp}:".encode() + body if timestamp else body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("header", ["X-Grafana-Alerting-Signature", "X-Grafana-Alert-Signature"])
async def test_signed_requests_pass_with_either_header(
    make_bridge: BridgeFactory, header: str
) -> None:
    bridge = await make_bridge(GRAFANA_WEBHOOK_SECRET="grafana-secret")
    body = fixture_bytes("grafana/01-firing-two-alerts.json")
    assert (
        await post_grafana(bridge, "grafana/01-firing-two-alerts.json", **{header: sign(body)})
        == 200
    )


@pytest.mark.parametrize("signature", [None, "0" * 64, sign(b"another body")])
async def test_unsigned_or_forged_requests_are_401(
    make_bridge: BridgeFactory, signature: str | None
) -> None:
    bridge = await make_bridge(GRAFANA_WEBHOOK_SECRET="grafana-secret")
    headers = {"X-Grafana-Alerting-Signature": signature} if signature else {}
    assert await post_grafana(bridge, "grafana/01-firing-two-alerts.json", **headers) == 401
    await bridge.deliver()
    assert bridge.fake.calls == []


async def test_timestamped_signature_and_its_freshness(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(
        GRAFANA_WEBHOOK_SECRET="grafana-secret",
        GRAFANA_SIGNATURE_HEADER="X-Signature",
        GRAFANA_TIMESTAMP_HEADER="X-Timestamp",
    )
    name = "grafana/01-firing-two-alerts.json"
    body = fixture_bytes(name)
    now = str(int(time.time()))
    assert (
        await post_grafana(
            bridge, name, **{"X-Signature": sign(body, timestamp=now), "X-Timestamp": now}
        )
        == 200
    )
    old = str(int(time.time()) - 3600)
    assert (
        await post_grafana(
            bridge, name, **{"X-Signature": sign(body, timestamp=old), "X-Timestamp": old}
        )
        == 401
    )
    # signed without the timestamp while one is required
    assert (
        await post_grafana(bridge, name, **{"X-Signature": sign(body), "X-Timestamp": now}) == 401
    )


async def test_grafana_payload_to_the_alertmanager_endpoint_is_refused(bridge: Bridge) -> None:
    response = await bridge.post(fixture_bytes("grafana/01-firing-two-alerts.json"))
    assert response.status == 400
    assert any(d.startswith("version:") for d in (await response.json())["details"])
