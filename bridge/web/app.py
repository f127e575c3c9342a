"""Builds the aiohttp application and owns its background work (the outbox)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from bridge.admission import Admission
from bridge.alertmanager_api import AlertmanagerClient, AlertmanagerCluster
from bridge.attempts import SETTLE_TIMEOUTS
from bridge.calendar_feeds import CalendarFeeds
from bridge.chat_events import ChatEvents
from bridge.errors import PachcaError, StoreError
from bridge.housekeeping import checkpoint_forever, prune_forever
from bridge.inbox import Inbox
from bridge.logs import QuietAcceptErrors
from bridge.metrics import Metrics
from bridge.outbox import Outbox
from bridge.pachca import PachcaApi, PachcaClient
from bridge.poller import Poller
from bridge.render import RenderOptions
from bridge.rules import Rules
from bridge.scheduler import Scheduler
from bridge.schedules import LiveSchedules
from bridge.settings import Settings
from bridge.silencer import Silencer
from bridge.sources import alertmanager, grafana
from bridge.store import Store
from bridge.tasks import Pulse, Supervisor
from bridge.users import UserNames
from bridge.web import health, ui
from bridge.web.auth import IntakeAuth
from bridge.web.callbacks import pachca_webhook
from bridge.web.intake import BodyCheck, intake_handler, json_error
from bridge.web.pages import UiAccess, incident_link
from bridge.web.recent import Recent
from bridge.web.state import (
    AUTH,
    CLOCK,
    EVENTS,
    INBOX,
    INTAKE_SLOTS,
    METRICS,
    OUTBOX,
    PACHCA,
    RULES,
    SETTINGS,
    SILENCER,
    STATS,
    STORE,
    SUPERVISOR,
    UI,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# an idle keep-alive connection is closed after this (aiohttp's default is an hour)
KEEPALIVE_SECONDS = 75.0
# after answering a body that was not read to its end (408, 413), unread bytes are drained
# this long at most before the connection is closed (aiohttp's default: 10 s)
LINGER_SECONDS = 1.0


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is JSON, never an HTML page or a stack trace."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        answer = json_error(exc.status, exc.reason)
        if "WWW-Authenticate" in exc.headers:  # the pages ask for their own credentials
            answer.headers["WWW-Authenticate"] = exc.headers["WWW-Authenticate"]
        return answer
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal error")


def grafana_signature(settings: Settings) -> BodyCheck | None:
    """With GRAFANA_WEBHOOK_SECRET set, Grafana's HMAC signature is required."""
    secret = settings.GRAFANA_WEBHOOK_SECRET
    if secret is None:
        return None

    def check(request: web.Request, body: bytes) -> None:
        grafana.require_signature(
            secret.get_secret_value(),
            body,
            request.headers,
            settings.GRAFANA_SIGNATURE_HEADER,
            settings.GRAFANA_TIMESTAMP_HEADER,
            request.app[CLOCK](),
            settings.GRAFANA_SIGNATURE_MAX_AGE,
        )

    return check


SWAPS_REFRESH_SECONDS = 5.0
# Notifications recorded at once; the rest wait, parsed, and the most severe of them (then the
# earliest) goes next, or one that has waited 5 s (bridge.admission). In a storm the
# intake can take every bit of the event loop: hundreds of requests in flight would each get a
# slice in turn, and a button press, the outbox's calls to Pachca and a critical's create
# would wait behind all of them.
INTAKE_AT_ONCE = 8
# /stats is read again at most this often (seconds): its figures are of days
STATS_FRESH_FOR = 60.0


async def follow_swaps(store: Store, schedules: LiveSchedules, pulse: Pulse) -> None:
    """Keep this replica's view of the swaps taken in the chat (on any replica) fresh."""
    while True:
        try:
            schedules.update(await store.swaps(time.time()))
        except StoreError as exc:
            log.warning("swaps: store unavailable, will retry: %s", exc)
        pulse.beat(SWAPS_REFRESH_SECONDS)
        await asyncio.sleep(SWAPS_REFRESH_SECONDS)


