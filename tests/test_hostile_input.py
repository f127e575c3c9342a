"""Whatever a client sends, the answer is a 4xx with a JSON body, nothing is stored, and the
next valid request works: edge dates, absurd JSON, odd encodings and header bytes, slow bodies.
"""

import asyncio
import gzip
import hashlib
import hmac
import json
import time
import zlib
from typing import Any

import pytest
from aiohttp import web

from bridge.metrics import Metrics
from bridge.pachca import DryRunPachca
from bridge.rules import Rules
from bridge.settings import Settings
from bridge.store import open_store
from bridge.web.app import create_app
from tests.conftest import SIGNING_SECRET, Bridge, BridgeFactory, fixture_bytes, fixture_json

FIRING = "alertmanager/02-group-3-firing.json"
GRAFANA = "grafana/01-firing-two-alerts.json"


def with_alert(field: str, value: str, status: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = fixture_json(FIRING)
    body["alerts"][0][field] = value
    if status:
        body["status"] = status
        for alert in body["alerts"]:
            alert["status"] = status
    return body


async def nothing_stored(bridge: Bridge) -> bool:
    backlog = await bridge.store.outbox_stats(0)
    return backlog.depth == 0 and await bridge.store.all_incidents() == []


async def still_works(bridge: Bridge) -> None:
    response = await bridge.post(fixture_bytes(FIRING))
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    "starts_at",
    [
        "9999-12-31T23:59:59-14:00",  # the year 10000 in UTC
        "0001-01-01T00:00:00+14:00",  # before the year 1 in UTC
        "0001-01-01T00:00:00Z",  # Go's zero time: no start at all
        "1969-12-31T23:59:59Z",
        "9000-01-01T00:00:00Z",
    ],
)
async def test_a_start_no_time_zone_can_show_is_refused_naming_the_field(
    make_bridge: BridgeFactory, starts_at: str
) -> None:
    bridge = await make_bridge(BRIDGE_TIMEZONE="America/Los_Angeles")
    response = await bridge.post(with_alert("startsAt", starts_at))
    assert response.status == 400
    answer = await response.json()
    assert any(d.startswith("alerts.0.startsAt") for d in answer["details"]), answer
    assert await nothing_stored(bridge)
    await still_works(bridge)


async def test_a_start_without_utc_offset_is_refused_and_the_alert_still_resolves(
    bridge: Bridge,
) -> None:
    response = await bridge.post(with_alert("startsAt", "2026-11-24T12:28:40"))
    assert response.status == 400
    assert "alerts.0.startsAt" in " ".join((await response.json())["details"])
    assert await nothing_stored(bridge)
    await still_works(bridge)
    resolved = fixture_json(FIRING)
    resolved["status"] = "resolved"
    for alert in resolved["alerts"]:
        alert["status"] = "resolved"
        alert["endsAt"] = "2026-11-24T13:00:00Z"
    assert (await bridge.post(resolved)).status == 200


async def test_go_zero_time_as_end_means_not_ended(bridge: Bridge) -> None:
    response = await bridge.post(with_alert("endsAt", "0001-01-01T00:00:00Z"))
    assert response.status == 200
    await bridge.deliver()
    assert len(bridge.fake.channel_messages()) == 1


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"version": "4", "x": ' + b"9" * 5000 + b"}", "unreadable JSON"),
        (b"[" * 10000 + b"]" * 10000, "nested too deeply"),
        (
            fixture_bytes(FIRING).replace(b'"job": "node"', b'"job": "\\ud800"'),
            "lone UTF-16 surrogate",
        ),
        (fixture_bytes(FIRING).replace(b'"node"', b'"\xff\xfe"'), "not UTF-8"),
    ],
    ids=["5000-digit-int", "nested-10000", "lone-surrogate", "not-utf8"],
)
async def test_absurd_json_is_a_400(bridge: Bridge, body: bytes, why: str) -> None:
    response = await bridge.post(body)
    assert response.status == 400
    assert why in (await response.json())["error"]
    assert await nothing_stored(bridge)
    await still_works(bridge)


async def test_compressed_bodies_are_read_and_garbage_or_unknown_encodings_refused(
    bridge: Bridge,
) -> None:
    gzipped = await bridge.post(
        gzip.compress(fixture_bytes(FIRING)), headers={"Content-Encoding": "gzip"}
    )
    assert gzipped.status == 200, await gzipped.text()
    deflated = await bridge.post(
        zlib.compress(fixture_bytes("alertmanager/01-single-firing.json")),
        headers={"Content-Encoding": "deflate"},
    )
    assert deflated.status == 200, await deflated.text()
    before = len(await bridge.store.all_incidents())
    for encoding, body, status in [
        ("deflate", b"garbage!!", 400),
        ("gzip", b"\x1f\x8b garbage", 400),
        ("gzip", gzip.compress(fixture_bytes(FIRING))[:-20], 400),  # cut short
        ("br", b"garbage!!", 415),
        ("zstd", b"garbage!!", 415),
    ]:
        response = await bridge.post(body, headers={"Content-Encoding": encoding})
        assert response.status == status, (encoding, await response.text())
        assert response.content_type == "application/json"
        assert "error" in await response.json()
    assert len(await bridge.store.all_incidents()) == before


