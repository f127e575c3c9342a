"""Property tests (Hypothesis) of everything a client can send: for any body and headers, the
three public endpoints never answer 5xx, a refused request changes nothing, and an accepted
notification is delivered; and rendering never raises for anything intake accepts.

CI runs a bounded, derandomized set (see conftest); `HYPOTHESIS_PROFILE=long` runs more.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import hmac
import json
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from bridge.briefs import Brief
from bridge.digest import DigestDue
from bridge.errors import PayloadError
from bridge.incidents import Effect, apply_notification
from bridge.metrics import Metrics
from bridge.model import Delivery
from bridge.pachca import client_from_settings
from bridge.render import RenderOptions, render_message
from bridge.rules import RouteConfig, load_rules
from bridge.settings import Settings
from bridge.sources import alertmanager
from bridge.store import Store, Stored, open_store
from bridge.texts import render_comment, render_digest, render_reminder
from bridge.web.app import create_app
from bridge.web.state import OUTBOX
from tests.conftest import RULES_YAML, SIGNING_SECRET, fixture_json
from tests.fake_pachca import FakePachca

TOKEN = "intake-token"
GRAFANA_SECRET = "grafana-secret"
ZONES = ["UTC", "Pacific/Kiritimati", "Etc/GMT+12", "America/Los_Angeles", "Europe/Moscow"]

# -- what a client may send -------------------------------------------------------------------

text = st.text(max_size=30)  # any code point, lone surrogates included
# stands for an integer past Python's digit limit, which neither Hypothesis nor json.dumps
# can print: `to_json` writes the digits in its place
HUGE_INT = "<huge int>"
edge_times = st.sampled_from(
    [
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T00:00:00Z",
        "2026-11-24T12:28:40",  # no offset
        "2026-11-24T12:28:40.123456789Z",
        "1970-01-01T00:00:00Z",
        "8999-12-31T23:59:59Z",
        "not a time",
    ]
)
# every whole-hour offset there is (cheaper to draw than st.timezones(), and it is the offset
# that moves a time across a year boundary)
offsets = st.sampled_from([timezone(timedelta(hours=h)) for h in range(-14, 15)])
any_times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
).map(lambda d: d.isoformat())
times = st.one_of(edge_times, any_times)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    text,
    st.just(HUGE_INT),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
labels = st.dictionaries(st.sampled_from(["alertname", "team", "job", "instance", "x"]), text)


@st.composite
def alert(draw: st.DrawFn, mutate: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": draw(st.sampled_from(["firing", "resolved"])),
        "labels": draw(labels),
        "annotations": draw(st.dictionaries(st.sampled_from(["summary", "description"]), text)),
        "startsAt": draw(times),
        "endsAt": draw(times),
        "generatorURL": draw(st.sampled_from(["", "http://prom:9090/graph?g0=1", "javascript:x"])),
        "fingerprint": draw(st.text(min_size=1, max_size=8)),
    }
    if draw(st.booleans()):  # Grafana's extras
        body["values"] = draw(st.dictionaries(text, st.floats() | st.none(), max_size=2))
        body["dashboardURL"] = draw(text)
    # what other Alertmanager-speaking senders leave out (derived by the bridge)
    for key in draw(st.lists(st.sampled_from(["status", "fingerprint", "endsAt"]), max_size=2)):
        body.pop(key, None)
    if mutate:
        for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=2)):
            body[key] = draw(json_values)  # a field of the wrong type
    return body


@st.composite
def payload(draw: st.DrawFn, version: str, mutate: bool = False) -> dict[str, Any]:
    """A notification that is well formed unless `mutate`: then some fields are wrong."""
    body = {
        "version": version,
        "groupKey": draw(st.text(min_size=1, max_size=20)),
        "receiver": draw(text),
        "status": draw(st.sampled_from(["firing", "resolved"])),
        "alerts": draw(st.lists(alert(mutate), min_size=1, max_size=4)),
        "groupLabels": draw(labels),
        "commonLabels": draw(labels),
        "externalURL": draw(text),
        "truncatedAlerts": draw(st.integers(min_value=-2, max_value=10**20)),
        "title": draw(text),
    }
    optional = ["groupKey", "status", "receiver", "groupLabels", "commonLabels"]
    if version == "4":
        optional.append("version")  # Grafana's "1" is what tells it apart
    for key in draw(st.lists(st.sampled_from(optional), max_size=3)):
        body.pop(key, None)
    if mutate:
        for key in draw(st.lists(st.sampled_from(sorted(body)), min_size=1, max_size=2)):
            body[key] = draw(json_values)
    return body


def to_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).replace(f'"{HUGE_INT}"', "9" * 5000).encode()


def bodies(version: str) -> st.SearchStrategy[bytes]:
    """Mostly well-formed notifications (so edge values get past the schema), then broken
    ones, other JSON, other bytes."""
    return st.one_of(
        payload(version).map(to_json),
        payload(version).map(to_json),
        payload(version, mutate=True).map(to_json),
        json_values.map(to_json),
        st.binary(max_size=200),
        st.just(b"[" * 5000 + b"]" * 5000),
    )


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    headers: dict[str, str]


@st.composite
def requests(draw: st.DrawFn, path: str) -> Request:
    body = draw(bodies("1" if path == "/webhook/grafana" else "4"))
    json_type = "application/json"
    headers = {"Content-Type": draw(st.sampled_from([json_type] * 4 + ["text/plain", ""]))}
    encoding = draw(st.sampled_from([""] * 4 + ["gzip", "deflate", "br", "gzip, gzip", "x"]))
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    if encoding:
        headers["Content-Encoding"] = encoding
    if path == "/pachca/webhook":
        if draw(st.booleans()):
            headers["Pachca-Signature"] = hmac.new(
                SIGNING_SECRET.encode(), body, hashlib.sha256
            ).hexdigest()
    else:
        headers["Authorization"] = draw(
            st.sampled_from([f"Bearer {TOKEN}"] * 4 + ["Bearer nope", "Basic ???", ""])
        )
    if path == "/webhook/grafana" and draw(st.sampled_from([True] * 4 + [False])):
        name = draw(st.sampled_from(["X-Grafana-Alerting-Signature", "x-grafana-alert-signature"]))
        headers[name] = hmac.new(GRAFANA_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return Request(path, body, {k: v for k, v in headers.items() if v})


@st.composite
def click_bodies(draw: st.DrawFn) -> bytes:
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(["button", "reaction", "message", "view"])),
        "event": draw(st.sampled_from(["click", "new", "delete", "link_shared"])),
        "message_id": draw(st.integers() | text),
        "trigger_id": draw(text),
        "data": draw(st.sampled_from(["ack:", "silence::1h", "resolve:abc", "x" * 300]) | text),
        "user_id": draw(st.integers(min_value=-(2**70), max_value=2**70)),
        "chat_id": draw(st.integers()),
        "webhook_timestamp": draw(
            st.sampled_from([int(time.time()), 10**400, -1, 0]) | st.integers() | text
        ),
    }
    return to_json(event)


# -- a bridge on one event loop for all examples ----------------------------------------------


@dataclass
class Rig:
    loop: asyncio.AbstractEventLoop
    client: TestClient[web.Request, web.Application]
    app: web.Application
    store: Store
    fake: FakePachca

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def snapshot(self) -> tuple[int, int, int]:
        backlog = await self.store.outbox_stats(0)
        return len(await self.store.all_incidents()), backlog.depth, backlog.dead_letters


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    loop = asyncio.new_event_loop()
    rules_path = Path(tmp_path_factory.mktemp("rules")) / "rules.yaml"
    rules_path.write_text(RULES_YAML, encoding="utf-8")
    fake = FakePachca()
    fake_server = TestServer(fake.app())
    loop.run_until_complete(fake_server.start_server())
    settings = Settings.from_environ(
        {
            "PACHCA_TOKEN": fake.token,
            "PACHCA_API_URL": str(fake_server.make_url("/api/shared/v1")),
            "BRIDGE_STORE": "memory://",
            "PACHCA_SIGNING_SECRET": SIGNING_SECRET,
            "BRIDGE_WEBHOOK_TOKEN": TOKEN,
            "GRAFANA_WEBHOOK_SECRET": GRAFANA_SECRET,
            "BRIDGE_TIMEZONE": "Pacific/Kiritimati",
        }
    )
    metrics = Metrics()
    store = open_store("memory://")
    app = create_app(
        settings,
        load_rules(rules_path),
        store,
        client_from_settings(settings, metrics),
        metrics,
        run_outbox=False,
    )
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app), loop=loop)
    loop.run_until_complete(client.start_server())
    yield Rig(loop, client, app, store, fake)
    loop.run_until_complete(client.close())
    loop.run_until_complete(fake_server.close())
    loop.close()
    assert fake.violations == []


def check(rig: Rig, request: Request) -> None:
    async def go() -> None:
        before = await rig.snapshot()
        response = await rig.client.post(request.path, data=request.body, headers=request.headers)
        text = await response.text()
        assert response.status < 500, (response.status, text)
        assert response.content_type == "application/json", text
        if response.status >= 400:
            assert await rig.snapshot() == before, "a refused request changed the store"
            return
        for _ in range(50):
            if not await rig.app[OUTBOX].drain_once():
                break
        _, depth, dead = await rig.snapshot()
        assert (depth, dead) == (0, before[2]), "an accepted notification was not delivered"

    rig.run(go())


@given(requests("/webhook/alertmanager"))
def test_property_alertmanager_intake_never_fails_the_client(rig: Rig, request: Request) -> None:
    check(rig, request)


@given(requests("/webhook/grafana"))
def test_property_grafana_intake_never_fails_the_client(rig: Rig, request: Request) -> None:
    check(rig, request)


def signed_click(body: bytes) -> Request:
    signature = hmac.new(SIGNING_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "Pachca-Signature": signature}
    return Request("/pachca/webhook", body, headers)


@given(st.one_of(requests("/pachca/webhook"), click_bodies().map(signed_click)))
def test_property_callbacks_never_fail_the_sender(rig: Rig, request: Request) -> None:
    check(rig, request)


# -- rendering --------------------------------------------------------------------------------


shown_times = st.datetimes(datetime(1970, 1, 2), datetime(8999, 12, 30), timezones=offsets)


@st.composite
def valid_alert(draw: st.DrawFn, n: int) -> dict[str, Any]:
    start = draw(shown_times)
    resolved = draw(st.booleans())
    end = draw(shown_times)
    return {
        "status": "resolved" if resolved else "firing",
        "labels": {"alertname": draw(text), "instance": draw(text), **draw(labels)},
        "annotations": {"summary": draw(st.text(max_size=300)), "description": draw(text)},
        "startsAt": start.isoformat(),
        "endsAt": end.isoformat() if resolved else "0001-01-01T00:00:00Z",
        "generatorURL": draw(st.sampled_from(["", "http://prom:9090/graph?g0=1", "ftp://x"])),
        "fingerprint": f"f{n}",
    }


@st.composite
def accepted_payloads(draw: st.DrawFn) -> bytes:
    base = fixture_json("alertmanager/02-group-3-firing.json")
    count = draw(st.integers(min_value=1, max_value=4))
    base["alerts"] = [draw(valid_alert(n)) for n in range(count)]
    base["commonLabels"] = draw(labels)
    base["truncatedAlerts"] = draw(st.integers(min_value=0, max_value=10**6))
    return to_json(base)


# every thread comment rendered from the incident alone
COMMENTS = [
    Effect.COMMENT_REFIRED,
    Effect.COMMENT_RESOLVED,
    Effect.COMMENT_ACKED,
    Effect.COMMENT_SILENCED,
    Effect.COMMENT_SILENCE_ENDED,
]


@given(accepted_payloads(), st.sampled_from(ZONES), st.sampled_from(["ru", "en"]))
def test_property_anything_intake_accepts_renders_in_every_zone(
    body: bytes, zone: str, language: str
) -> None:
    try:
        note = alertmanager.parse(body)
    except PayloadError:  # refused at intake (a 400): nothing to render
        return
    route = route_in(language)
    options = RenderOptions(timezone=ZoneInfo(zone), silence_sources=frozenset({"alertmanager"}))
    transition = apply_notification(
        None, note, route="default", chat_id=1000, now=datetime.now(UTC),
        resolved_ttl=timedelta(hours=1), new_ref="0123456789",
    )  # fmt: skip
    if transition.incident is None:
        return
    incident = transition.incident
    assert render_message(incident, route, options).content
    for effect in COMMENTS:
        assert render_comment(effect, incident, route, options)
    now = datetime.now(UTC)
    assert render_reminder(incident, route, now)
    due = DigestDue("digest", 1000, route, now - timedelta(days=1), now + timedelta(days=1))
    assert render_digest(due, [Brief.of(Stored(incident, Delivery(message_id=1)))], now)


@functools.cache
def route_in(language: str) -> RouteConfig:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rules.yaml"
        path.write_text(
            f"routes:\n  - name: default\n    chat_id: 1000\n    language: {language}\n",
            encoding="utf-8",
        )
        return load_rules(path).default.config
