"""Thin Pachca API client: one attempt per call, typed errors, no retry loops (the outbox
decides what to retry, from the exception's class)."""

from __future__ import annotations

import email.utils
import itertools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from bridge.errors import (
    PachcaAuthError,
    PachcaError,
    PachcaRateLimited,
    PachcaRequestError,
    PachcaServerError,
    PachcaUnavailable,
)
from bridge.metrics import Metrics
from bridge.ratelimit import Limiter, RateLimiter
from bridge.settings import Settings

log = logging.getLogger(__name__)

Buttons = list[list[dict[str, str]]]


@dataclass(frozen=True)
class Thread:
    """A message's thread: `id` to comment in it, `chat_id` (its own chat) to read it."""

    id: int
    chat_id: int


class PachcaApi(Protocol):
    """What the bridge does with Pachca; the real client and the dry-run log both provide it."""

    async def create_message(
        self,
        entity_type: str,
        entity_id: int,
        content: str,
        buttons: Buttons | None = None,
        display_name: str | None = None,
        display_avatar_url: str | None = None,
        parent_message_id: int | None = None,
    ) -> int:
        """Post a message; returns its id."""

    async def update_message(self, message_id: int, content: str, buttons: Buttons) -> None: ...

    async def create_thread(self, message_id: int) -> Thread:
        """The thread of a message (created if missing, returned if not: idempotent)."""

    async def get_user(self, user_id: int) -> dict[str, Any]:
        """The user's record (`first_name`, `last_name`, `nickname`, ...)."""

    async def messages_page(
        self, chat_id: int, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page (50) of the chat's messages, newest first, and the cursor of the next."""

    async def personal_chats_page(
        self, active_since: float, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page (50) of the bot's personal chats with a message posted since
        `active_since` (unix time), and the cursor of the next."""

    async def link_previews(self, message_id: int, previews: dict[str, Any]) -> None:
        """Show these previews for the links of a message (unfurl bots only)."""

    async def close(self) -> None: ...


def _message_body(
    entity_type: str,
    entity_id: int,
    content: str,
    buttons: Buttons | None,
    display_name: str | None,
    display_avatar_url: str | None,
    parent_message_id: int | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "entity_type": entity_type,
        "entity_id": entity_id,
        "content": content,
    }
    if buttons:
        message["buttons"] = buttons
    if display_name:
        message["display_name"] = display_name
    if display_avatar_url:
        message["display_avatar_url"] = display_avatar_url
    if parent_message_id is not None:  # a reply in the chat to that message
        message["parent_message_id"] = parent_message_id
    return {"message": message, "link_preview": False}


def describe_error_body(body: Any) -> list[str]:
    """Pachca's error body (ApiError or OAuthError) as readable lines."""
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return [
            f"{e.get('key', '?')}: {e.get('message', '')} ({e.get('code', '?')})"
            for e in body["errors"]
            if isinstance(e, dict)
        ]
    if isinstance(body, dict) and "error" in body:
        return [f"{body['error']}: {body.get('error_description', '')}"]
    return [str(body)[:500]] if body else []


def error_codes(body: Any) -> tuple[tuple[str, str], ...]:
    """The (key, code) pairs of Pachca's ApiError body, for deciding what a refusal means."""
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return ()
    return tuple(
        (str(e.get("key", "")), str(e.get("code", "")))
        for e in body["errors"]
        if isinstance(e, dict)
    )


def display_name(user: dict[str, Any]) -> str:
    """ "First Last", else the nickname, else the id: how a person is named in messages."""
    full = " ".join(str(user.get(k) or "").strip() for k in ("first_name", "last_name")).strip()
    return full or str(user.get("nickname") or "") or f"id {user.get('id', '?')}"


# the longest pause a Retry-After may impose; beyond it the header is taken as this
MAX_RETRY_AFTER = 300.0

# awaited just before each request is sent (its turn at the pace taken), set by the outbox
# around a call that changes the chat: it records when the call began (see before_send)
BEFORE_SEND: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "pachca_before_send", default=None
)


@contextmanager
def before_send(hook: Callable[[], Awaitable[None]]) -> Iterator[None]:
    """Requests made inside await `hook` as they are about to go out, after any wait for the
    pace or a 429 pause: what it records is when Pachca may start performing them."""
    token = BEFORE_SEND.set(hook)
    try:
        yield
    finally:
        BEFORE_SEND.reset(token)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds (a number, or an HTTP date), clamped to 0..MAX_RETRY_AFTER;
    None when absent, non-finite or unreadable, so the caller's own backoff applies."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            seconds = when.timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


# without these, nothing can be delivered at all
CORE_ENDPOINTS = ("POST /messages", "PUT /messages/{id}")


def _is_token_refused(status: int, body: Any, endpoint: str) -> bool:
    """Is the token itself the problem (so every call would fail alike), rather than this
    request? 401; a 403 `invalid_token`; a 403 `insufficient_scope` for posting or editing.
    Any other 403 (no access to one chat, a missing scope for a side endpoint such as the
    chat history) belongs to the request alone."""
    if status == 401:
        return True
    if status != 403 or not isinstance(body, dict):
        return False
    code = body.get("error")
    return code == "invalid_token" or (code == "insufficient_scope" and endpoint in CORE_ENDPOINTS)


class PachcaClient:
    """Talks to the real Pachca API over one pooled aiohttp session."""

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: float,
        metrics: Metrics,
        limiter: Limiter | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._metrics = metrics
        self.limiter = limiter
        if limiter is not None:
            metrics.pachca_pace.set(limiter.rate)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._token}"},
                connector=aiohttp.TCPConnector(limit=32),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(
        self, method: str, endpoint: str, path: str, body: dict[str, Any] | None = None
    ) -> Any:
        if self.limiter is not None:
            await self.limiter.acquire()
        hook = BEFORE_SEND.get()
        if hook is not None:
            await hook()
        started = time.monotonic()
        code = "error"
        try:
            async with self._http().request(method, self.base_url + path, json=body) as resp:
                code = str(resp.status)
                # whatever sits in front of Pachca (a proxy's error page) may not be UTF-8
                text = (await resp.read()).decode("utf-8", "replace")
                parsed: Any = None
                if text:
                    try:
                        parsed = json.loads(text)
                    except (ValueError, RecursionError):  # not JSON, or absurd JSON
                        parsed = text
                if resp.status == 429:
                    retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
                    if self.limiter is not None:
                        took = time.monotonic() - started
                        await self.limiter.rate_limited(retry_after, took)
                    raise PachcaRateLimited(endpoint, retry_after)
                if resp.status >= 500:
                    raise PachcaServerError(endpoint, f"HTTP {resp.status}", resp.status)
                if _is_token_refused(resp.status, parsed, endpoint):
                    raise PachcaAuthError(endpoint, resp.status, describe_error_body(parsed))
                if resp.status >= 400:
                    raise PachcaRequestError(
                        endpoint, resp.status, describe_error_body(parsed), error_codes(parsed)
                    )
                if self.limiter is not None:
                    await self.limiter.succeeded()
                return parsed
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise PachcaUnavailable(endpoint, f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._metrics.pachca_requests.labels(endpoint, code).inc()
            self._metrics.pachca_latency.labels(endpoint).observe(time.monotonic() - started)
            if self.limiter is not None:
                self._metrics.pachca_pace.set(self.limiter.rate)

    @staticmethod
    def _data_id(endpoint: str, answer: Any) -> int:
        try:
            return int(answer["data"]["id"])
        except (TypeError, KeyError, ValueError) as exc:
            raise PachcaError(
                endpoint, f"unexpected answer without data.id: {answer!r:.200}"
            ) from exc

    async def create_message(
        self,
        entity_type: str,
        entity_id: int,
        content: str,
        buttons: Buttons | None = None,
        display_name: str | None = None,
        display_avatar_url: str | None = None,
        parent_message_id: int | None = None,
    ) -> int:
        endpoint = "POST /messages"
        body = _message_body(
            entity_type,
            entity_id,
            content,
            buttons,
            display_name,
            display_avatar_url,
            parent_message_id,
        )
        return self._data_id(endpoint, await self._call("POST", endpoint, "/messages", body))

    async def update_message(self, message_id: int, content: str, buttons: Buttons) -> None:
        body = {"message": {"content": content, "buttons": buttons}}
        await self._call("PUT", "PUT /messages/{id}", f"/messages/{message_id}", body)

    async def create_thread(self, message_id: int) -> Thread:
        endpoint = "POST /messages/{id}/thread"
        answer = await self._call("POST", endpoint, f"/messages/{message_id}/thread")
        try:
            return Thread(int(answer["data"]["id"]), int(answer["data"]["chat_id"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise PachcaError(
                endpoint, f"unexpected answer without data.id and data.chat_id: {answer!r:.200}"
            ) from exc

    async def get_user(self, user_id: int) -> dict[str, Any]:
        endpoint = "GET /users/{id}"
        answer = await self._call("GET", endpoint, f"/users/{user_id}")
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), dict):
            raise PachcaError(endpoint, f"unexpected answer: {answer!r:.200}")
        return dict(answer["data"])

    async def messages_page(
        self, chat_id: int, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        endpoint = "GET /messages"
        query = f"?chat_id={chat_id}&limit=50" + (f"&cursor={quote(cursor)}" if cursor else "")
        return self._page(endpoint, await self._call("GET", endpoint, "/messages" + query))

    async def personal_chats_page(
        self, active_since: float, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        endpoint = "GET /chats"
        after = datetime.fromtimestamp(active_since, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        query = f"?personal=true&limit=50&last_message_at_after={quote(after)}"
        query += f"&cursor={quote(cursor)}" if cursor else ""
        return self._page(endpoint, await self._call("GET", endpoint, "/chats" + query))

    @staticmethod
    def _page(endpoint: str, answer: Any) -> tuple[list[dict[str, Any]], str | None]:
        """The items of a page Pachca answered, and the cursor of the next (None: the last)."""
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            raise PachcaError(endpoint, f"unexpected answer: {answer!r:.200}")
        items = [m for m in answer["data"] if isinstance(m, dict)]
        paginate = (answer.get("meta") or {}).get("paginate") or {}
        following = paginate.get("next_page") if items else None
        return items, str(following) if following else None

    async def list_events(self, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """One page of the bot's event history (polling mode)."""
        query = f"?limit={limit}" + (f"&cursor={quote(cursor)}" if cursor else "")
        answer = await self._call("GET", "GET /webhooks/events", "/webhooks/events" + query)
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            raise PachcaError("GET /webhooks/events", f"unexpected answer: {answer!r:.200}")
        return answer

    async def delete_event(self, event_id: str) -> None:
        await self._call(
            "DELETE", "DELETE /webhooks/events/{id}", f"/webhooks/events/{quote(event_id)}"
        )

    async def link_previews(self, message_id: int, previews: dict[str, Any]) -> None:
        await self._call(
            "POST",
            "POST /messages/{id}/link_previews",
            f"/messages/{message_id}/link_previews",
            {"link_previews": previews},
        )

    async def set_webhook(self, url: str) -> None:
        await self._call(
            "PUT", "PUT /bot/webhook", "/bot/webhook", {"webhook": {"outgoing_url": url}}
        )


def client_from_settings(
    settings: Settings, metrics: Metrics, limiter: Limiter | None = None
) -> PachcaClient:
    """The real client with the configured token, timeout and rate limit (this process's
    own, unless a limiter shared by all replicas is given)."""
    if settings.PACHCA_TOKEN is None:
        raise ValueError("PACHCA_TOKEN is not set")
    if limiter is None:
        limiter = RateLimiter(
            settings.PACHCA_RATE_LIMIT, settings.PACHCA_RATE_BURST, most=settings.rate_max
        )
    return PachcaClient(
        settings.PACHCA_API_URL,
        settings.PACHCA_TOKEN.get_secret_value(),
        settings.PACHCA_TIMEOUT,
        metrics,
        limiter,
    )


def as_read(body: dict[str, Any]) -> str:
    """A request body as the chat would show it, for `--dry-run`: where it goes, then the
    message's lines, then its buttons, one row a line; other bodies as JSON."""
    message = body.get("message")
    if not isinstance(message, dict) or "content" not in message:
        return f" {json.dumps(body, ensure_ascii=False)}" if body else ""
    where = ""
    if "entity_id" in message:
        where = f" to {message.get('entity_type', 'discussion')} {message['entity_id']}"
        if message.get("parent_message_id"):
            where += f", in reply to message {message['parent_message_id']}"
    lines = [f"{where}:"] + [f"  | {line}" for line in str(message["content"]).splitlines()]
    for row in message.get("buttons") or []:
        lines.append(
            "  "
            + " ".join(
                f"[{b.get('text')}]" + (f"({b['url']})" if b.get("url") else f"<{b.get('data')}>")
                for b in row
            )
        )
    return "\n".join(lines)


class DryRunPachca:
    """Logs each call instead of sending it, and answers with made-up ids (`--dry-run`)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _log(self, endpoint: str, body: dict[str, Any]) -> None:
        self.calls.append((endpoint, body))
        log.info("dry-run: %s%s", endpoint, as_read(body))

    async def create_message(
        self,
        entity_type: str,
        entity_id: int,
        content: str,
        buttons: Buttons | None = None,
        display_name: str | None = None,
        display_avatar_url: str | None = None,
        parent_message_id: int | None = None,
    ) -> int:
        self._log(
            "POST /messages",
            _message_body(
                entity_type,
                entity_id,
                content,
                buttons,
                display_name,
                display_avatar_url,
                parent_message_id,
            ),
        )
        return next(self._ids)

    async def update_message(self, message_id: int, content: str, buttons: Buttons) -> None:
        self._log(
            f"PUT /messages/{message_id}", {"message": {"content": content, "buttons": buttons}}
        )

    async def create_thread(self, message_id: int) -> Thread:
        self._log(f"POST /messages/{message_id}/thread", {})
        return Thread(next(self._ids), next(self._ids))

    async def messages_page(
        self, chat_id: int, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return [], None

    async def personal_chats_page(
        self, active_since: float, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return [], None

    async def link_previews(self, message_id: int, previews: dict[str, Any]) -> None:
        self._log(f"POST /messages/{message_id}/link_previews", {"link_previews": previews})

    async def get_user(self, user_id: int) -> dict[str, Any]:
        return {"id": user_id, "first_name": "", "last_name": "", "nickname": f"user{user_id}"}

    async def close(self) -> None:
        return None
