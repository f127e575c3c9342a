"""`/healthz` (the process and its background loops work), `/readyz` (intake can record: store
reachable, rules loaded), `/metrics` (with the backlog gauges read from the store as scraped)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.errors import StoreError
from bridge.web.state import CLOCK, METRICS, RULES, STORE, SUPERVISOR

log = logging.getLogger(__name__)

# a scrape must answer even when the store hangs: the gauges then keep their last values
BACKLOG_READ_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    """503 while a background loop is down or stalled, so Kubernetes restarts the pod; intake
    is not part of it (a store outage is /readyz's business, and restarts would not help)."""
    problems = request.app[SUPERVISOR].problems()
    if problems:
        return web.json_response({"status": "unhealthy", "problems": problems}, status=503)
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problems = []
    try:
        await request.app[STORE].ping()
    except StoreError as exc:
        problems.append(f"store: {exc}")
    if not request.app[RULES].routes:
        problems.append("rules: none loaded")
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    registry = app[METRICS]
    try:
        async with asyncio.timeout(BACKLOG_READ_TIMEOUT):
            backlog = await app[STORE].outbox_stats(app[CLOCK]())
    except (StoreError, TimeoutError) as exc:
        registry.store_errors.inc()
        log.warning("metrics: cannot read the outbox backlog: %s", exc or "timed out")
    else:
        registry.outbox_depth.set(backlog.depth)
        registry.outbox_oldest_age.set(backlog.oldest_age)
        registry.dead_letters.set(backlog.dead_letters)
    supervisor = app[SUPERVISOR]
    for name in supervisor.pulses:
        registry.background_stalled.labels(name).set(supervisor.problem(name) is not None)
    body = generate_latest(registry.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
