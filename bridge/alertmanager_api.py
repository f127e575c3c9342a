"""Thin client for Alertmanager's v2 API: silences and the current alerts. One attempt per
call, typed errors; the outbox decides about retries.

Error bodies differ by status (captured from 0.25): 400/404/500 are a JSON string
(`"silence not found"`), 422 and unparsable bodies are `{"code": N, "message": "..."}`.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import aiohttp

from bridge.errors import BridgeError


class AlertmanagerError(BridgeError):
    """An Alertmanager call failed; `retryable` for connection problems and 5xx."""

    def __init__(self, message: str, retryable: bool) -> None:
        self.retryable = retryable
        super().__init__(message)


def authorization_header(auth: str | None) -> dict[str, str]:
    """`ALERTMANAGER_AUTH` -> headers: `Bearer <token>` as is, `Basic user:password` encoded."""
    if not auth:
        return {}
    scheme, _, credentials = auth.strip().partition(" ")
    if scheme.lower() == "basic" and ":" in credentials:
        return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
    return {"Authorization": auth.strip()}


def _describe(body: str) -> str:
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        return body.strip()[:300]
    if isinstance(parsed, dict):
        return str(parsed.get("message") or parsed)[:300]
    return str(parsed)[:300]


def _is_not_found(status: int, body: str) -> bool:
    # 0.25 answers DELETE of an unknown silence with 500 "silence not found"; newer with 404
    return status == 404 or (status == 500 and "not found" in body.lower())


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class AlertmanagerClient:
    def __init__(self, base_url: str, auth: str | None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = authorization_header(auth)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, str]:
        try:
            async with self._http().request(method, self.base_url + path, json=body) as resp:
                # a proxy's error page in front of Alertmanager may not be UTF-8
                return resp.status, (await resp.read()).decode("utf-8", "replace")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AlertmanagerError(
                f"Alertmanager at {self.base_url} unreachable: {type(exc).__name__} {exc}",
                retryable=True,
            ) from exc

    def _fail(self, what: str, status: int, body: str) -> AlertmanagerError:
        return AlertmanagerError(
            f"Alertmanager refused to {what}: HTTP {status} {_describe(body)}",
            retryable=status >= 500 or status == 429,
        )

    async def create_silence(
        self,
        matchers: dict[str, str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        """Silence alerts whose labels equal all of `matchers`; returns the silence id."""
        if not matchers or not all(matchers.values()):
            raise AlertmanagerError(
                "refusing to create a silence without non-empty matchers: it would silence "
                "everything",
                retryable=False,
            )
        body = {
            "matchers": [
                {"name": name, "value": value, "isRegex": False, "isEqual": True}
                for name, value in sorted(matchers.items())
            ],
            "startsAt": _iso(starts_at),
            "endsAt": _iso(ends_at),
            "createdBy": created_by,
            "comment": comment,
        }
        status, text = await self._call("POST", "/api/v2/silences", body)
        if status != 200:
            raise self._fail("create the silence", status, text)
        try:
            return str(json.loads(text)["silenceID"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise AlertmanagerError(f"unexpected answer: {text[:200]}", retryable=False) from exc

    async def expire_silence(self, silence_id: str) -> bool:
        """Expire a silence; False if Alertmanager no longer knows it (already gone)."""
        status, text = await self._call("DELETE", f"/api/v2/silence/{silence_id}")
        if status == 200:
            return True
        if _is_not_found(status, text):
            return False
        raise self._fail("expire the silence", status, text)

    async def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds now, with `status.silencedBy`."""
        status, text = await self._call("GET", "/api/v2/alerts")
        if status != 200:
            raise self._fail("list alerts", status, text)
        data = _json_list(text, "alerts")
        return [a for a in data if isinstance(a, dict)]

    async def silences(self) -> list[dict[str, Any]]:
        status, text = await self._call("GET", "/api/v2/silences")
        if status != 200:
            raise self._fail("list silences", status, text)
        data = _json_list(text, "silences")
        return [s for s in data if isinstance(s, dict)]


def _json_list(text: str, what: str) -> list[Any]:
    """A JSON list answer; anything else is Alertmanager (or what stands in front of it)
    answering off its API, retried like an outage."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise AlertmanagerError(f"the {what} answer is not JSON: {text[:200]}", True) from exc
    if not isinstance(data, list):
        raise AlertmanagerError(f"the {what} answer is not a list: {text[:200]}", True)
    return data
