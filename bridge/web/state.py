"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from bridge.admission import Admission
from bridge.chat_events import ChatEvents
from bridge.inbox import Inbox
from bridge.metrics import Metrics
from bridge.outbox import Outbox
from bridge.pachca import PachcaApi
from bridge.rules import Rules
from bridge.settings import Settings
from bridge.silencer import Silencer
from bridge.store import Store
from bridge.tasks import Supervisor
from bridge.web.auth import IntakeAuth
from bridge.web.pages import UiAccess
from bridge.web.recent import Recent

SETTINGS = web.AppKey("settings", Settings)
# unix time now; tests replace it to check freshness windows
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
RULES = web.AppKey("rules", Rules)
STORE = web.AppKey("store", Store)
PACHCA = web.AppKey("pachca", PachcaApi)
METRICS = web.AppKey("metrics", Metrics)
AUTH = web.AppKey("auth", IntakeAuth)
INBOX = web.AppKey("inbox", Inbox)
# notifications recorded at once (see web.app.INTAKE_AT_ONCE)
INTAKE_SLOTS = web.AppKey("intake_slots", Admission)
EVENTS = web.AppKey("events", ChatEvents)
OUTBOX = web.AppKey("outbox", Outbox)
SILENCER: web.AppKey[Silencer | None] = web.AppKey("silencer")
SUPERVISOR = web.AppKey("supervisor", Supervisor)
UI = web.AppKey("ui", UiAccess)
# what /stats shows, read at most once a minute (see ui.stats_page)
STATS: web.AppKey[Recent[list[dict[str, Any]]]] = web.AppKey("stats")