async def test_a_compressed_body_is_held_to_the_limit_after_decoding(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(BRIDGE_MAX_BODY="100000")
    bomb = gzip.compress(b'{"pad": "' + b" " * 10_000_000 + b'"}')
    assert len(bomb) < 100_000
    response = await bridge.post(bomb, headers={"Content-Encoding": "gzip"})
    assert response.status == 413
    assert await nothing_stored(bridge)


# -- bytes no HTTP client library sends: a raw socket ----------------------------------------


async def raw_request(
    port: int, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, bytes, bytes]:
    """(status, Content-Type, body) of one POST written byte for byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"POST " + path.encode() + b" HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    writer.write(head + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    head_part, _, content = rest.partition(b"\r\n\r\n")
    content_type = next(
        (
            line.split(b":", 1)[1].strip()
            for line in head_part.split(b"\r\n")
            if line.lower().startswith(b"content-type:")
        ),
        b"",
    )
    return int(status_line.split()[1]), content_type, content


@pytest.fixture
async def served(rules: Rules) -> Any:
    """The bridge on a real port (intake token, Grafana signature, callbacks all on)."""
    settings = Settings.from_environ(
        {
            "BRIDGE_STORE": "memory://",
            "PACHCA_SIGNING_SECRET": SIGNING_SECRET,
            "BRIDGE_WEBHOOK_TOKEN": "intake-token",
            "GRAFANA_WEBHOOK_SECRET": "grafana-secret",
            "BRIDGE_READ_TIMEOUT": "1s",
        }
    )
    store = open_store("memory://")
    app = create_app(settings, rules, store, DryRunPachca(), Metrics(), run_outbox=False)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port, store
    await runner.cleanup()


JSON_TYPE = [(b"Content-Type", b"application/json")]


async def test_header_bytes_that_are_not_utf8_are_refused_not_crashed_on(served: Any) -> None:
    port, store = served
    body = fixture_bytes(FIRING)
    cases = [
        ("/webhook/alertmanager", [(b"Authorization", b"Bearer \xff\xfe\x80")]),
        ("/webhook/alertmanager", [(b"Authorization", b"Basic \xff\xfe\x80")]),
        ("/pachca/webhook", [(b"Pachca-Signature", b"\xff\xfe\x80")]),
        (
            "/webhook/grafana",
            [
                (b"Authorization", b"Bearer intake-token"),
                (b"X-Grafana-Alerting-Signature", b"\xff\xfe\x80"),
            ],
        ),
    ]
    for path, headers in cases:
        status, content_type, content = await raw_request(port, path, JSON_TYPE + headers, body)
        assert status == 401, (path, content)
        assert content_type.startswith(b"application/json")
        assert "error" in json.loads(content)
    assert await store.all_incidents() == []
    ok, _, content = await raw_request(
        port,
        "/webhook/alertmanager",
        [*JSON_TYPE, (b"Authorization", b"Bearer intake-token")],
        body,
    )
    assert ok == 200, content


async def test_a_signed_callback_with_a_400_digit_timestamp_is_refused(bridge: Bridge) -> None:
    event = (
        b'{"type":"button","event":"click","message_id":1,"trigger_id":"t1","data":"ack:x",'
        b'"user_id":1,"chat_id":1,"webhook_timestamp":' + b"9" * 400 + b"}"
    )
    signature = hmac.new(SIGNING_SECRET.encode(), event, hashlib.sha256).hexdigest()
    response = await bridge.post(
        event, headers={"Pachca-Signature": signature}, path="/pachca/webhook"
    )
    assert response.status == 401
    assert "webhook_timestamp" in (await response.json())["error"]


async def test_grafana_signature_headers_in_lower_case_are_found(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(GRAFANA_WEBHOOK_SECRET="grafana-secret")
    body = fixture_bytes(GRAFANA)
    signature = hmac.new(b"grafana-secret", body, hashlib.sha256).hexdigest()
    # an HTTP/2 hop (Envoy, Istio) hands headers on in lower case
    response = await bridge.post(
        body, headers={"x-grafana-alerting-signature": signature}, path="/webhook/grafana"
    )
    assert response.status == 200, await response.text()


# -- slow clients ------------------------------------------------------------------------------


async def test_callbacks_refuse_a_large_body_before_reading_it(served: Any) -> None:
    port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /pachca/webhook HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
        b"Content-Length: 500000\r\n\r\nabc"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    writer.close()


async def test_trickling_bodies_are_cut_off_while_health_answers(served: Any) -> None:
    """30 connections that promise a body and send a byte now and then: each is answered 408
    and closed once BRIDGE_READ_TIMEOUT (1 s here) has passed; /healthz answers meanwhile."""
    port, _ = served

    async def trickle() -> float:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /pachca/webhook HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        try:
            for _ in range(60):
                if reader.at_eof():
                    break
                writer.write(b" ")
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(4096), 0.3)
                except TimeoutError:
                    continue
        except ConnectionError:
            pass
        writer.close()
        return time.monotonic() - started

    async def health() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 2)
        writer.close()
        return int(answer.split()[1])

    trickles = [asyncio.create_task(trickle()) for _ in range(30)]
    await asyncio.sleep(0.3)
    assert await health() == 200
    durations = await asyncio.wait_for(asyncio.gather(*trickles), 60)
    assert max(durations) < 5, durations
