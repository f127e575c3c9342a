"""Benchmark: intake latency and throughput, an alert storm, and memory at scale.

Starts the bridge (`python -m bridge serve`, SQLite store) against a local fake Pachca that
allows 50 requests/s (429 + Retry-After above it) and answers slowly, and a bare aiohttp server
that only parses the same JSON, then prints:

  1. intake: requests/s and p50/p99 latency at a fixed 500 notifications/s, bridge vs bare
  2. storm: N alerts in G groups, every notification sent twice (a split HA pair): Pachca
     calls by type, 429s, time until every group had its message, duplicates, lost, peak RSS
  3. scale: RSS with 100,000 active alerts in 10,000 incidents

Run: python3 bench/storm.py [intake storm scale]   (about 4 minutes; --quick: smaller;
     --intake-rate N: the intake phase at N new groups/s instead of 500;
     --scale-incidents 100000: goal 5's size, about 4 minutes more;
     --keep-store F: keep the scale phase's state file as F; --scale-from-store F
     --scale-incidents 15000 scale: 15,000 new groups on a copy of F, 40 s a run)
     python3 bench/storm.py --smoke storm            (seconds; run by tests/test_bench.py)
     python3 bench/loops.py                          (the periodic work at 1k/10k/100k open)
Not a test: it asserts nothing, it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge.sources.pachca import signature  # noqa: E402
from tests.fake_pachca import Call, FakePachca  # noqa: E402

SIGNING_SECRET = "bench-signing-secret"
PRESSER = 2345  # the on-call engineer who presses Ack during the storm
TEMPLATE = json.loads((REPO / "tests/fixtures/alertmanager/02-group-3-firing.json").read_text())


def severity(group: int) -> str:
    """The storm's mix: one group in ten critical, one in ten error, the rest warnings."""
    return {3: "critical", 7: "error"}.get(group % 10, "warning")


FINGERPRINTS = "sequential"  # or "hashed" (--fingerprints): Alertmanager's are label hashes


def fingerprint(group: int, i: int) -> str:
    """Alert i of a group's fingerprint: counted (the figures so far) or a hash like Alertmanager's.

    Hashed fingerprints scatter the store's (fingerprint, ref) keys as a real storm does;
    counted ones append to the end of the index and flatter the store's writes.
    """
    if FINGERPRINTS == "hashed":
        return hashlib.blake2b(f"{group}/{i}".encode(), digest_size=8).hexdigest()
    return f"{group:08x}{i:08x}"


def notification(group: int, alerts: int) -> dict[str, Any]:
    payload = json.loads(json.dumps(TEMPLATE))
    payload["groupKey"] = f'{{}}:{{alertname="Storm{group}"}}'
    payload["groupLabels"] = {"alertname": f"Storm{group}"}
    payload["commonLabels"]["alertname"] = f"Storm{group}"
    payload["commonLabels"]["severity"] = severity(group)
    first = payload["alerts"][0]
    payload["alerts"] = []
    for i in range(alerts):
        alert = json.loads(json.dumps(first))
        alert["labels"].update(
            alertname=f"Storm{group}", instance=f"host-{i}:9100", severity=severity(group)
        )
        alert["annotations"]["summary"] = f"Storm{group} on host-{i}"
        alert["fingerprint"] = fingerprint(group, i)
        payload["alerts"].append(alert)
    return payload


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


