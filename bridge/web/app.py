"""Builds the aiohttp application and owns its background work (the outbox)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from bridge.housekeeping import prune_forever
from bridge.inbox import Inbox
from bridge.metrics import Metrics
from bridge.outbox import Outbox
from bridge.pachca import PachcaApi
from bridge.render import RenderOptions
from bridge.rules import Rules
from bridge.settings import Settings
from bridge.sources import alertmanager
from bridge.store import Store
from bridge.web import health
from bridge.web.auth import IntakeAuth
from bridge.web.intake import intake_handler, json_error
from bridge.web.state import (
    AUTH,
    INBOX,
    METRICS,
    OUTBOX,
    PACHCA,
    RULES,
    SETTINGS,
    STORE,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is JSON, never an HTML page or a stack trace."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal error")


def create_app(
    settings: Settings,
    rules: Rules,
    store: Store,
    pachca: PachcaApi,
    metrics: Metrics | None = None,
    *,
    run_outbox: bool = True,
) -> web.Application:
    """The bridge as an aiohttp app; the store is opened and the outbox started on startup."""
    app = web.Application(middlewares=[json_errors])
    metrics = metrics or Metrics()
    outbox = Outbox(
        store=store,
        pachca=pachca,
        rules=rules,
        render_options=RenderOptions(
            timezone=settings.timezone, silence_enabled=settings.ALERTMANAGER_URL is not None
        ),
        metrics=metrics,
        concurrency=settings.BRIDGE_OUTBOX_CONCURRENCY,
        max_retry_delay=settings.BRIDGE_RETRY_MAX_DELAY,
    )
    app[SETTINGS] = settings
    app[RULES] = rules
    app[STORE] = store
    app[PACHCA] = pachca
    app[METRICS] = metrics
    app[AUTH] = IntakeAuth(settings.BRIDGE_WEBHOOK_TOKEN, settings.BRIDGE_WEBHOOK_BASIC_AUTH)
    app[OUTBOX] = outbox
    app[INBOX] = Inbox(
        store,
        rules,
        metrics,
        resolved_ttl=settings.BRIDGE_RESOLVED_TTL,
        dedup_ttl=settings.BRIDGE_DEDUP_TTL,
        dedup_size=settings.BRIDGE_DEDUP_CACHE_SIZE,
        on_commit=outbox.wake,
    )
    app.router.add_post(
        "/webhook/alertmanager", intake_handler(alertmanager.SOURCE, alertmanager.parse)
    )
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        if app[AUTH].open:
            log.warning(
                "intake is OPEN: neither BRIDGE_WEBHOOK_TOKEN nor BRIDGE_WEBHOOK_BASIC_AUTH is "
                "set, so anyone who reaches this port can post alerts; set one outside trials"
            )
        tasks = []
        if run_outbox:
            tasks = [
                asyncio.create_task(outbox.run(), name="outbox"),
                asyncio.create_task(prune_forever(store, settings.retention), name="prune"),
            ]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pachca.close()
        await store.close()

    app.cleanup_ctx.append(lifecycle)
    return app
