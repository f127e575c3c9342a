"""Shared test parts: the fixtures' location, a fake Pachca over HTTP, and a bridge wired to it."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings

from bridge.metrics import Metrics
from bridge.pachca import client_from_settings
from bridge.rules import Rules, load_rules
from bridge.settings import Settings
from bridge.store import Store, store_from_settings
from bridge.web.app import create_app
from bridge.web.state import OUTBOX
from tests.fake_pachca import FakePachca
from tests.redis_server import RedisServer

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Property tests: CI runs a bounded, reproducible set (derandomized: the same examples every
# run); `HYPOTHESIS_PROFILE=long python3 -m pytest -k property` searches much further.
settings.register_profile(
    "ci",
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
SIGNING_SECRET = "pachca-signing-secret"

RULES_YAML = """
routes:
  - name: databases
    matchers: ['team="db"']
    chat_id: 1001
    mentions: ["@dba_oncall"]
  - name: default
    chat_id: 1000
"""


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


def group(n: int, status: str = "firing") -> dict[str, Any]:
    """Notification n of a storm: one group per n, three alerts."""
    body = fixture_json("alertmanager/02-group-3-firing.json")
    text = json.dumps(body).replace("DiskFull", f"DiskFull{n}")
    payload: dict[str, Any] = json.loads(text)
    if status == "resolved":
        payload["status"] = "resolved"
        for alert in payload["alerts"]:
            alert["status"] = "resolved"
            alert["endsAt"] = "2026-11-24T12:40:00Z"
    return payload


def groups_in(fake: FakePachca) -> Counter[str]:
    """How many channel messages each group has (by its alertname in the header)."""
    names: Counter[str] = Counter()
    for message in fake.channel_messages():
        header = message["content"].splitlines()[0]
        names[header.split("**")[3]] += 1
    return names


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES_YAML, encoding="utf-8")
    return path


@pytest.fixture
def rules(rules_path: Path) -> Rules:
    return load_rules(rules_path)


@pytest.fixture
async def fake_pachca() -> AsyncIterator[tuple[FakePachca, str]]:
    fake = FakePachca()
    server = TestServer(fake.app())
    await server.start_server()
    yield fake, str(server.make_url("/api/shared/v1"))
    await server.close()
    assert fake.violations == [], "requests or answers off Pachca's OpenAPI spec"


@dataclass
class Bridge:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    fake: FakePachca
    store: Store

    async def post(
        self,
        body: bytes | str | dict[str, Any],
        headers: dict[str, str] | None = None,
        path: str = "/webhook/alertmanager",
    ) -> ClientResponse:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        return await self.client.post(path, data=body, headers=sent)

    async def post_fixture(self, name: str) -> ClientResponse:
        response = await self.post(fixture_bytes(name))
        assert response.status == 200, await response.text()
        return response

    async def deliver(self) -> None:
        """Run the outbox until nothing is due (as the background task would)."""
        for _ in range(200):
            if not await self.app[OUTBOX].drain_once():
                return
        raise AssertionError("outbox never drained")


BridgeFactory = Callable[..., Awaitable[Bridge]]


@pytest.fixture
async def make_bridge(
    fake_pachca: tuple[FakePachca, str],
    rules: Rules,
    aiohttp_client: Any,
) -> BridgeFactory:
    fake, url = fake_pachca

    async def make(
        store_url: str = "memory://",
        rules_override: Rules | None = None,
        clock: Callable[[], float] = time.time,
        wrap_store: Callable[[Store], Any] | None = None,
        run_outbox: bool = False,
        **env: str,
    ) -> Bridge:
        settings = Settings.from_environ(
            {
                "PACHCA_TOKEN": fake.token,
                "PACHCA_API_URL": url,
                "BRIDGE_STORE": store_url,
                "PACHCA_SIGNING_SECRET": SIGNING_SECRET,
                **env,
            }
        )
        metrics = Metrics()
        assert settings.PACHCA_TOKEN is not None
        pachca = client_from_settings(settings, metrics)
        store = store_from_settings(settings)
        if wrap_store is not None:
            store = wrap_store(store)
        app = create_app(
            settings,
            rules_override or rules,
            store,
            pachca,
            metrics,
            run_outbox=run_outbox,
            clock=clock,
        )
        client = await aiohttp_client(app)
        return Bridge(client, app, fake, store)

    return make


def no_whole_reads(bridge: Bridge) -> None:
    """From here on, reading every incident held fails: what is answered must be read by
    its own index (a hundred thousand held would be gigabytes)."""

    async def everything() -> None:
        raise AssertionError("read every incident held")

    bridge.store.all_incidents = everything  # type: ignore[method-assign]


@pytest.fixture
async def bridge(make_bridge: BridgeFactory) -> Bridge:
    return await make_bridge()


class Clock:
    def __init__(self, start: float = 1_900_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(bridge: Bridge) -> Clock:
    """The outbox's clock, moved by the test (retries wait for it)."""
    clock = Clock()
    bridge.app[OUTBOX].clock = clock
    return clock


async def pending(bridge: Bridge) -> int:
    depth = (await bridge.store.outbox_stats(0)).depth
    return depth


@pytest.fixture
async def slow_pachca() -> AsyncIterator[tuple[FakePachca, str]]:
    fake = FakePachca(rate_limit=50, delay=0.02)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("/api/shared/v1"))
    await server.close()
    assert fake.violations == []


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free port for the whole session (tests use own prefixes or
    flush it)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
