"""Thin client for Alertmanager's v2 API: silences, the current alerts and its uptime. One
attempt per call, typed errors; the outbox decides about retries. `AlertmanagerCluster` speaks to
the replicas of one HA cluster (ALERTMANAGER_URL may list several): changes go to the first that
answers, reads take the union of all that answer.

Error bodies differ by status (captured from 0.25): 400/404/500 are a JSON string
(`"silence not found"`), 422 and unparsable bodies are `{"code": N, "message": "..."}`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import aiohttp

from bridge.errors import BridgeError


class Why(StrEnum):
    """Why an Alertmanager request failed, in words a person is told (see words.py)."""

    UNREACHABLE = "unreachable"
    REFUSED = "refused"
    BAD_ANSWER = "bad_answer"
    NOT_CONFIGURED = "not_configured"


class Failure(NamedTuple):
    """What the person who pressed a button is told about a failure: a sentence, never a repr."""

    why: Why
    detail: str = ""  # Alertmanager's own message, when it refused


class AlertmanagerError(BridgeError):
    """An Alertmanager call failed; `retryable` for connection problems and 5xx. The message is
    for the log; `failure` is for people."""

    def __init__(
        self, message: str, retryable: bool, why: Why = Why.UNREACHABLE, detail: str = ""
    ) -> None:
        self.retryable = retryable
        self.failure = Failure(why, detail)
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

    async def _call(
        self, method: str, path: str, body: Any = None, query: Query = ()
    ) -> tuple[int, str]:
        try:
            url = self.base_url + path
            async with self._http().request(method, url, json=body, params=query) as resp:
                # a proxy's error page in front of Alertmanager may not be UTF-8
                return resp.status, (await resp.read()).decode("utf-8", "replace")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AlertmanagerError(
                f"Alertmanager at {self.base_url} unreachable: {type(exc).__name__} {exc}",
                retryable=True,
                why=Why.UNREACHABLE,
            ) from exc

    def _fail(self, what: str, status: int, body: str) -> AlertmanagerError:
        retryable = status >= 500 or status == 429
        return AlertmanagerError(
            f"Alertmanager at {self.base_url} refused to {what}: HTTP {status} {_describe(body)}",
            retryable=retryable,
            why=Why.UNREACHABLE if retryable else Why.REFUSED,
            detail="" if retryable else f"HTTP {status} {_describe(body)}",
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
                why=Why.REFUSED,
                detail="no labels to match",
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
            raise AlertmanagerError(
                f"unexpected answer: {text[:200]}", retryable=False, why=Why.BAD_ANSWER
            ) from exc

    async def expire_silence(self, silence_id: str) -> bool:
        """Expire a silence; False if Alertmanager no longer knows it (already gone)."""
        status, text = await self._call("DELETE", f"/api/v2/silence/{silence_id}")
        if status == 200:
            return True
        if _is_not_found(status, text):
            return False
        raise self._fail("expire the silence", status, text)

    async def alerts(self, query: Query = ()) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds now (all, or those `query` asks for: see
        `SUPPRESSED`, `group_query`), with `status.silencedBy`."""
        status, text = await self._call("GET", "/api/v2/alerts", query=query)
        if status != 200:
            raise self._fail("list alerts", status, text)
        data = _json_list(text, "alerts")
        del text  # a million alerts' text, freed before the slim copies are made
        return [_slim(a) for a in data if isinstance(a, dict)]

    async def silences(self) -> list[dict[str, Any]]:
        status, text = await self._call("GET", "/api/v2/silences")
        if status != 200:
            raise self._fail("list silences", status, text)
        data = _json_list(text, "silences")
        return [s for s in data if isinstance(s, dict)]

    async def started_at(self) -> datetime:
        """When this Alertmanager process started (`uptime` of /api/v2/status)."""
        status, text = await self._call("GET", "/api/v2/status")
        if status != 200:
            raise self._fail("report its status", status, text)
        try:
            uptime = json.loads(text)["uptime"]
            started = datetime.fromisoformat(str(uptime).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise AlertmanagerError(f"the status answer has no uptime: {text[:200]}", True) from exc
        if started.tzinfo is None:
            raise AlertmanagerError(f"the status uptime has no UTC offset: {uptime}", True)
        return started


# the query string of GET /api/v2/alerts: (name, value) pairs, a name may repeat
Query = Sequence[tuple[str, str]]

# alerts under a silence or an inhibition (not active, not yet unprocessed): the silence
# check-back's question each pass; Alertmanager's answer is as long as what is suppressed,
# not as everything it holds
SUPPRESSED: Query = (("active", "false"), ("unprocessed", "false"))


def group_query(labels: dict[str, str]) -> Query:
    """The alerts whose labels equal all of `labels` (an incident's group labels: every alert
    of the group has them); with none, every alert."""
    return [
        ("filter", f'{_name(name)}="{_quoted(value)}"') for name, value in sorted(labels.items())
    ]


def groups_query(groups: Sequence[dict[str, str]]) -> Query:
    """The alerts of any of `groups` (group labels with the same names), and maybe some
    others: one regular-expression matcher per label name, the groups' values its
    alternatives, so a group whose values mix with another's also matches (harmless: each
    incident looks only at its own alerts). One question instead of one per group; Go's
    regular expressions are anchored by Alertmanager. A group named twice is asked for once;
    one group alone, by `group_query`."""
    unique = list({tuple(sorted(g.items())): g for g in groups}.values())
    names = sorted(unique[0])
    if len(unique) == 1 or not names:
        return group_query(unique[0])
    if any(sorted(labels) != names for labels in unique):
        raise ValueError("groups asked for together must have the same label names")
    return [
        ("filter", f'{_name(name)}=~"{_quoted(_alternatives(g[name] for g in unique))}"')
        for name in names
    ]


def _alternatives(values: Iterable[str]) -> str:
    """A regular expression that matches exactly each of `values` (RE2: its metacharacters
    escaped, everything else literal)."""
    return "|".join(_RE2_SPECIAL.sub(r"\\\g<0>", v) for v in sorted(set(values)))


_RE2_SPECIAL = re.compile(r"[\\.+*?()|\[\]{}^$]")


def _name(name: str) -> str:
    """A label name in a matcher: quoted unless a classic one (UTF-8 names, Alertmanager
    0.27+)."""
    return name if re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) else f'"{_quoted(name)}"'