def start_background(
    supervisor: Supervisor,
    settings: Settings,
    store: Store,
    outbox: Outbox,
    inbox: Inbox,
    rules: Rules,
    pachca: PachcaApi,
    events: ChatEvents,
) -> None:
    """Every background loop, each supervised (restarted if it fails, watched by /healthz)."""
    supervisor.start("outbox", outbox.run)
    supervisor.start("checkpoint", lambda pulse: checkpoint_forever(store, pulse))
    supervisor.start(
        "prune",
        lambda pulse: prune_forever(
            store, settings.retention, settings.BRIDGE_DEAD_LETTER_RETENTION, pulse
        ),
    )
    silencer = outbox.silencer
    scheduler = Scheduler(
        store,
        inbox,
        rules,
        stale_after=settings.BRIDGE_STALE_AFTER,
        look_for=silencer.look_for if silencer is not None else None,
    )
    supervisor.start(
        "scheduler", lambda pulse: scheduler.run(settings.BRIDGE_SCHEDULER_INTERVAL, pulse)
    )
    if silencer is not None:
        interval = settings.BRIDGE_SILENCE_CHECK_INTERVAL
        supervisor.start("silence-watch", lambda pulse: silencer.watch(store, interval, pulse))
    if rules.schedules:
        supervisor.start("swaps", lambda pulse: follow_swaps(store, events.schedules, pulse))
    feeds = CalendarFeeds(store, events.schedules, outbox.metrics)
    if feeds.names:
        supervisor.start("calendars", feeds.run)
    if settings.BRIDGE_CALLBACK_MODE == "poll":
        if isinstance(pachca, PachcaClient):
            poller = Poller(pachca, events, settings.BRIDGE_POLL_INTERVAL)
            supervisor.start("poller", poller.run)
        else:
            log.warning("BRIDGE_CALLBACK_MODE=poll needs a real Pachca token; not polling")


