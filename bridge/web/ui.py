"""The incident pages' HTTP handlers (rendering and access rules in `pages.py`)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bridge.matchers import MatcherSyntaxError
from bridge.timeline import incident_json
from bridge.web import pages
from bridge.web.state import OUTBOX, RULES, STORE, UI
from bridge.words import WORDS

_HTML_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # no scripts at all; styles from this origin only
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'",
}


def _ref(request: web.Request) -> str:
    return request.match_info["ref"]


async def incident_page(request: web.Request) -> web.Response:
    ref = _ref(request)
    request.app[UI].require_incident(request, ref)
    loaded = await pages.load_view(request.app[STORE], ref)
    if loaded is None:
        raise web.HTTPNotFound(text="no such incident")
    stored, events, dropped = loaded
    words = WORDS[request.app[RULES].by_name(stored.incident.route).config.language]
    # people as their names (Pachca's, cached), not ids
    ids = {v for e in events for k, v in e.details.items() if k == "by" and isinstance(v, int)}
    names = await request.app[OUTBOX].users.names(ids) if ids else {}
    view = pages.incident_view(stored, events, dropped, time.time(), names)
    return web.Response(
        text=pages.render_incident(view, words), content_type="text/html", headers=_HTML_HEADERS
    )


async def incident_data(request: web.Request) -> web.Response:
    ref = _ref(request)
    request.app[UI].require_incident(request, ref)
    loaded = await pages.load_view(request.app[STORE], ref)
    if loaded is None:
        raise web.HTTPNotFound(text="no such incident")
    stored, events, dropped = loaded
    return web.json_response(
        incident_json(stored.incident, events, dropped), headers={"Cache-Control": "no-store"}
    )


def _query(request: web.Request) -> dict[str, str]:
    return {
        "state": request.query.get("state", ""),
        "route": request.query.get("route", ""),
        "q": request.query.get("q", ""),
    }


async def incident_list(request: web.Request) -> web.Response:
    request.app[UI].require_person(request)
    query = _query(request)
    rules = request.app[RULES]
    words = WORDS[rules.default.config.language]
    held = [s.incident for s in await request.app[STORE].all_incidents()]
    try:
        shown = pages.select(held, query["state"], query["route"], query["q"])
    except MatcherSyntaxError as exc:
        shown, query["error"] = [], f"q: {exc}"
    try:
        page = max(1, int(request.query.get("page", "1")))
    except ValueError:
        page = 1
    pages_total = pages.page_count(len(shown))
    page = min(page, pages_total)
    rows = pages.list_rows(shown[(page - 1) * pages.PAGE_SIZE : page * pages.PAGE_SIZE])
    html = pages.render_list(rows, words, query, page, pages_total)
    return web.Response(text=html, content_type="text/html", headers=_HTML_HEADERS)


async def api_incidents(request: web.Request) -> web.Response:
    request.app[UI].require_person(request)
    query = _query(request)
    held = [s.incident for s in await request.app[STORE].all_incidents()]
    try:
        shown = pages.select(held, query["state"], query["route"], query["q"])
    except MatcherSyntaxError as exc:
        return web.json_response({"error": f"q: {exc}"}, status=400)
    data: list[Any] = [json.loads(i.model_dump_json()) for i in shown]
    return web.json_response({"incidents": data}, headers={"Cache-Control": "no-store"})


async def stats_page(request: web.Request) -> web.Response:
    request.app[UI].require_person(request)
    rules = request.app[RULES]
    held = [s.incident for s in await request.app[STORE].all_incidents()]
    now = datetime.now(UTC)
    view = pages.stats_view(held, [r.name for r in rules.routes], now)
    html = pages.render_stats(view, WORDS[rules.default.config.language])
    return web.Response(text=html, content_type="text/html", headers=_HTML_HEADERS)


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(
        text=pages.STYLESHEET, content_type="text/css", headers={"Cache-Control": "max-age=3600"}
    )


async def no_icon(request: web.Request) -> web.Response:
    """Browsers ask for one; there is none."""
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})


def add_routes(app: web.Application) -> None:
    ref = "{ref:[0-9a-f]{6,32}}"
    app.router.add_get("/incidents", incident_list)
    app.router.add_get(f"/incidents/{ref}.json", incident_data)
    app.router.add_get(f"/incidents/{ref}", incident_page)
    app.router.add_get("/api/v1/incidents", api_incidents)
    app.router.add_get("/stats", stats_page)
    app.router.add_get("/ui.css", stylesheet)
    app.router.add_get("/favicon.ico", no_icon)