def _quoted(value: str) -> str:
    """A label value inside a matcher's double quotes (Go string escapes)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class View(NamedTuple):
    """What the reachable replicas of a cluster hold now: their alerts (union by fingerprint,
    silencedBy merged), their silences by id, and whether absence means anything (at least
    one of them has run long enough to have heard from every Prometheus)."""

    alerts: dict[str, dict[str, Any]]
    silences: dict[str, dict[str, Any]]
    settled: bool


class AlertmanagerCluster:
    """The replicas of one Alertmanager cluster. Silences are gossiped between them, so a
    change made on any one holds for all: it goes to the first that answers. Alerts are not
    (each hears from Prometheus itself), so reads take the union of all that answer."""

    def __init__(self, clients: list[AlertmanagerClient]) -> None:
        if not clients:
            raise ValueError("an Alertmanager cluster needs at least one URL")
        self.clients = clients

    @property
    def base_url(self) -> str:
        return ",".join(c.base_url for c in self.clients)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()

    async def _first(self, call: Any) -> Any:
        """`call(client)` on each replica in turn until one answers; a refusal (4xx) is final."""
        last: AlertmanagerError | None = None
        for client in self.clients:
            try:
                return await call(client)
            except AlertmanagerError as exc:
                if not exc.retryable:
                    raise
                last = exc
        assert last is not None
        raise last

    async def create_silence(
        self,
        matchers: dict[str, str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        return str(
            await self._first(
                lambda c: c.create_silence(matchers, starts_at, ends_at, created_by, comment)
            )
        )

    async def expire_silence(self, silence_id: str) -> bool:
        return bool(await self._first(lambda c: c.expire_silence(silence_id)))

    async def silences(self) -> list[dict[str, Any]]:
        """The silences the replicas that answer hold, each once (by id); they gossip them,
        so one that made a silence a moment ago may be the only one to list it yet."""
        seen: dict[str, dict[str, Any]] = {}
        for listed in await self._every(lambda c: c.silences()):
            for silence in listed:
                seen.setdefault(str(silence.get("id")), silence)
        return list(seen.values())

    async def _every(self, call: Any) -> list[Any]:
        """`call(client)`'s answer from each replica that gives one (reads take the union);
        AlertmanagerError if none does."""
        answers: list[Any] = []
        failures: list[AlertmanagerError] = []
        for client in self.clients:
            try:
                answers.append(await call(client))
            except AlertmanagerError as exc:
                failures.append(exc)
        if len(failures) == len(self.clients):
            raise failures[0]
        return answers

    async def alerts(self, query: Query = ()) -> dict[str, dict[str, Any]]:
        """The union of the alerts `query` asks for, from the replicas that answer (by
        fingerprint, silencedBy merged); AlertmanagerError if none does."""
        merged: dict[str, dict[str, Any]] = {}
        for own in await self._every(lambda c: c.alerts(query)):
            for alert in own:
                _merge(merged, alert)
        return merged

    async def view(
        self, settle_seconds: float, now: datetime, silences: bool = False, query: Query = ()
    ) -> View:
        """The union of what the replicas that answer hold (their alerts `query` asks for);
        AlertmanagerError if none does. Silences are read when asked for, or when some alert
        is silenced."""

        async def read(client: AlertmanagerClient) -> tuple[list[Any], list[Any], datetime]:
            own = await client.alerts(query)
            wanted = silences or any((a.get("status") or {}).get("silencedBy") for a in own)
            return own, await client.silences() if wanted else [], await client.started_at()

        alerts: dict[str, dict[str, Any]] = {}
        by_id: dict[str, dict[str, Any]] = {}
        settled = False
        for own, own_silences, started in await self._every(read):
            settled |= (now - started).total_seconds() >= settle_seconds
            for alert in own:
                _merge(alerts, alert)
            for silence in own_silences:
                by_id.setdefault(str(silence.get("id")), silence)
        return View(alerts, by_id, settled)


def _slim(alert: dict[str, Any]) -> dict[str, Any]:
    """What the check-back reads of an alert (its labels are the bulk of a million and are
    not needed: the fingerprint names the alert)."""
    status = alert.get("status")
    silenced_by = status.get("silencedBy") if isinstance(status, dict) else None
    return {
        "fingerprint": alert.get("fingerprint"),
        "startsAt": alert.get("startsAt"),
        "annotations": alert.get("annotations"),
        "status": {"silencedBy": silenced_by or []},
    }


def _merge(alerts: dict[str, dict[str, Any]], alert: dict[str, Any]) -> None:
    """Add one replica's copy of an alert: silenced if any replica has it silenced."""
    fingerprint = str(alert.get("fingerprint"))
    known = alerts.get(fingerprint)
    if known is None:
        alerts[fingerprint] = alert
        return
    by = set((known.get("status") or {}).get("silencedBy") or [])
    by |= set((alert.get("status") or {}).get("silencedBy") or [])
    status = dict(known.get("status") or {})
    status["silencedBy"] = sorted(str(s) for s in by)
    alerts[fingerprint] = {**known, "status": status}


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