def create_app(
    settings: Settings,
    rules: Rules,
    store: Store,
    pachca: PachcaApi,
    metrics: Metrics | None = None,
    *,
    run_outbox: bool = True,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The bridge as an aiohttp app; the store is opened and the outbox started on startup."""
    app = web.Application(
        middlewares=[json_errors],
        # bodies are decoded by intake itself (web/body.py): within the size limit and the
        # read deadline, and with a JSON error for an encoding it does not take
        handler_args={
            "auto_decompress": False,
            "keepalive_timeout": KEEPALIVE_SECONDS,
            "lingering_time": LINGER_SECONDS,
        },
    )
    metrics = metrics or Metrics()
    app[SUPERVISOR] = supervisor = Supervisor(metrics, settings.BRIDGE_STALL_AFTER)
    silence_apis = {}
    if settings.ALERTMANAGER_URL is not None:
        auth = settings.ALERTMANAGER_AUTH
        silence_apis[alertmanager.SOURCE] = AlertmanagerCluster(
            [
                AlertmanagerClient(url, auth.get_secret_value() if auth else None)
                for url in settings.alertmanager_urls
            ]
        )
    if settings.grafana_alertmanager is not None:
        silence_apis[grafana.SOURCE] = AlertmanagerCluster(
            [AlertmanagerClient(*settings.grafana_alertmanager)]
        )
    # the schedules with the swaps taken in the chat laid over them (refreshed by "swaps")
    schedules = LiveSchedules(rules.schedules)
    render_options = RenderOptions(
        incident_link=lambda ref: incident_link(settings, ref),
        schedules=schedules,
        timezone=settings.timezone,
        silence_sources=settings.silence_sources,
    )
    outbox = Outbox(
        store=store,
        pachca=pachca,
        rules=rules,
        render_options=render_options,
        metrics=metrics,
        users=UserNames(pachca, settings.BRIDGE_USER_CACHE_TTL),
        concurrency=settings.BRIDGE_OUTBOX_CONCURRENCY,
        max_retry_delay=settings.BRIDGE_RETRY_MAX_DELAY,
        create_settle=SETTLE_TIMEOUTS * settings.PACHCA_TIMEOUT,
        claim_ttl=settings.BRIDGE_CLAIM_TTL,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[RULES] = rules
    app[STORE] = store
    app[PACHCA] = pachca
    app[METRICS] = metrics
    app[AUTH] = IntakeAuth(settings.BRIDGE_WEBHOOK_TOKEN, settings.BRIDGE_WEBHOOK_BASIC_AUTH)
    app[OUTBOX] = outbox
    app[INTAKE_SLOTS] = Admission(INTAKE_AT_ONCE)
    app[INBOX] = inbox = Inbox(
        store,
        rules,
        metrics,
        resolved_ttl=settings.BRIDGE_RESOLVED_TTL,
        dedup_ttl=settings.BRIDGE_DEDUP_TTL,
        stale_after=settings.BRIDGE_STALE_AFTER,
        dedup_size=settings.BRIDGE_DEDUP_CACHE_SIZE,
        render_options=render_options,
        on_commit=outbox.wake,
        priority_label=settings.BRIDGE_PRIORITY_LABEL,
        priority_order=settings.priority_order,
    )
    if isinstance(pachca, PachcaClient) and pachca.limiter is not None:
        # waiting out a 429 pause is not a stall
        pachca.limiter.on_pause = supervisor.pulse("outbox").excuse
    if silence_apis:
        outbox.silencer = Silencer(
            silence_apis, inbox, outbox.users, settle_seconds=settings.BRIDGE_ALERTMANAGER_SETTLE
        )
    app[SILENCER] = outbox.silencer

    async def nickname_of(user_id: int) -> str | None:
        try:
            return str((await pachca.get_user(user_id)).get("nickname") or "") or None
        except PachcaError:
            return None

    app[EVENTS] = events = ChatEvents(
        inbox,
        settings.BRIDGE_ACK_REACTION,
        settings.BRIDGE_PUBLIC_URL,
        schedules=schedules,
        nickname_of=nickname_of,
    )
    app.router.add_post(
        "/webhook/alertmanager", intake_handler(alertmanager.SOURCE, alertmanager.parse)
    )
    grafana_intake = intake_handler(grafana.SOURCE, grafana.parse, grafana_signature(settings))
    app.router.add_post("/webhook/grafana", grafana_intake)
    app.router.add_put("/webhook/grafana", grafana_intake)
    app.router.add_post("/pachca/webhook", pachca_webhook)
    app[UI] = UiAccess(settings)
    app[STATS] = Recent(STATS_FRESH_FOR, clock)
    ui.add_routes(app)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        asyncio.get_running_loop().set_exception_handler(QuietAcceptErrors())
        await store.open()
        if app[AUTH].open:
            log.warning(
                "intake is OPEN: neither BRIDGE_WEBHOOK_TOKEN nor BRIDGE_WEBHOOK_BASIC_AUTH is "
                "set, so anyone who reaches this port can post alerts; set one outside trials"
            )
        if settings.PACHCA_SIGNING_SECRET is None and settings.BRIDGE_CALLBACK_MODE == "webhook":
            log.warning(
                "PACHCA_SIGNING_SECRET is not set: button presses sent to "
                "/pachca/webhook are refused (set it, or use BRIDGE_CALLBACK_MODE=poll)"
            )
        if app[UI].loopback_only:
            log.warning(
                "incident pages (/incidents) answer loopback clients only: set "
                "BRIDGE_UI_BASIC_AUTH or BRIDGE_UI_USER_HEADER to open them to people"
            )
        supervisor.stopping = False
        if run_outbox:
            start_background(supervisor, settings, store, outbox, inbox, rules, pachca, events)
        yield
        supervisor.stopping = True
        delivering = supervisor.task("outbox")
        if delivering is not None:
            log.info(
                "stopping: delivering what is due for up to %gs (BRIDGE_SHUTDOWN_GRACE)",
                settings.BRIDGE_SHUTDOWN_GRACE,
            )
            handled, left = await outbox.shutdown(delivering, settings.BRIDGE_SHUTDOWN_GRACE)
            (log.warning if left else log.info)(
                "stopped: %d outbox items handled while stopping, %d left for the next start",
                handled,
                left,
            )
        else:
            log.info("stopped")
        await supervisor.stop()
        await pachca.close()
        for client in silence_apis.values():
            await client.close()
        await store.close()

    app.cleanup_ctx.append(lifecycle)
    return app
