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
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from bridge.metrics import Metrics
from bridge.pachca import client_from_settings
from bridge.rules import load_rules
from bridge.settings import Settings
from bridge.store import open_store
from bridge.web.app import create_app
from bridge.web.state import SUPERVISOR
from tests.fake_pachca import Chaos, FakePachca
from tests.faulty_store import FaultyStore

FIXTURES = Path(__file__).resolve().parent / "fixtures"
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


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

    @property
    def ok(self) -> bool:
        return not (
            self.wrong_state
            or self.duplicated
            or self.stuck
            or self.dead_letters_unexpected
            or self.loops_down
            or self.messages != self.groups
        )

    def lines(self) -> list[str]:
        return [
            f"groups {self.groups}, notifications {self.notifications} "
            f"(+{self.intake_retries} retried after 503), {self.seconds:.1f}s",
            f"injected Pachca faults {dict(sorted(self.faults.items()))}, "
            f"store failures {self.store_failures}",
            f"messages {self.messages} (one per group: {self.messages == self.groups}), "
            f"duplicated {len(self.duplicated)}, showing a stale state {len(self.wrong_state)}",
            f"outbox items stuck {self.stuck}, loops down {self.loops_down or 0}, "
            f"loop restarts {self.restarts:.0f}",
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
) -> SoakReport:
    chaos = Chaos(fault_rate, hang_seconds=0.8, permanent_rate=permanent_rate, seed=seed)
    fake = FakePachca(chaos=chaos)
    fake_server = TestServer(fake.app(), host="127.0.0.1")
    await fake_server.start_server()
    folder = state_dir or Path(tempfile.mkdtemp(prefix="soak-"))
    rules_path = folder / "rules.yaml"
    rules_path.write_text("routes:\n  - name: default\n    chat_id: 1000\n", encoding="utf-8")
    store_url = f"sqlite:///{folder / 'state.db'}"
    settings = Settings.from_environ(
        {
            "PACHCA_TOKEN": fake.token,
            "PACHCA_API_URL": str(fake_server.make_url("/api/shared/v1")),
            "BRIDGE_STORE": store_url,
            "PACHCA_TIMEOUT": "0.5s",
            "PACHCA_RATE_LIMIT": "200",
            "PACHCA_RATE_BURST": "20",
            "BRIDGE_RETRY_MAX_DELAY": "2s",
            "BRIDGE_OUTBOX_CONCURRENCY": "32",
        }
    )
    metrics = Metrics()
    real_store = open_store(store_url)
    store = FaultyStore(real_store, fail_rate=store_fail_rate, seed=seed)
    app = create_app(
        settings,
        load_rules(rules_path),
        store,  # type: ignore[arg-type]
        client_from_settings(settings, metrics),
        metrics,
    )
    bridge = TestServer(app, host="127.0.0.1")
    await bridge.start_server()
    url = str(bridge.make_url("/webhook/alertmanager"))
    started = time.monotonic()
    retries = 0
    sent = 0

    async with aiohttp.ClientSession() as http:

        async def send(body: dict[str, Any]) -> None:
            nonlocal retries, sent
            sent += 1
            while True:  # Alertmanager retries a notification until it is taken
                async with http.post(url, json=body) as response:
                    if response.status == 200:
                        return
                    assert response.status == 503, await response.text()
                    retries += 1
                await asyncio.sleep(0.05)

        async def drive(group: int, steps: list[tuple[int, str]]) -> None:
            await asyncio.sleep(step_seconds * group / max(1, groups))  # spread the starts
            for cycle, status in steps:
                await send(notification(group, cycle, status))
                await asyncio.sleep(step_seconds)

        await asyncio.gather(*(drive(g, steps) for g, steps in enumerate(plan(groups, cycles))))
        # faults go on while the backlog is worked through, then Pachca and the store behave
        # again and the backlog settles
        tail_end = time.monotonic() + storm_tail_seconds
        while time.monotonic() < tail_end:
            if (await real_store.outbox_stats(time.time())).depth == 0:
                break
            await asyncio.sleep(0.1)
        store.fail_rate = 0.0
        chaos.rate = 0.0
        chaos.permanent_rate = 0.0
        deadline = time.monotonic() + settle_seconds
        while time.monotonic() < deadline:
            if (await real_store.outbox_stats(time.time())).depth == 0:
                break
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - started
        supervisor = app[SUPERVISOR]
        report = _report(fake, groups, cycles, sent, retries, seconds)
        report.stuck = (await real_store.outbox_stats(time.time())).depth
        dead = await real_store.dead_letters()
        report.dead_letters = len(dead)
        report.dead_letters_unexpected = sum("injected refusal" not in d.error for d in dead)
        report.loops_down = supervisor.problems()
        report.restarts = sum(
            s.value
            for metric in metrics.registry.collect()
            if metric.name == "bridge_background_restarts"
            for s in metric.samples
            if s.name.endswith("_total")
        )
        report.faults = dict(chaos.injected)
        report.store_failures = store.raised
    await bridge.close()
    await fake_server.close()
    assert fake.violations == [], fake.violations[:5]
    return report


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
