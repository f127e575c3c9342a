"""A real Alertmanager binary on loopback, pointed at the bridge under test.

Skipped with a reason when no binary is installed, except under CI (`CI=true`), where a
missing binary is a failure: `.ci/run` installs Debian's prometheus-alertmanager.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Bridge, BridgeFactory

BINARIES = ("prometheus-alertmanager", "alertmanager")


def alertmanager_binary() -> str:
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") == "true":
        pytest.fail("no Alertmanager binary under CI: .ci/run must install prometheus-alertmanager")
    pytest.skip("no Alertmanager binary (apt-get install prometheus-alertmanager)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONFIG = """
route:
  receiver: bridge
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: bridge
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization: {{type: Bearer, credentials: {token}}}
"""

INTAKE_TOKEN = "e2e-intake-token"


@dataclass
class Alertmanager:
    url: str
    http: aiohttp.ClientSession

    async def push(self, *alerts: dict[str, Any]) -> None:
        async with self.http.post(self.url + "/api/v2/alerts", json=list(alerts)) as resp:
            assert resp.status == 200, await resp.text()

    async def get(self, path: str) -> Any:
        async with self.http.get(self.url + path) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def silence(self, matchers: dict[str, str], minutes: int = 60) -> str:
        now = datetime.now(UTC)
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in matchers.items()
            ],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(minutes=minutes)).isoformat(),
            "createdBy": "Оля из UI",
            "comment": "maintenance",
        }
        async with self.http.post(self.url + "/api/v2/silences", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return str((await resp.json())["silenceID"])

    async def expire(self, silence_id: str) -> None:
        async with self.http.delete(f"{self.url}/api/v2/silence/{silence_id}") as resp:
            assert resp.status == 200, await resp.text()


def alert(name: str, instance: str, resolved: bool = False) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": name, "instance": instance, "severity": "critical", "team": "web"},
        "annotations": {"summary": f"{name} on {instance}"},
        "startsAt": (now - timedelta(minutes=5)).isoformat(),
        "endsAt": (now if resolved else now + timedelta(minutes=10)).isoformat(),
        "generatorURL": "http://prometheus.example.com:9090/graph",
    }


class AlertmanagerProcess:
    """One Alertmanager process on loopback; `stop` and `start` again keep its data folder
    (silences survive, alerts do not: a restart, as a rescheduled pod has). With `peers` it
    joins a cluster (gossip of silences and notification log, as an HA pair)."""

    def __init__(self, folder: Path, peers: list[str] | None = None) -> None:
        self.binary = alertmanager_binary()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.cluster_port = free_port() if peers is not None else None
        self.peers = peers or []
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def send_to(self, webhook: str) -> None:
        (self.folder / "alertmanager.yml").write_text(
            CONFIG.format(url=webhook, token=INTAKE_TOKEN)
        )

    @property
    def cluster_address(self) -> str:
        return f"127.0.0.1:{self.cluster_port}"

    async def start(self, http: aiohttp.ClientSession) -> None:
        cluster = (
            [f"--cluster.listen-address={self.cluster_address}"]
            + [f"--cluster.peer={p}" for p in self.peers]
            + ["--cluster.settle-timeout=1s", "--cluster.gossip-interval=100ms"]
            if self.cluster_port is not None
            else ["--cluster.listen-address="]
        )
        log = (self.folder / "alertmanager.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.folder / 'alertmanager.yml'}",
                f"--storage.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--web.external-url={self.url}",
                *cluster,
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        for _ in range(150):
            try:
                async with http.get(self.url + "/-/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(
            "Alertmanager did not start: " + (self.folder / "alertmanager.log").read_text()
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def wired(
    make_bridge: BridgeFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> AsyncIterator[tuple[Bridge, Alertmanager]]:
    """The bridge (with ALERTMANAGER_URL) and a real Alertmanager sending it webhooks. Its
    check-back takes absence as evidence at once (the Alertmanager started a moment ago)."""
    process = AlertmanagerProcess(tmp_path / "am")
    bridge = await make_bridge(
        ALERTMANAGER_URL=process.url,
        BRIDGE_WEBHOOK_TOKEN=INTAKE_TOKEN,
        BRIDGE_ALERTMANAGER_SETTLE="0s",
    )
    process.send_to(str(bridge.client.make_url("/webhook/alertmanager")))
    try:
        await process.start(http)
        yield bridge, Alertmanager(process.url, http)
    finally:
        process.stop()


async def settle(
    bridge: Bridge, done: Callable[[], bool | Awaitable[bool]], seconds: float = 15
) -> None:
    """Deliver as the outbox would, until `done` holds."""
    for _ in range(int(seconds / 0.2)):
        await bridge.deliver()
        result = done()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("not reached in time")
