"""Incident pages, served by the bridge itself: each incident's present and past (its timeline)
on a light, server-rendered page a phone opens from a Pachca link; the list of incidents; the
same as JSON. No JavaScript, one small stylesheet.

Access (the pages show alert contents): a chat link carries `?t=<token>`, an HMAC of the ref
with BRIDGE_UI_SECRET (optionally expiring after BRIDGE_UI_LINK_TTL), opening that incident
only; the list and the API need BRIDGE_UI_BASIC_AUTH or a user header set by a trusted auth
proxy (BRIDGE_UI_USER_HEADER, from BRIDGE_TRUSTED_PROXIES only); with neither configured, the
pages answer loopback clients only. Refusals say nothing of what they guard.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from ipaddress import ip_address, ip_network
from typing import Any
from urllib.parse import quote

from aiohttp import web
from jinja2 import Environment, select_autoescape

from bridge.briefs import Brief
from bridge.matchers import MatcherSyntaxError
from bridge.model import AlertStatus, Incident, IncidentState
from bridge.render import incident_title, message_url
from bridge.settings import Settings
from bridge.silences import silence_matchers
from bridge.stats import chart_svg, route_stats
from bridge.store import Store, Stored
from bridge.timeline import Event

PAGE_SIZE = 50
# the longest window /stats shows, in days (the other is a week)
STATS_DAYS = 30
_LOOPBACK = (ip_network("127.0.0.0/8"), ip_network("::1/128"))
_HTML = Environment(
    autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True
)
_TEMPLATES = resources.files("bridge").joinpath("templates/pages")
_INCIDENT = _HTML.from_string(_TEMPLATES.joinpath("incident.html.j2").read_text("utf-8"))
_LIST = _HTML.from_string(_TEMPLATES.joinpath("list.html.j2").read_text("utf-8"))
_STATS = _HTML.from_string(_TEMPLATES.joinpath("stats.html.j2").read_text("utf-8"))
STYLESHEET = _TEMPLATES.joinpath("ui.css").read_text("utf-8")


def link_token(secret: str, ref: str, expires: int | None = None) -> str:
    """The `t` of an incident's link: HMAC-SHA256 of the ref (and its expiry, when links
    expire), URL-safe; `<mac>.<expiry>` when it expires."""
    message = f"{ref}:{expires or ''}".encode()
    mac = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    token = base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")
    return f"{token}.{expires}" if expires else token


def link_valid(secret: str, ref: str, token: str, now: float, must_expire: bool = False) -> bool:
    """Was `token` made for `ref` with `secret`, and not expired? (`must_expire`: links
    expire, so one without an expiry was not made by this bridge.)"""
    _, _, expiry = token.partition(".")
    expires = int(expiry) if expiry.isdigit() else None
    if (expiry and expires is None) or (must_expire and expires is None):
        return False
    if expires is not None and now > expires:
        return False
    return hmac.compare_digest(link_token(secret, ref, expires).encode(), token.encode())


def incident_link(settings: Settings, ref: str, now: float | None = None) -> str | None:
    """`<BRIDGE_PUBLIC_URL>/incidents/<ref>?t=<token>`, or None without a public URL and secret."""
    if settings.BRIDGE_PUBLIC_URL is None or settings.BRIDGE_UI_SECRET is None:
        return None
    ttl = settings.BRIDGE_UI_LINK_TTL
    expires = int((now or time.time()) + ttl) if ttl else None
    token = link_token(settings.BRIDGE_UI_SECRET.get_secret_value(), ref, expires)
    return f"{settings.BRIDGE_PUBLIC_URL}/incidents/{ref}?t={token}"


class UiAccess:
    """Who may see the pages (see the module's docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        basic = settings.BRIDGE_UI_BASIC_AUTH
        self.basic = basic.get_secret_value() if basic else None
        self.user_header = settings.BRIDGE_UI_USER_HEADER
        self.proxies = settings.trusted_proxies

    @property
    def loopback_only(self) -> bool:
        return self.basic is None and self.user_header is None

    def _peer(self, request: web.Request) -> Any:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        try:
            return ip_address(peer[0]) if peer else None
        except ValueError:
            return None

    def person(self, request: web.Request) -> bool:
        """Basic auth, a trusted proxy's user header, or (neither configured) loopback."""
        peer = self._peer(request)
        if self.loopback_only:
            return peer is not None and any(peer in net for net in _LOOPBACK)
        proxied = peer is not None and any(peer in net for net in self.proxies)
        if self.user_header and request.headers.get(self.user_header) and proxied:
            return True
        if self.basic is not None:
            given = request.headers.get("Authorization", "")
            if given.startswith("Basic "):
                try:
                    decoded = base64.b64decode(given[6:], validate=True).decode()
                except (ValueError, UnicodeDecodeError):
                    return False
                return hmac.compare_digest(decoded.encode(), self.basic.encode())
        return False

    def require_person(self, request: web.Request) -> None:
        if not self.person(request):
            headers = {"WWW-Authenticate": 'Basic realm="incidents"'} if self.basic else {}
            raise web.HTTPUnauthorized(text="authentication required", headers=headers)

    def require_incident(self, request: web.Request, ref: str) -> None:
        """A person as above, or a link signed for this incident."""
        token = request.query.get("t")
        secret = self.settings.BRIDGE_UI_SECRET
        if token is not None and secret is not None:
            expiring = self.settings.BRIDGE_UI_LINK_TTL > 0
            if link_valid(secret.get_secret_value(), ref, token, time.time(), expiring):
                return
            raise web.HTTPForbidden(text="this link is not valid (or has expired)")
        self.require_person(request)


def _when(value: float | datetime | None) -> str:
    if value is None:
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if minutes or not parts else []
    return " ".join(parts)


def incident_links(incident: Incident, message_id: int | None) -> list[tuple[str, str]]:
    """(label key, URL): Alertmanager's view of the group, a prefilled silence, the alerts'
    sources, dashboards and runbook, and the Pachca message."""
    links: list[tuple[str, str]] = []
    base = incident.external_url.rstrip("/")
    matchers = silence_matchers(incident)
    if base.startswith(("http://", "https://")) and matchers:
        selector = quote("{" + ",".join(f'{k}="{v}"' for k, v in sorted(matchers.items())) + "}")
        links.append(("page_am_alerts", f"{base}/#/alerts?filter={selector}"))
        links.append(("page_am_silence", f"{base}/#/silences/new?filter={selector}"))
    first = next(iter(sorted(incident.alerts.values(), key=lambda a: a.starts_at)), None)
    runbook = incident.common_annotations.get("runbook_url") or (
        first.annotations.get("runbook_url", "") if first else ""
    )
    for key, url in (
        ("page_runbook", runbook),
        ("page_source", first.generator_url if first else ""),
        ("page_dashboard", first.dashboard_url if first else ""),
    ):
        if url.startswith(("http://", "https://")):
            links.append((key, url))
    if message_id:
        links.append(("page_message", message_url(incident.chat_id, message_id)))
    return links


def state_of(incident: Incident) -> str:
    """firing, acked, silenced or resolved: what the page's state badge says."""
    if incident.state is not IncidentState.FIRING:
        return "resolved"
    if incident.silence_id is not None:
        return "silenced"
    return "acked" if incident.acked_by is not None else "firing"


def incident_view(
    stored: Stored,
    events: list[Event],
    dropped: int,
    now: float,
    names: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """What the incident page shows (`names`: Pachca user ids to display names)."""
    names = names or {}

    def shown(key: str, value: Any) -> Any:
        if key == "by" and isinstance(value, int) and value in names:
            return f"{names[value]} (<@{value}>)"
        return value

    incident = stored.incident
    firing = incident.state is IncidentState.FIRING
    since = incident.firing_since or incident.opened_at if firing else incident.resolved_at
    state = state_of(incident)
    alerts = sorted(
        incident.alerts.values(),
        key=lambda a: (a.status is not AlertStatus.FIRING, a.starts_at, a.fingerprint),
    )
    return {
        "ref": incident.ref,
        "title": incident_title(incident),
        "state": state,
        "since": _when(since),
        "for": _duration(now - since.timestamp()) if since else "",
        "severity": incident.common_labels.get("severity", ""),
        "group_labels": sorted(incident.group_labels.items()),
        "links": incident_links(incident, stored.delivery.message_id),
        "alerts": [
            {
                "status": a.status.value,
                "labels": sorted(a.labels.items()),
                "annotations": sorted(a.annotations.items()),
                "value": a.value_string,
                "starts": _when(a.starts_at),
                "ends": _when(a.ends_at),
            }
            for a in alerts
        ],
        "earlier": [
            {
                "labels": sorted(a.labels.items()),
                "starts": _when(a.starts_at),
                "ends": _when(a.ends_at),
            }
            for a in incident.earlier.values()
        ],
        "timeline": [
            {
                "at": _when(e.at),
                "kind": e.kind,
                "details": sorted((k, shown(k, v)) for k, v in e.details.items()),
            }
            for e in reversed(events)
        ],
        "dropped": dropped,
    }


def list_rows(incidents: list[Incident]) -> list[dict[str, Any]]:
    """One line of the list per incident."""
    return [
        {
            "ref": i.ref,
            "state": state_of(i),
            "title": incident_title(i),
            "route": i.route,
            "changed": i.changed_at.strftime("%Y-%m-%d %H:%M UTC"),
        }
        for i in incidents
    ]


async def load_view(store: Store, ref: str) -> tuple[Stored, list[Event], int] | None:
    stored = await store.load_by_ref(ref)
    if stored is None:
        return None
    events, dropped = await store.timeline(ref)
    return stored, events, dropped


def render_incident(view: dict[str, Any], words: dict[str, str]) -> str:
    return _INCIDENT.render(v=view, t=words)


def render_list(
    rows: list[dict[str, Any]],
    words: dict[str, str],
    query: dict[str, str],
    later: bool,
    more: str | None,
) -> str:
    """`later`: not the first page (it links back to it); `more`: the next page's cursor."""
    return _LIST.render(rows=rows, t=words, q=query, later=later, more=more)


def render_stats(routes: list[dict[str, Any]], words: dict[str, str]) -> str:
    return _STATS.render(routes=routes, t=words)


def stats_view(
    incidents: list[Brief], route_names: list[str], now: datetime
) -> list[dict[str, Any]]:
    """Per route: the 7- and 30-day figures and the 30-day chart."""
    out = []
    for name in route_names:
        windows = [route_stats(incidents, name, now, days) for days in (7, STATS_DAYS)]
        out.append(
            {
                "name": name,
                "windows": [
                    {
                        "days": w.days,
                        "opened": w.opened,
                        "mtta": _duration(w.mtta) if w.mtta is not None else "–",
                        "mttr": _duration(w.mttr) if w.mttr is not None else "–",
                        "noisiest": w.noisiest,
                    }
                    for w in windows
                ],
                "chart": chart_svg(windows[1].series),
            }
        )
    return out


__all__ = [
    "STYLESHEET",
    "MatcherSyntaxError",
    "UiAccess",
    "incident_link",
    "incident_view",
    "link_token",
    "link_valid",
    "load_view",
    "render_incident",
    "render_list",
    "render_stats",
    "stats_view",
]
