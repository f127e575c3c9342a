"""The incident pages' HTTP handlers (rendering and access rules in `pages.py`)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from bridge.matchers import MatcherSyntaxError
from bridge.store import summaries
from bridge.timeline import incident_json
from bridge.web import pages
from bridge.web.listing import Cursor, Filter, list_page
from bridge.web.state import CLOCK, OUTBOX, RULES, STATS, STORE, UI
from bridge.words import WORDS

_HTML_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # no scripts at all; styles from this origin only
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'",
}


# the API's page of incidents: by default, and at most
API_PAGE = 100
API_PAGE_MOST = 1000


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


def _filter(request: web.Request) -> Filter:
    q = request.query
    return Filter(q.get("state", ""), q.get("route", ""), q.get("q", ""))


def _after(request: web.Request) -> Cursor | None:
    """The page's cursor (`after`); raises ValueError for one the list did not write."""
    text = request.query.get("after", "")
    return Cursor.parse(text) if text else None


async def incident_list(request: web.Request) -> web.Response:
    request.app[UI].require_person(request)
    where = _filter(request)
    query = {"state": where.state, "route": where.route, "q": where.query}
    words = WORDS[request.app[RULES].default.config.language]
    try:
        after = _after(request)
    except ValueError:
        after = None  # a mangled link: from the first page
    try:
        shown, more = await list_page(request.app[STORE], where, pages.PAGE_SIZE, after)
    except MatcherSyntaxError as exc:
        shown, more, query["error"] = [], None, f"q: {exc}"
    html = pages.render_list(
        pages.list_rows(shown), words, query, after is not None, more.text() if more else None
    )
    return web.Response(text=html, content_type="text/html", headers=_HTML_HEADERS)


async def api_incidents(request: web.Request) -> web.Response:
    """`?limit=` (1-1000, default 100) incidents a page, `next` the cursor of the page after
    (`?after=`), null on the last."""
    request.app[UI].require_person(request)
    limit_text = request.query.get("limit", str(API_PAGE))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= API_PAGE_MOST:
        return web.json_response({"error": f"limit: 1 to {API_PAGE_MOST}"}, status=400)
    try:
        after = _after(request)
    except ValueError:
        return web.json_response({"error": "after: not a cursor from `next`"}, status=400)
    try:
        shown, more = await list_page(request.app[STORE], _filter(request), int(limit_text), after)
    except MatcherSyntaxError as exc:
        return web.json_response({"error": f"q: {exc}"}, status=400)
    data: list[Any] = [json.loads(i.model_dump_json()) for i in shown]
    return web.json_response(
        {"incidents": data, "next": more.text() if more else None},
        headers={"Cache-Control": "no-store"},
    )


async def stats_page(request: web.Request) -> web.Response:
    """Read at most once a STATS_FRESH_FOR: 30 days of incidents are many after a storm."""
    request.app[UI].require_person(request)
    rules = request.app[RULES]

    async def read() -> list[dict[str, Any]]:
        now = datetime.fromtimestamp(request.app[CLOCK](), UTC)
        since = (now - timedelta(days=pages.STATS_DAYS)).timestamp()
        held = await summaries(request.app[STORE], since)
        return pages.stats_view(held, [r.name for r in rules.routes], now)

    view = await request.app[STATS].get(read)
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
