"""The fault soak: groups driven through fire / resolve / re-fire cycles into a running bridge
(its supervised background loops on, SQLite store) while the fake Pachca injects faults and
the store fails a fraction of its calls. Used by `tests/test_fault_soak.py` (small, asserted)
and `bench/fault_soak.py` (larger, printed).

What it reports is what a person would check afterwards: does every group's message show its
last state, is anything stuck, is every loop alive, and are the dead letters exactly the
refusals that were injected as permanent.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.metrics import Metrics
from bridge.pachca import client_from_settings
from bridge.rules import load_rules
from bridge.settings import Settings
from bridge.sources.pachca import signature
from bridge.store import Store, open_store
from bridge.store.redis import RedisStore
from bridge.web.app import create_app
from bridge.web.state import METRICS, SUPERVISOR
from tests.fake_pachca import Chaos, FakePachca
from tests.faulty_store import FaultyStore

FIXTURES = Path(__file__).resolve().parent / "fixtures"
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PRESSER = 7000  # the user ids of the people pressing buttons
SIGNING_SECRET = "soak-signing-secret"


@dataclass
class SoakReport:
    groups: int
    notifications: int
    intake_retries: int  # 503s answered while the store failed, retried as Alertmanager would
    seconds: float
    messages: int
    wrong_state: list[str]  # groups whose message does not show their last state
    duplicated: list[str]  # groups with more than one message
    stuck: int  # outbox items left after the settle time
    dead_letters: int
    dead_letters_unexpected: int  # dead letters whose error was not an injected refusal
    loops_down: list[str]
    restarts: float
    faults: dict[str, int] = field(default_factory=dict)
    store_failures: int = 0
    orphaned: list[str] = field(default_factory=list)
    deleted: int = 0  # messages deleted in the chat during the storm
    replicas: int = 1
    crashed: int = 0  # replicas killed halfway
    presses: int = 0  # Ack presses on incident messages while the faults went on
    told: int = 0  # pressers told by direct message
    dms_doubled: list[str] = field(default_factory=list)  # pressers told more than once

    @property
    def ok(self) -> bool:
        return not (
            self.wrong_state
            or self.orphaned
            or self.duplicated
            or self.stuck
            or self.dead_letters_unexpected
            or self.loops_down
            or self.messages != self.groups
            or self.dms_doubled
        )

    def lines(self) -> list[str]:
        return [
            f"replicas {self.replicas}, groups {self.groups}, notifications {self.notifications} "
            f"(+{self.intake_retries} retried after 503), {self.seconds:.1f}s",
            f"injected Pachca faults {dict(sorted(self.faults.items()))}, "
            f"store failures {self.store_failures}",
            f"messages {self.messages} (one per group: {self.messages == self.groups}), "
            f"duplicated {len(self.duplicated)}, showing a stale state {len(self.wrong_state)}, "
            f"orphaned {len(self.orphaned)}, deleted in the chat (and posted again) "
            f"{self.deleted}",
            f"outbox items stuck {self.stuck}, loops down {self.loops_down or 0}, "
            f"loop restarts {self.restarts:.0f}, replicas crashed {self.crashed}",
            f"presses {self.presses}, pressers told {self.told}, more than once "
            f"{len(self.dms_doubled)}",
            f"dead letters {self.dead_letters} (injected permanent refusals "
            f"{self.faults.get('permanent', 0)}, unexpected {self.dead_letters_unexpected})",
        ]


def notification(group: int, cycle: int, status: str) -> dict[str, Any]:
    """Group `group` in cycle `cycle`: two alerts that started at the cycle's start (a re-fire
    is a new startsAt), firing or resolved."""
    body: dict[str, Any] = json.loads(
        (FIXTURES / "alertmanager/02-group-3-firing.json").read_text()
    )
    name = f"Soak{group}"
    body["groupKey"] = f'{{}}:{{alertname="{name}"}}'
    body["groupLabels"] = {"alertname": name}
    body["commonLabels"] = {"alertname": name, "severity": "critical"}
    body["status"] = status
    start = T0 + timedelta(minutes=10 * cycle)
    template = body["alerts"][0]
    body["alerts"] = []
    for i in range(2):
        alert = json.loads(json.dumps(template))
        alert["labels"] = {"alertname": name, "instance": f"host-{i}", "severity": "critical"}
        alert["fingerprint"] = f"{group:06x}{i:02x}"
        alert["status"] = status
        alert["startsAt"] = start.isoformat()
        alert["endsAt"] = (
            (start + timedelta(minutes=5)).isoformat()
            if status == "resolved"
            else "0001-01-01T00:00:00Z"
        )
        body["alerts"].append(alert)
    return body


def final_status(group: int, cycles: int) -> str:
    """Half the groups end firing, half resolved."""
    return "firing" if group % 2 else "resolved"


def plan(groups: int, cycles: int) -> list[list[tuple[int, str]]]:
    """Per group, its (cycle, status) notifications in order: fire, resolve, fire again ..."""
    out = []
    for group in range(groups):
        steps = []
        for cycle in range(cycles):
            steps.append((cycle, "firing"))
            if cycle < cycles - 1 or final_status(group, cycles) == "resolved":
                steps.append((cycle, "resolved"))
        out.append(steps)
    return out


@dataclass
class Replica:
    app: web.Application
    server: TestServer
    store: FaultyStore
    url: str
    alive: bool = True

    async def crash(self) -> None:
        """Dies as kill -9 would leave it: loops cancelled mid-delivery, nothing drained,
        claims left to lapse; it takes no more requests."""
        self.alive = False
        await self.app[SUPERVISOR].stop()


async def start_replica(
    env: dict[str, str], store: Store, fail_rate: float, seed: int, rules_path: Path
) -> Replica:
    settings = Settings.from_environ(env)
    metrics = Metrics()
    faulty = FaultyStore(store, fail_rate=fail_rate, seed=seed)
    app = create_app(
        settings,
        load_rules(rules_path),
        faulty,  # type: ignore[arg-type]
        client_from_settings(settings, metrics),
        metrics,
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return Replica(app, server, faulty, str(server.make_url("/webhook/alertmanager")))


async def run_soak(
    groups: int = 40,
    cycles: int = 3,
    fault_rate: float = 0.2,
    permanent_rate: float = 0.05,
    store_fail_rate: float = 0.05,
    settle_seconds: float = 60.0,
    step_seconds: float = 0.3,
    storm_tail_seconds: float = 30.0,
    seed: int = 1,
    state_dir: Path | None = None,
    redis_url: str | None = None,
    replicas: int = 1,
    crash_one: bool = False,
    delete_rate: float = 0.0,
) -> SoakReport:
    """The soak on one replica with SQLite, or with `redis_url` on `replicas` replicas sharing
    it (claims of 1 s); `crash_one` crashes the last replica halfway; `delete_rate` is the
    share of channel messages deleted in the chat during the first half."""
    # performed with the answer lost, at once or after the client gave up: creates in doubt,
    # and edits that land after their retry unless it waits
    kinds = (*Chaos.kinds, "late", "slow")
    chaos = Chaos(
        fault_rate, hang_seconds=0.8, permanent_rate=permanent_rate, seed=seed, kinds=kinds
    )
    fake = FakePachca(chaos=chaos)
    fake_server = TestServer(fake.app(), host="127.0.0.1")
    await fake_server.start_server()
    folder = state_dir or Path(tempfile.mkdtemp(prefix="soak-"))
    rules_path = folder / "rules.yaml"
    rules_path.write_text("routes:\n  - name: default\n    chat_id: 1000\n", encoding="utf-8")
    env = {
        "PACHCA_TOKEN": fake.token,
        "PACHCA_API_URL": str(fake_server.make_url("/api/shared/v1")),
        "BRIDGE_STORE": redis_url or f"sqlite:///{folder / 'state.db'}",
        "PACHCA_TIMEOUT": "0.5s",
        "PACHCA_RATE_LIMIT": "200",
        "PACHCA_RATE_BURST": "20",
        "BRIDGE_RETRY_MAX_DELAY": "2s",
        "BRIDGE_OUTBOX_CONCURRENCY": "32",
        "BRIDGE_CLAIM_TTL": "1s",
        # a loop that hangs shows as down within the settle time (it was a silent backlog)
        "BRIDGE_STALL_AFTER": "10s",
        "PACHCA_SIGNING_SECRET": SIGNING_SECRET,
    }
    if redis_url:
        prefix = f"soak-{uuid.uuid4().hex[:8]}:"
        stores: list[Store] = [
            RedisStore(redis_url, claim_ttl=1.0, prefix=prefix) for _ in range(replicas)
        ]
    else:
        stores = [open_store(env["BRIDGE_STORE"])]
    real_store = stores[0]
    pool = [
        await start_replica(env, store, store_fail_rate, seed + n, rules_path)
        for n, store in enumerate(stores)
    ]
    started = time.monotonic()
    retries = 0
    sent = 0
    deleted = 0
    rng = random.Random(seed)

    async with aiohttp.ClientSession() as http:

        async def post(replica: Replica, body: dict[str, Any]) -> bool:
            nonlocal retries
            while replica.alive:  # Alertmanager retries a notification until it is taken
                try:
                    async with http.post(replica.url, json=body) as response:
                        if response.status == 200:
                            return True
                        assert response.status == 503, await response.text()
                        retries += 1
                except aiohttp.ClientError:
                    return False  # the replica died under the request
                await asyncio.sleep(0.05)
            return False

        async def send(group: int, body: dict[str, Any]) -> None:
            nonlocal sent
            sent += 1
            alive = [r for r in pool if r.alive]
            first = alive[group % len(alive)]
            if len(alive) > 1 and rng.random() < 0.3:  # an HA pair: both get it at once
                results = await asyncio.gather(*(post(r, body) for r in alive))
                if any(results):
                    return
            if not await post(first, body):  # died: the other replica takes it
                assert await post(next(r for r in pool if r.alive), body)

        async def drive(group: int, steps: list[tuple[int, str]]) -> None:
            await asyncio.sleep(step_seconds * group / max(1, groups))  # spread the starts
            for cycle, status in steps:
                await send(group, notification(group, cycle, status))
                await asyncio.sleep(step_seconds)

        async def admins() -> None:
            """People deleting incident messages in the chat (first half of the storm)."""
            nonlocal deleted
            while True:
                await asyncio.sleep(step_seconds)
                for message in fake.channel_messages():
                    if rng.random() < delete_rate:
                        fake.delete_message(message["id"])
                        deleted += 1

        async def press(n: int, message: dict[str, Any], data: str) -> None:
            """Person 7000 + n presses the message's first button (`data`, as it was when the
            person saw it: the message may change meanwhile), signed as Pachca does; answered
            503 (the store failing), Pachca sends it again."""
            event = {
                "type": "button",
                "event": "click",
                "message_id": message["id"],
                "trigger_id": f"soak-press-{n}",
                "data": data,
                "user_id": PRESSER + n,
                "chat_id": message["chat_id"],
                "webhook_timestamp": int(time.time()),
            }
            body = json.dumps(event).encode()
            headers = {
                "Content-Type": "application/json",
                "Pachca-Signature": signature(SIGNING_SECRET, body),
            }
            alive = [r for r in pool if r.alive]
            replica = alive[n % len(alive)]
            url = str(replica.server.make_url("/pachca/webhook"))
            while replica.alive:
                async with http.post(url, data=body, headers=headers) as response:
                    if response.status == 200:
                        return
                    assert response.status == 503, await response.text()
                await asyncio.sleep(0.05)

        steps_each = max(len(s) for s in plan(groups, cycles))
        halfway = step_seconds * steps_each / 2
        deleting = asyncio.create_task(admins()) if delete_rate else None
        crashing = (
            asyncio.create_task(_after(halfway, pool[-1].crash()))
            if crash_one and len(pool) > 1
            else None
        )
        storm = asyncio.gather(*(drive(g, steps) for g, steps in enumerate(plan(groups, cycles))))
        await asyncio.sleep(halfway)
        if deleting is not None:
            deleting.cancel()
        if crashing is not None:
            await crashing
        await storm
        # people press a button on some messages while Pachca and the store still fail: each
        # is told by one direct message (its answer may be lost as any post's)
        pressed = [(m, _button_data(m)[0]) for m in fake.channel_messages() if _button_data(m)][
            : max(1, groups // 5)
        ]
        await asyncio.gather(*(press(n, m, data) for n, (m, data) in enumerate(pressed)))
        # faults go on while the backlog is worked through, then Pachca and the store behave
        # again and the backlog settles
        tail_end = time.monotonic() + storm_tail_seconds
        while time.monotonic() < tail_end:
            if (await real_store.outbox_stats(time.time())).depth == 0:
                break
            await asyncio.sleep(0.1)
        for replica in pool:
            replica.store.fail_rate = 0.0
        chaos.rate = 0.0
        chaos.permanent_rate = 0.0
        deadline = time.monotonic() + settle_seconds
        while time.monotonic() < deadline:
            if (await real_store.outbox_stats(time.time())).depth == 0:
                break
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - started
        report = _report(fake, groups, cycles, sent, retries, seconds)
        report.orphaned = await _orphans(fake, real_store)
        report.deleted = deleted
        report.presses = len(pressed)
        direct = [m for m in fake.messages.values() if m["entity_type"] == "user"]
        told = Counter(m["entity_id"] for m in direct)
        report.told = len(told)
        report.dms_doubled = [
            f"user {u}: {c} direct messages "
            f"{[(m['id'], m['content'][:40]) for m in direct if m['entity_id'] == u]}"
            for u, c in told.items()
            if c > 1
        ]
        report.stuck = (await real_store.outbox_stats(time.time())).depth
        dead = await real_store.dead_letters()
        report.dead_letters = len(dead)
        report.dead_letters_unexpected = sum("injected refusal" not in d.error for d in dead)
        report.loops_down = [p for r in pool if r.alive for p in r.app[SUPERVISOR].problems()]
        report.restarts = sum(
            s.value
            for r in pool
            for metric in r.app[METRICS].registry.collect()
            if metric.name == "bridge_background_restarts"
            for s in metric.samples
            if s.name.endswith("_total")
        )
        report.faults = dict(chaos.injected)
        report.store_failures = sum(r.store.raised for r in pool)
        report.replicas = len(pool)
        report.crashed = sum(not r.alive for r in pool)
    for replica in pool:
        await replica.server.close()
    await fake_server.close()
    assert fake.violations == [], fake.violations[:5]
    return report


def _button_data(message: dict[str, Any]) -> list[str]:
    return [b["data"] for row in message.get("buttons") or [] for b in row if "data" in b]


async def _after(seconds: float, action: Awaitable[None]) -> None:
    await asyncio.sleep(seconds)
    await action


async def _orphans(fake: FakePachca, store: Store) -> list[str]:
    """Messages that show firing although their incident points at another message (or at
    none): nobody will ever edit them again."""
    orphans = []
    for message in fake.channel_messages():
        if "ГОРИТ" not in message["content"].splitlines()[0]:
            continue
        refs = {
            str(b.get("data", "")).split(":")[1]
            for row in message.get("buttons") or []
            for b in row
            if ":" in str(b.get("data", ""))
        }
        for ref in refs:
            stored = await store.load_by_ref(ref)
            if stored is None or stored.delivery.message_id != message["id"]:
                orphans.append(f"message {message['id']} of incident {ref}")
    return orphans


def _report(
    fake: FakePachca, groups: int, cycles: int, sent: int, retries: int, seconds: float
) -> SoakReport:
    by_group: dict[str, list[str]] = {}
    for message in fake.channel_messages():
        header = message["content"].splitlines()[0]
        name = next((p for p in header.split("**") if p.startswith("Soak")), "?")
        by_group.setdefault(name, []).append(header)
    wrong, duplicated = [], []
    for group in range(groups):
        headers = by_group.get(f"Soak{group}", [])
        if len(headers) > 1:
            duplicated.append(f"Soak{group}")
        expected = "ГОРИТ" if final_status(group, cycles) == "firing" else "РЕШЕНО"
        if not headers or expected not in headers[-1]:
            wrong.append(f"Soak{group}: {headers[-1] if headers else 'no message'}")
    return SoakReport(
        groups=groups,
        notifications=sent,
        intake_retries=retries,
        seconds=seconds,
        messages=len(fake.channel_messages()),
        wrong_state=wrong,
        duplicated=duplicated,
        stuck=0,
        dead_letters=0,
        dead_letters_unexpected=0,
        loops_down=[],
        restarts=0.0,
    )
