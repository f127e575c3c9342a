"""An Alertmanager stand-in for the check-back's tests: the alerts, silences and uptime it
holds, and the query semantics of `GET /api/v2/alerts` the bridge relies on (`active`,
`silenced`, `inhibited`, `unprocessed`, `filter` with `=` and `=~` matchers), which
tests/e2e/test_alertmanager_queries.py checks against the real binary. It records every
query, and answers 503 while `down`."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MATCHER = re.compile(r'^("(?:[^"\\]|\\.)*"|[a-zA-Z_][a-zA-Z0-9_]*)(=~?)"((?:[^"\\]|\\.)*)"$')


def unquoted(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def matches(alert: dict[str, Any], matcher: str) -> bool:
    found = MATCHER.match(matcher)
    if found is None:
        raise ValueError(f"bad matcher {matcher!r}")
    name, op, value = found.groups()
    name = unquoted(name[1:-1]) if name.startswith('"') else name
    held = str(alert.get("labels", {}).get(name, ""))
    if op == "=~":  # anchored, as Alertmanager anchors Go's regular expressions
        return re.fullmatch(f"(?:{unquoted(value)})", held) is not None
    return held == unquoted(value)


def api_alert(
    fingerprint: str,
    labels: dict[str, str],
    silenced_by: Sequence[str] = (),
    inhibited_by: Sequence[str] = (),
    starts_at: str = "2026-12-01T03:00:00Z",
) -> dict[str, Any]:
    """An alert as `GET /api/v2/alerts` shows it."""
    suppressed = bool(silenced_by or inhibited_by)
    return {
        "fingerprint": fingerprint,
        "labels": labels,
        "annotations": {"summary": fingerprint},
        "startsAt": starts_at,
        "status": {
            "state": "suppressed" if suppressed else "active",
            "silencedBy": list(silenced_by),
            "inhibitedBy": list(inhibited_by),
        },
    }


@dataclass
class FakeAlertmanager:
    alerts: list[dict[str, Any]] = field(default_factory=list)
    silences: list[dict[str, Any]] = field(default_factory=list)
    uptime: str = "2026-01-01T00:00:00Z"
    down: bool = False
    queries: list[list[tuple[str, str]]] = field(default_factory=list)

    def answer(self, query: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """What Alertmanager answers `GET /api/v2/alerts?<query>` with."""
        self.queries.append(query)
        wanted = {name: value != "false" for name, value in query if name != "filter"}
        matchers = [value for name, value in query if name == "filter"]
        out = []
        for alert in self.alerts:
            status = alert["status"]
            if not wanted.get("active", True) and status["state"] == "active":
                continue
            if not wanted.get("unprocessed", True) and status["state"] == "unprocessed":
                continue
            if not wanted.get("silenced", True) and status["silencedBy"]:
                continue
            if not wanted.get("inhibited", True) and status["inhibitedBy"]:
                continue
            if all(matches(alert, m) for m in matchers):
                out.append(alert)
        return out

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            if self.down:
                return web.Response(status=503, text="down")
            if request.path == "/api/v2/alerts":
                try:
                    body: Any = self.answer(list(request.query.items()))
                except ValueError as exc:
                    return web.Response(status=400, text=str(exc))
            elif request.path == "/api/v2/silences":
                body = self.silences
            elif request.path == "/api/v2/status":
                body = {"uptime": self.uptime}
            else:
                return web.Response(status=404)
            return web.Response(text=json.dumps(body), content_type="application/json")

        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        return app