BARE_SERVER = """
import json, sys
from aiohttp import web
async def handle(request):
    json.loads(await request.read())
    return web.json_response({"status": "ok"})
app = web.Application()
app.router.add_post("/webhook/alertmanager", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def start(cmd: list[str], port: int, env: dict[str, str], log: Path) -> Any:
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=log.open("wb")
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.post(
                    f"http://127.0.0.1:{port}/webhook/alertmanager",
                    data=b"{}",
                    headers={"Content-Type": "text/plain"},
                ):
                    return proc
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{cmd} did not start; see {log}")


async def post_json(http: aiohttp.ClientSession, url: str, body: bytes) -> None:
    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")


async def fixed_rate(
    url: str, bodies: list[bytes], rate: float, sent: list[float] | None = None
) -> tuple[float, list[float]]:
    """Send `bodies` open-loop at `rate`/s; returns (achieved req/s, latencies in ms).
    `sent` gets each body's send time (time.monotonic, the fake Pachca's clock)."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(body: bytes) -> None:
            started = time.perf_counter()
            await post_json(http, url, body)
            latencies.append((time.perf_counter() - started) * 1000)

        began = time.perf_counter()
        # only the requests under way: 100,000 finished tasks kept until the end made this
        # process's own full collections long enough to show in the latencies it measures
        pending: set[asyncio.Task[None]] = set()
        failed: list[BaseException] = []

        def done(task: asyncio.Task[None]) -> None:
            pending.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failed.append(task.exception())  # type: ignore[arg-type]

        for n, body in enumerate(bodies):
            delay = began + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if sent is not None:
                sent.append(time.monotonic())
            task = asyncio.create_task(one(body))
            pending.add(task)
            task.add_done_callback(done)
        await asyncio.gather(*pending)
        if failed:
            raise failed[0]
        elapsed = time.perf_counter() - began
    return len(bodies) / elapsed, latencies


async def flat_out(url: str, body: bytes, count: int, clients: int = 16) -> float:
    """Send the same body `count` times from `clients` concurrent clients, each waiting for
    its answer (closed loop); returns requests/s."""
    connector = aiohttp.TCPConnector(limit=clients)
    left = [count]
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client() -> None:
            while left[0] > 0:
                left[0] -= 1
                await post_json(http, url, body)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return count / (time.perf_counter() - began)


