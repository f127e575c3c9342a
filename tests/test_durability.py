"""Delivery through outages, storms, kill -9 and SIGTERM: nothing lost, nothing doubled."""

import asyncio
import json
import os
import signal
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bridge.web.state import OUTBOX
from tests.conftest import RULES_YAML, BridgeFactory, Clock, group, groups_in
from tests.fake_pachca import FakePachca

REPO = Path(__file__).resolve().parents[1]


async def test_pachca_down_then_up_loses_nothing(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    clock = Clock()
    bridge.app[OUTBOX].clock = clock
    bridge.fake.down = True
    for n in range(20):
        assert (await bridge.post(group(n))).status == 200
    for _ in range(5):  # minutes of outage: every attempt fails, nothing is dropped
        await bridge.deliver()
        clock.now += 600
    assert bridge.fake.channel_messages() == []
    assert (await bridge.store.outbox_stats(clock.now))[0] == 20
    bridge.fake.down = False
    await bridge.deliver()
    assert groups_in(bridge.fake) == Counter({f"DiskFull{n}": 1 for n in range(20)})
    assert await bridge.store.dead_letters() == []


async def test_fifty_changes_while_pachca_is_slow_become_few_edits(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge()
    bridge.fake.delay = 0.05
    outbox = asyncio.create_task(bridge.app[OUTBOX].run())
    try:
        base = group(0)
        await bridge.post(base)
        for n in range(1, 51):  # the group grows by one alert per notification
            grown = json.loads(json.dumps(base))
            for i in range(n):
                alert = json.loads(json.dumps(base["alerts"][0]))
                alert["labels"]["instance"] = f"extra-{i}:9100"
                alert["fingerprint"] = f"{i:016x}"
                grown["alerts"].append(alert)
            assert (await bridge.post(grown)).status == 200
        for _ in range(200):
            depth = (await bridge.store.outbox_stats(0)).depth
            if depth == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        outbox.cancel()
    edits = [c for c in bridge.fake.ok_calls("/messages/{id}") if c.method == "PUT"]
    assert 1 <= len(edits) <= 10, len(edits)
    (message,) = bridge.fake.channel_messages()
    assert "🔥 53 · ✅ 0" in message["content"]  # the last content won


# --- the bridge as a real process --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BridgeProcess:
    """`python -m bridge serve` as its own process, with its log in a file."""

    def __init__(
        self, pachca_url: str, token: str, state: Path, store: str | None = None, **env: str
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PACHCA_", "BRIDGE_"))}
        self.env.update(
            PACHCA_TOKEN=token,
            PACHCA_API_URL=pachca_url,
            BRIDGE_STORE=store or f"sqlite:///{state}",
            BRIDGE_SHUTDOWN_GRACE="10s",
            # the fake answers in ms; a short timeout keeps the wait for creates whose answer
            # was lost in a kill (3 timeouts, see attempts.py) short too
            PACHCA_TIMEOUT="2s",
            **env,
        )
        self.proc: asyncio.subprocess.Process | None = None
        self.log = state.with_suffix(f".{self.port}.log")
        # routes without a digest or other clock-driven posts, so what the chat receives does
        # not depend on the hour the test runs at
        self.rules = state.with_suffix(".rules.yaml")
        self.rules.write_text(RULES_YAML, encoding="utf-8")

    async def start(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge",
                "serve",
                "--rules",
                str(self.rules),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=log,
            )
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("bridge did not start: " + self.log.read_text()[-2000:])

    async def post_all(self, payloads: list[dict[str, Any]]) -> None:
        async with aiohttp.ClientSession() as http:

            async def post(payload: dict[str, Any]) -> None:
                async with http.post(self.url + "/webhook/alertmanager", json=payload) as resp:
                    assert resp.status == 200, await resp.text()

            for start in range(0, len(payloads), 50):
                await asyncio.gather(*(post(p) for p in payloads[start : start + 50]))

    async def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), 30)


async def wait_for(predicate: Any, seconds: float) -> None:
    for _ in range(int(seconds * 20)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_kill_9_during_a_storm_then_restart(
    slow_pachca: tuple[FakePachca, str], tmp_path: Path
) -> None:
    fake, url = slow_pachca
    fake.delay = 0.6  # slow enough that several posts are in flight when the bridge dies
    bridge = BridgeProcess(url, fake.token, tmp_path / "state.db")
    await bridge.start()
    storm = [group(n) for n in range(120)]
    await bridge.post_all([p for p in storm for _ in range(2)])  # every copy twice (HA pair)
    await wait_for(lambda: len(fake.channel_messages()) >= 20 and fake.posts_in_flight > 0, 30)
    in_flight = fake.posts_in_flight  # posted, answers not yet given: they will be lost
    assert await bridge.stop(signal.SIGKILL) == -signal.SIGKILL
    await asyncio.sleep(fake.delay + 0.2)
    assert in_flight
    assert len(fake.channel_messages()) < 120  # killed mid-storm
    fake.delay = 0.02
    await bridge.start()
    await bridge.post_all([group(n, "resolved") for n in range(0, 120, 10)])

    def resolved() -> int:
        return sum(m["content"].startswith("✅") for m in fake.channel_messages())

    await wait_for(lambda: len(fake.channel_messages()) >= 120 and resolved() == 12, 60)
    await asyncio.sleep(0.5)
    assert groups_in(fake) == Counter({f"DiskFull{n}": 1 for n in range(120)})
    assert resolved() == 12
    assert await bridge.stop(signal.SIGTERM) == 0
    log = bridge.log.read_text()
    assert "adopting it" in log  # a post whose answer died with the process was found again


async def test_sigterm_drains_then_exits_0(
    slow_pachca: tuple[FakePachca, str], tmp_path: Path
) -> None:
    fake, url = slow_pachca
    bridge = BridgeProcess(url, fake.token, tmp_path / "state.db")
    await bridge.start()
    await bridge.post_all([group(n) for n in range(30)])
    assert await bridge.stop(signal.SIGTERM) == 0
    assert groups_in(fake) == Counter({f"DiskFull{n}": 1 for n in range(30)})
    assert "items left" not in bridge.log.read_text()