async def server_side(port: int) -> str:
    """p50/p99 of the bridge's own intake histogram (handler start to answer), estimated
    from its buckets: what the bridge spends, without this process's client in the way."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    buckets = []
    for line in text.splitlines():
        if line.startswith("bridge_intake_duration_seconds_bucket{") and "alertmanager" in line:
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    total = buckets[-1][1] if buckets else 0

    def quantile(q: float) -> str:
        for le, count in buckets:
            if count >= q * total:
                return f"<= {le * 1000:g} ms"
        return "?"

    return f"server-side p50 {quantile(0.5)}, p99 {quantile(0.99)}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


class Bench:
    """The fake Pachca (50 req/s, 50 ms answers), the bare server, and fresh bridges."""

    def __init__(
        self,
        quick: bool,
        smoke: bool = False,
        intake_rate: float = 500,
        scale_incidents: int = 10_000,
        from_store: Path | None = None,
        keep_store: Path | None = None,
    ) -> None:
        self.quick = quick
        self.scale_incidents = scale_incidents  # the scale phase's size
        # the scale phase starts on a copy of this state file (made by `keep_store`), not empty
        self.from_store = from_store
        self.keep_store = keep_store  # where the scale phase's state file is kept
        self.intake_rate = intake_rate  # the intake phase's fixed rate of new groups
        self.smoke = smoke  # the tests' version: a few groups, to show the bench still runs
        # the fake shares this process with the load generator: no spec checks here (the
        # tests do them), so its CPU does not delay the requests being timed
        self.fake = FakePachca(rate_limit=50, retry_after=1, delay=0.05, validate=False)
        self.server = TestServer(self.fake.app(), host="127.0.0.1")
        self.state = Path(tempfile.mkdtemp(prefix="bridge-bench-"))

    async def start(self) -> None:
        await self.server.start_server()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PACHCA_", "BRIDGE_"))}
        self.env.update(
            PACHCA_TOKEN=self.fake.token,
            PACHCA_API_URL=str(self.server.make_url("/api/shared/v1")),
            BRIDGE_LOG_LEVEL="WARNING",
            PACHCA_SIGNING_SECRET=SIGNING_SECRET,
        )
        self.rules = self.state / "rules.yaml"
        self.rules.write_text("routes:\n  - {name: default, chat_id: 1000}\n")

    async def bridge(self, phase: str) -> tuple[Any, int]:
        """A bridge with its own empty state file, so no phase waits on another's backlog."""
        self.fake.calls.clear()
        self.fake.messages.clear()
        port = free_port()
        env = {**self.env, "BRIDGE_STORE": f"sqlite:///{self.state / phase}.db"}
        proc = await start(
            [
                sys.executable,
                "-m",
                "bridge",
                "serve",
                "--rules",
                str(self.rules),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            port,
            env,
            self.state / f"{phase}.log",
        )
        return proc, port


async def stop(proc: Any) -> None:
    proc.terminate()
    await proc.wait()


async def phase_intake(bench: Bench) -> None:
    """New groups at a fixed rate (500/s): every request is a commit; next to a bare server."""
    count = 2000 if bench.quick else 5000
    rate = bench.intake_rate
    bodies = [json.dumps(notification(100_000 + n, 3)).encode() for n in range(count)]
    print(
        f"\n1. intake, {count} notifications at a fixed {rate:g}/s (3 alerts each, all new groups)"
    )
    bare_port = free_port()
    bare = await start(
        [sys.executable, "-c", BARE_SERVER, str(bare_port)],
        bare_port,
        bench.env,
        bench.state / "bare.log",
    )
    bridge, bridge_port = await bench.bridge("intake")
    cpu = {}
    for name, port, proc in (
        ("bare aiohttp + json.loads", bare_port, bare),
        ("bridge", bridge_port, bridge),
    ):
        began = cpu_seconds(proc.pid)
        url = f"http://127.0.0.1:{port}/webhook/alertmanager"
        achieved, lat = await fixed_rate(url, bodies, rate)
        cpu[name] = (cpu_seconds(proc.pid) - began) / count * 1000
        print(
            f"   {name:26s} {achieved:7.0f} req/s   p50 {pct(lat, 50):6.2f} ms   "
            f"p99 {pct(lat, 99):6.2f} ms   max {max(lat):6.1f} ms"
        )
    # CPU time, unlike throughput, hardly depends on what else shares the cores
    print(
        f"   CPU per notification: bridge {cpu['bridge']:.2f} ms (its outbox's creates "
        f"included), bare {cpu['bare aiohttp + json.loads']:.2f} ms"
    )
    print(f"   bridge {await server_side(bridge_port)}")
    # a notification the bridge recorded already, sent again and again (Alertmanager's
    # repeat_interval, the HA pair's copies): requests/s flat out, beside the bare server
    count = 2000 if bench.quick else 6000
    rates = {}
    for name, port in (("bare", bare_port), ("bridge", bridge_port)):
        url = f"http://127.0.0.1:{port}/webhook/alertmanager"
        rates[name] = await flat_out(url, bodies[0], count)
    print(
        f"   goal 4: repeats flat out (16 clients): bridge {rates['bridge']:.0f} req/s, bare "
        f"{rates['bare']:.0f} req/s = {rates['bridge'] / rates['bare']:.2f}x (goal >= 0.85x)"
    )
    print(f"   bridge peak RSS: {rss_mb(bridge.pid):.0f} MB")
    await stop(bare)
    await stop(bridge)


async def press_during_storm(
    bench: Bench, port: int, count: int, pressed: list[tuple[float, int]]
) -> None:
    """Once a second, Ack an incident already in the chat (the oldest not yet pressed), as a
    person would while the storm's backlog drains; `pressed` gets (when, message id)."""
    url = f"http://127.0.0.1:{port}/pachca/webhook"
    done: set[int] = set()
    async with aiohttp.ClientSession() as http:
        while len(pressed) < count:
            await asyncio.sleep(1.0)
            ready = [m for m in bench.fake.channel_messages() if m["id"] not in done]
            if not ready:
                continue
            message = ready[0]
            data = next(b["data"] for row in message["buttons"] for b in row if "data" in b)
            ref = data.split(":", 1)[1]
            body = json.dumps(
                {
                    "type": "button",
                    "event": "click",
                    "message_id": message["id"],
                    "trigger_id": f"bench-{ref}",
                    "data": f"ack:{ref}",
                    "user_id": PRESSER,
                    "chat_id": message["entity_id"],
                    "webhook_timestamp": int(time.time()),
                }
            ).encode()
            done.add(message["id"])
            pressed.append((time.monotonic(), message["id"]))
            headers = {
                "Content-Type": "application/json",
                "Pachca-Signature": signature(SIGNING_SECRET, body),
            }
            async with http.post(url, data=body, headers=headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"press answered HTTP {resp.status}")


def press_latencies(
    calls: list[Call], pressed: list[tuple[float, int]]
) -> tuple[list[float], list[float]]:
    """Seconds from each press to the edit of its message, and to the next DM to the presser
    (the Ack's answer), as Pachca received them."""
    edits: list[float] = []
    dms: list[float] = []
    for at, message_id in pressed:
        edit = [c.at for c in calls if c.method == "PUT" and c.path == f"/messages/{message_id}"]
        edit = [t for t in edit if t > at]
        dm = [
            c.at
            for c in calls
            if c.method == "POST"
            and c.path == "/messages"
            and c.status < 300
            and c.at > at
            and (c.body or {}).get("message", {}).get("entity_type") == "user"
        ]
        edits.append(min(edit) - at if edit else float("inf"))
        dms.append(min(dm) - at if dm else float("inf"))
    return edits, dms


async def phase_storm(bench: Bench) -> None:
    """N alerts in G groups of mixed severity, each notification twice (a split HA pair),
    Pachca slow and rate-limited, a person pressing Ack once a second meanwhile."""
    groups, per_group = (60, 3) if bench.smoke else (200, 10) if bench.quick else (1000, 10)
    presses = 2 if bench.smoke else 5 if bench.quick else 10
    print(
        f"\n2. storm: {groups * per_group} alerts in {groups} groups (1 in 10 critical), each "
        f"notification twice, {presses} presses of Ack meanwhile"
    )
    bench.fake.add_user(PRESSER, "Алиса", "Петрова", "alice")
    bridge, bridge_port = await bench.bridge("storm")
    storm = [json.dumps(notification(n, per_group)).encode() for n in range(groups)]
    sent: list[float] = []
    pressed: list[tuple[float, int]] = []
    presser = asyncio.create_task(press_during_storm(bench, bridge_port, presses, pressed))
    began = time.monotonic()
    rate, lat = await fixed_rate(
        f"http://127.0.0.1:{bridge_port}/webhook/alertmanager",
        [b for body in storm for b in (body, body)],
        500,
        sent,
    )
    intake_done = time.monotonic() - began
    wanted = {f"Storm{n}" for n in range(groups)}

    def created() -> dict[str, list[float]]:
        """Group name -> when Pachca accepted each create of its message."""
        by_name: dict[str, list[float]] = {}
        for c in bench.fake.calls:
            if c.method == "POST" and c.path == "/messages" and c.status < 300 and c.body:
                message = c.body["message"]
                if message["entity_type"] == "discussion" and not message.get("parent_message_id"):
                    name = message["content"].splitlines()[0].split("**")[3]
                    by_name.setdefault(name, []).append(c.at)
        return by_name

    def answered() -> bool:
        """Every press has its edit and its DM at Pachca."""
        edits, dms = press_latencies(bench.fake.calls, pressed)
        return float("inf") not in edits + dms

    while time.monotonic() - began < 900 and not (
        wanted <= set(created()) and presser.done() and answered()
    ):
        await asyncio.sleep(0.2)
    presser.cancel()
    by_group = created()
    all_there = max(min(t) for t in by_group.values()) - began
    calls = Counter(f"{c.method} {c.template} {c.status}" for c in bench.fake.calls)
    limited = sum(v for k, v in calls.items() if k.endswith(" 429"))
    # each group's first copy was sent at sent[2n]
    waited = {
        sev: sorted(
            min(by_group[f"Storm{n}"]) - sent[2 * n] for n in range(groups) if severity(n) == sev
        )
        for sev in ("critical", "error", "warning")
    }
    warnings = [n for n in range(groups) if severity(n) == "warning"]
    first_warning = min(min(by_group[f"Storm{n}"]) for n in warnings)
    print(
        f"   intake: {rate:.0f} req/s, p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms, "
        f"all {2 * groups} accepted in {intake_done:.1f} s"
    )
    for sev, times in waited.items():
        print(
            f"   {sev:8s} notification -> its message in the chat: p50 {pct(times, 50):5.2f} s, "
            f"worst {times[-1]:5.2f} s"
        )
    print(
        f"   goal 1: every critical in the chat within 2 s of its notification: worst "
        f"{waited['critical'][-1]:.2f} s; the first warning's create came "
        f"{first_warning - began:.2f} s in"
    )
    edits, dms = press_latencies(bench.fake.calls, pressed)
    print(
        f"   goal 2: a press's edit and DM within 1 s: edit p50 {pct(edits, 50):.2f} s, worst "
        f"{max(edits):.2f} s; DM p50 {pct(dms, 50):.2f} s, worst {max(dms):.2f} s "
        f"({len(pressed)} presses)"
    )
    ceiling = groups / 50
    print(
        f"   goal 3: every group had its message after {all_there:.1f} s = "
        f"{all_there / ceiling:.2f}x the {ceiling:.0f} s Pachca's 50 req/s alone needs (goal "
        f"<= 1.1x); 429 answers: {limited} of {sum(calls.values())} calls = "
        f"{100 * limited / sum(calls.values()):.2f} % (goal <= 1 %)"
    )
    print(
        f"   duplicates: {sum(1 for g in wanted if len(by_group.get(g, [])) > 1)}, "
        f"lost: {sum(1 for g in wanted if not by_group.get(g))}"
    )
    print(f"   {await server_side(bridge_port)}")
    print("   Pachca calls: " + ", ".join(f"{k}: {v}" for k, v in sorted(calls.items())))
    print(f"   where the time went: {per_second(bench.fake.calls, began, intake_done)}")
    print(f"   bridge peak RSS: {rss_mb(bridge.pid):.0f} MB")
    await stop(bridge)


def per_second(calls: list[Call], began: float, intake_done: float) -> str:
    """Calls Pachca accepted in each second of the storm, `/n` where it answered n with 429,
    `|` where the intake ended."""
    ok: Counter[int] = Counter()
    refused: Counter[int] = Counter()
    for call in calls:
        second = int(call.at - began)
        (refused if call.status == 429 else ok)[second] += 1
    seconds = range(max([*ok, *refused], default=0) + 1)
    marks = [f"{ok[n]}/{refused[n]}" if refused[n] else str(ok[n]) for n in seconds]
    cut = int(intake_done) + 1
    return " ".join(marks[:cut]) + " | " + " ".join(marks[cut:])


def copy_state(source: str, target: str) -> None:
    """A state file, and its write-ahead log if it has one."""
    for suffix in ("", "-wal"):
        if os.path.exists(source + suffix):
            shutil.copy(source + suffix, target + suffix)


async def phase_scale(bench: Bench) -> None:
    """100,000 active alerts in 10,000 incidents (delivery lags; memory is the point), or
    `--scale-incidents` of them; the intake's latency is also printed for the last 5,000
    notifications alone (the store at full size). With `--scale-from-store`, that many new
    groups on a copy of a state file an earlier run kept (`--keep-store`): goal 5's size from
    the first notification, so side-by-side runs take a minute instead of five."""
    incidents = 2000 if bench.quick else bench.scale_incidents
    first = 500_000
    if bench.from_store is None:
        print(f"\n3. scale: {incidents * 10} active alerts in {incidents} incidents")
    else:  # groups after those the store holds (at most 1,000,000 of them)
        first = 1_500_000
        copy_state(str(bench.from_store), str(bench.state / "scale.db"))
        print(f"\n3. scale: {incidents} new incidents of 10 alerts on a copy of {bench.from_store}")
    bridge, bridge_port = await bench.bridge("scale")
    bodies = [json.dumps(notification(first + n, 10)).encode() for n in range(incidents)]
    rate, lat = await fixed_rate(
        f"http://127.0.0.1:{bridge_port}/webhook/alertmanager", bodies, 500
    )
    print(
        f"   intake: {rate:.0f} req/s, p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms, "
        f"max {max(lat):.1f} ms" + (" (goal 5: p99 < 10 ms)" if bench.from_store else "")
    )
    if incidents > 10_000 and bench.from_store is None:
        last = lat[-5000:]
        print(
            f"   the last 5000 (from {incidents - 5000} incidents on): p50 {pct(last, 50):.2f} "
            f"ms, p99 {pct(last, 99):.2f} ms, max {max(last):.1f} ms (goal 5: p99 < 10 ms)"
        )
    print(f"   {await server_side(bridge_port)}")
    print(
        f"   bridge RSS now {rss_mb(bridge.pid, 'VmRSS'):.0f} MB, "
        f"peak {rss_mb(bridge.pid):.0f} MB; state file "
        f"{(bench.state / 'scale.db').stat().st_size / 1e6:.0f} MB"
    )
    await stop(bridge)
    if bench.keep_store is not None:
        copy_state(str(bench.state / "scale.db"), str(bench.keep_store))
        print(f"   state file kept as {bench.keep_store}")


PHASES = {"intake": phase_intake, "storm": phase_storm, "scale": phase_scale}


async def main(
    quick: bool,
    phases: list[str],
    smoke: bool = False,
    intake_rate: float = 500,
    scale_incidents: int = 10_000,
    from_store: Path | None = None,
    keep_store: Path | None = None,
) -> None:
    bench = Bench(quick, smoke, intake_rate, scale_incidents, from_store, keep_store)
    await bench.start()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores; fake Pachca: 50 req/s, "
        f"answers after 50 ms; bridge state in {bench.state} (removed at the end)"
    )
    try:
        for name in phases:
            await PHASES[name](bench)
    finally:
        await bench.server.close()
        # a scale phase leaves a state file of 1.2 GB at 100,000 incidents (--keep-store
        # copies it out first)
        shutil.rmtree(bench.state, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller numbers, about 1 minute")
    parser.add_argument("--smoke", action="store_true", help="storm of 60 groups (the tests')")
    parser.add_argument(
        "--intake-rate", type=float, default=500, help="new groups/s of the intake phase (500)"
    )
    parser.add_argument(
        "--scale-incidents",
        type=int,
        default=10_000,
        help="incidents of 10 alerts in the scale phase (10,000; goal 5 is at 100,000)",
    )
    parser.add_argument(
        "--fingerprints",
        choices=["sequential", "hashed"],
        default="sequential",
        help="alert fingerprints counted up (default, the README's figures) or hashed like"
        " Alertmanager's",
    )
    parser.add_argument(
        "--keep-store",
        type=Path,
        help="keep the scale phase's state file here (for --scale-from-store)",
    )
    parser.add_argument(
        "--scale-from-store",
        type=Path,
        help="the scale phase starts on a copy of this state file (--keep-store) and sends"
        " --scale-incidents new groups: goal 5's size in seconds, for side-by-side runs",
    )
    parser.add_argument("phases", nargs="*", help=f"some of {', '.join(PHASES)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    FINGERPRINTS = args.fingerprints
    asyncio.run(
        main(
            args.quick,
            args.phases or list(PHASES),
            args.smoke,
            args.intake_rate,
            args.scale_incidents,
            args.scale_from_store,
            args.keep_store,
        )
    )
