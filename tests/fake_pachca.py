"""A local HTTP server that behaves like Pachca for the calls the bridge makes.

It checks every request body against Pachca's own OpenAPI document and every answer it gives
against the same document; a request that violates it gets Pachca's 400 ApiError and is
recorded in `violations` (tests fail if any is recorded). It enforces the bearer token, the
40,000-byte content limit and the button limits, can rate-limit (429 + Retry-After), and can be
told to fail the next calls with 5xx, 4xx or a dropped connection.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from openapi_schema_validator import OAS30Validator

# A copy of shared/pachca/openapi.yaml (MIT, (c) 2025 Pachca); test_fixtures_sync checks it.
SPEC_PATH = Path(__file__).resolve().parent / "fixtures" / "pachca-openapi.yaml"
CONTENT_LIMIT = 40_000
BASE_PATH = "/api/shared/v1"


class OpenApiContract:
    """Request and response schemas of Pachca's spec, looked up by method and concrete path."""

    def __init__(self, path: Path = SPEC_PATH) -> None:
        self.spec = _nullable_all_of(yaml.safe_load(path.read_text(encoding="utf-8")))
        self._routes: list[tuple[re.Pattern[str], str, str]] = []
        for template in self.spec["paths"]:
            pattern = re.compile("^" + re.sub(r"\{[^/]+\}", r"[^/]+", template) + "$")
            self._routes.append((pattern, template, template))

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        for pattern, template, _ in self._routes:
            if pattern.match(path):
                op = self.spec["paths"][template].get(method.lower())
                if op is not None:
                    return template, op
        raise KeyError(f"{method} {path} is not an operation of Pachca's API")

    def _validator(self, schema: dict[str, Any]) -> OAS30Validator:
        return OAS30Validator({**schema, "components": self.spec["components"]})

    def request_errors(self, method: str, path: str, body: Any) -> list[str]:
        _, op = self.operation(method, path)
        content = op.get("requestBody", {}).get("content", {}).get("application/json")
        if content is None:
            return [] if body is None else ["this operation takes no JSON body"]
        if body is None:
            return ["a JSON body is required"]
        return [_describe(e) for e in self._validator(content["schema"]).iter_errors(body)]

    def response_errors(self, method: str, path: str, status: int, body: Any) -> list[str]:
        _, op = self.operation(method, path)
        answer = op["responses"].get(str(status))
        if answer is None:
            return [f"status {status} is not documented for {method} {path}"]
        content = answer.get("content", {}).get("application/json")
        if content is None:
            return []
        return [_describe(e) for e in self._validator(content["schema"]).iter_errors(body)]


def _nullable_all_of(node: Any) -> Any:
    """`{nullable: true, allOf: [...]}` means "null or all of these" in OpenAPI 3.0, but the
    validator checks null against the allOf parts too; spell it as anyOf with null."""
    if isinstance(node, list):
        return [_nullable_all_of(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable_all_of(v) for k, v in node.items()}
    if node.get("nullable") is True and "allOf" in node:
        rest = {k: v for k, v in node.items() if k not in ("nullable", "type", "description")}
        return {"anyOf": [rest, {"enum": [None]}]}
    return node


def _describe(error: Any) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(body)"
    return f"{where}: {error.message}"


CONTRACT = OpenApiContract()


def api_error(key: str, message: str, code: str, value: str | None = None) -> dict[str, Any]:
    return {
        "errors": [{"key": key, "value": value, "message": message, "code": code, "payload": None}]
    }


@dataclass
class Failure:
    status: int  # 0 = drop the connection
    retry_after: str | None = None
    body: Any = None  # JSON, or raw bytes (e.g. a proxy's error page in another charset)
    hang: float = 0.0  # seconds to wait before answering (past the client's timeout = a hang)
    method: str | None = None  # only a call with this method takes it (None: the next call)
    match: Callable[[Any], bool] | None = None  # ... and only one whose body this accepts


LATE = -1  # a Failure status: perform the call, answer only after `hang` seconds
SLOW = -2  # a Failure status: hold the call `hang` seconds, then perform it (client gone or not)


@dataclass
class Chaos:
    """Random faults on a fraction of calls, as a bad day at Pachca (or in front of it) looks:
    5xx, 429 with and without Retry-After, a proxy's error page that is not UTF-8, a hang past
    the client's timeout; and, for thread comments, permanent refusals (counted, so a test
    knows how many dead letters to expect). A faulted call is not performed, unless its kind
    says so (late, slow)."""

    rate: float
    hang_seconds: float = 1.0
    permanent_rate: float = 0.0
    seed: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    # "late": performed, then answered after the client's timeout (the answer is lost);
    # "slow": held past the client's timeout, then performed all the same
    kinds: tuple[str, ...] = ("5xx", "429", "429-bare", "not-utf8", "hang", "drop")
    # how long a "slow" call is held before it is performed: past the client's timeout and
    # its first retry, within the 3 timeouts a lost call is given to land
    slow_seconds: float = 1.4

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def fault(self, method: str, body: Any) -> Failure | None:
        comment = (
            method == "POST"
            and isinstance(body, dict)
            and ((body.get("message") or {}).get("entity_type") == "thread")
        )
        if comment and self.rng.random() < self.permanent_rate:
            self.injected["permanent"] += 1
            return Failure(422, body=api_error("entity_id", "injected refusal", "invalid"))
        if self.rng.random() >= self.rate:
            return None
        # every kind once first (a short soak still meets each), then at random
        unmet = [k for k in self.kinds if not self.injected[k]]
        kind = self.rng.choice(unmet or self.kinds)
        self.injected[kind] += 1
        return {
            "5xx": Failure(self.rng.choice([500, 502, 503, 504])),
            "429": Failure(429, retry_after="1"),
            "429-bare": Failure(429),
            "not-utf8": Failure(502, body="<h1>Шлюз недоступен</h1>".encode("cp1251")),
            "hang": Failure(503, hang=self.hang_seconds),
            "drop": Failure(0),
            "late": Failure(LATE, hang=self.hang_seconds),
            "slow": Failure(SLOW, hang=self.slow_seconds),
        }[kind]


@dataclass
class Call:
    method: str
    path: str
    template: str
    body: Any
    status: int
    at: float  # when the answer was given
    arrived: float = 0.0  # when the request came in (what the rate limit counts)


@dataclass
class FakePachca:
    token: str = "test-token"
    rate_limit: float | None = None  # requests per second, None = unlimited
    retry_after: int = 1
    contract: OpenApiContract = field(default_factory=lambda: CONTRACT)
    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    threads: dict[int, dict[str, Any]] = field(default_factory=dict)  # by message id
    dm_chats: dict[int, int] = field(default_factory=dict)  # the chat of each DM, by user id
    failures: list[Failure] = field(default_factory=list)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # the bot's event history
    webhook_url: str | None = None
    page_size: int = 50
    delay: float = 0.0  # seconds each answer takes (a slow Pachca)
    down: bool = False  # answer 503 to everything (Pachca down)
    posts_in_flight: int = 0  # POST /messages received and not yet answered
    previews: dict[int, dict[str, Any]] = field(default_factory=dict)  # by message id
    validate: bool = True  # check every request and answer against the spec (off in bench/)
    chaos: Chaos | None = None
    # seconds a create is held before Pachca performs it (a slow Pachca whose answer comes
    # after the client gave up, yet the message appears)
    slow_creates: float = 0.0
    history_refused: bool = False  # GET /messages, /chats answer 403 (the bot may post, not read)
    member_of: set[int] | None = None  # chats the bot is in (None: every chat)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1000)
        self._window: list[float] = []

    # -- what tests look at ---------------------------------------------------------------
    def ok_calls(self, template: str | None = None) -> list[Call]:
        return [
            c for c in self.calls if c.status < 300 and (template is None or c.template == template)
        ]

    def count(self, method: str, template: str) -> int:
        return sum(1 for c in self.ok_calls() if c.method == method and c.template == template)

    def channel_messages(self) -> list[dict[str, Any]]:
        """The messages posted in chats (replies to them aside: see `replies`)."""
        return [
            m
            for m in self.messages.values()
            if m["entity_type"] == "discussion" and m["parent_message_id"] is None
        ]

    def replies(self, message_id: int) -> list[str]:
        """Replies in the chat to a message (`parent_message_id`), oldest first."""
        return [
            m["content"] for m in self.messages.values() if m["parent_message_id"] == message_id
        ]

    def thread_comments(self, message_id: int) -> list[str]:
        thread = self.threads.get(message_id)
        if thread is None:
            return []
        return [
            m["content"]
            for m in self.messages.values()
            if m["entity_type"] == "thread" and m["entity_id"] == thread["id"]
        ]

    def delete_message(self, message_id: int) -> None:
        """A chat admin deletes the message: it and its thread are gone."""
        del self.messages[message_id]
        self.threads.pop(message_id, None)

    def chatter(self, chat_id: int, count: int) -> None:
        """People talk in the chat: `count` messages, newer than everything posted before."""
        for n in range(count):
            message = {"entity_type": "discussion", "entity_id": chat_id, "content": f"# {n}"}
            status, _ = self._create(message)
            assert status == 201

    def fail_next(
        self,
        status: int,
        times: int = 1,
        retry_after: str | None = None,
        body: Any = None,
        hang: float = 0.0,
        method: str | None = None,
        match: Callable[[Any], bool] | None = None,
    ) -> None:
        self.failures.extend(
            Failure(status, retry_after, body, hang, method, match) for _ in range(times)
        )

    def _next_failure(self, method: str, body: Any) -> Failure | None:
        """The first failure set up for a call like this one, taken off the list."""
        for n, failure in enumerate(self.failures):
            if failure.method in (None, method) and (failure.match is None or failure.match(body)):
                return self.failures.pop(n)
        return None

    # -- the server -----------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", BASE_PATH + "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request["arrived"] = time.monotonic()
        path = "/" + request.match_info["tail"]
        raw = await request.read()
        if self.down:
            return self._answer(request, None, 503, None)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                return self._answer(
                    request, None, 400, api_error("body", "invalid JSON", "invalid")
                )
        try:
            template, _ = self.contract.operation(request.method, path)
        except KeyError as exc:
            self.violations.append(str(exc))
            return web.json_response(api_error("path", str(exc), "not_found"), status=404)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._answer(
                request,
                body,
                401,
                {"error": "invalid_token", "error_description": "Access token is invalid"},
            )
        failure = self.chaos.fault(request.method, body) if self.chaos else None
        if failure is None:
            failure = self._next_failure(request.method, body)
        if failure is not None and failure.status == SLOW:
            tail = request.match_info["tail"]
            query = dict(request.query)
            later = self._later(failure.hang, request.method, template, tail, body, query)
            return self._answer(request, body, *await asyncio.shield(later))
        if failure is not None and failure.status == LATE:
            query = dict(request.query)
            status, answer = self._operate(
                request.method, template, request.match_info["tail"], body, query
            )
            await asyncio.sleep(failure.hang)  # the client gave up before this: answer lost
            return self._answer(request, body, status, answer)
        if failure is not None:
            if failure.hang:
                await asyncio.sleep(failure.hang)
            if failure.status == 0:
                assert request.transport is not None
                self.calls.append(
                    Call(request.method, path, self._template(request.method, path), body, 0, 0.0)
                )
                request.transport.close()
                return web.Response(status=500)
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return self._answer(request, body, failure.status, failure.body, headers)
        if self.rate_limit is not None and self._over_rate(request["arrived"]):
            return self._answer(request, body, 429, None, {"Retry-After": str(self.retry_after)})
        if self.history_refused and request.method == "GET" and path in ("/messages", "/chats"):
            scope = "messages:read" if path == "/messages" else "chats:read"
            refused = {"error": "insufficient_scope", "error_description": scope}
            return self._answer(request, body, 403, refused)
        problems = self.contract.request_errors(request.method, path, body) if self.validate else []
        if problems:
            self.violations.extend(f"{request.method} {path}: {p}" for p in problems)
            return self._answer(
                request, body, 400, api_error("message", "; ".join(problems), "invalid")
            )
        operation = (
            request.method,
            template,
            request.match_info["tail"],
            body,
            dict(request.query),
        )
        if self.slow_creates and (request.method, path) == ("POST", "/messages"):
            # performed when its time comes even if the client has given up and gone
            status, answer = await asyncio.shield(self._later(self.slow_creates, *operation))
        else:
            status, answer = self._operate(*operation)
        if self.delay:
            # Pachca has done the work; only the answer is slow (and lost if the caller dies)
            creating = request.method == "POST" and path == "/messages"
            self.posts_in_flight += creating
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.posts_in_flight -= creating
        return self._answer(request, body, status, answer)

    async def _later(
        self, delay: float, method: str, template: str, tail: str, body: Any, query: dict[str, str]
    ) -> tuple[int, Any]:
        await asyncio.sleep(delay)
        return self._operate(method, template, tail, body, query)

    def _over_rate(self, now: float) -> bool:
        self._window = [t for t in self._window if now - t < 1.0]
        assert self.rate_limit is not None
        if len(self._window) >= self.rate_limit:
            return True
        self._window.append(now)
        return False

    def _answer(
        self,
        request: web.Request,
        body: Any,
        status: int,
        answer: Any,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        path = "/" + request.match_info["tail"]
        self.calls.append(
            Call(
                request.method,
                path,
                self._template(request.method, path),
                body,
                status,
                time.monotonic(),
                request.get("arrived", 0.0),
            )
        )
        if (
            self.validate
            and answer is not None
            and not isinstance(answer, bytes)
            and status != 429
            and status < 500
        ):
            for problem in self.contract.response_errors(request.method, path, status, answer):
                self.violations.append(f"fake answered off-spec {status}: {problem}")
        if answer is None:
            return web.Response(status=status, headers=headers)
        if isinstance(answer, bytes):
            return web.Response(
                body=answer, status=status, headers={**(headers or {}), "Content-Type": "text/html"}
            )
        return web.json_response(answer, status=status, headers=headers)

    def _template(self, method: str, path: str) -> str:
        try:
            return self.contract.operation(method, path)[0]
        except KeyError:
            return path

    def _operate(
        self, method: str, template: str, tail: str, body: Any, query: dict[str, str]
    ) -> tuple[int, Any]:
        parts = tail.strip("/").split("/")
        if (method, template) == ("GET", "/messages"):
            chat_id = int(query["chat_id"])
            found = sorted(
                (m for m in self.messages.values() if m["chat_id"] == chat_id),
                key=lambda m: -m["id"],
            )
            public = [{k: v for k, v in m.items() if k != "display_name"} for m in found]
            return 200, _offset_page(public, query)
        if (method, template) == ("GET", "/chats"):
            return 200, self._personal_chats(query)
        if (method, template) == ("POST", "/messages"):
            return self._create(body["message"])
        if (method, template) == ("PUT", "/messages/{id}"):
            message = self.messages.get(int(parts[1]))
            if message is None:
                return 404, api_error("id", "Сообщение не найдено", "not_found", parts[1])
            update = body["message"]
            error = self._check_content(update)
            if error:
                return 422, error
            for key in ("content", "buttons"):
                if key in update:
                    message[key] = update[key] or None if key == "buttons" else update[key]
            message["changed_at"] = _now()
            return 200, {"data": message}
        if (method, template) == ("POST", "/messages/{id}/thread"):
            message_id = int(parts[1])
            if message_id not in self.messages:
                return 404, api_error("id", "Сообщение не найдено", "not_found", parts[1])
            thread = self.threads.get(message_id)
            if thread is None:
                thread = {
                    "id": next(self._ids),
                    "chat_id": next(self._ids),
                    "message_id": message_id,
                    "message_chat_id": self.messages[message_id]["chat_id"],
                    "updated_at": _now(),
                }
                self.threads[message_id] = thread
            return 201, {"data": thread}
        if (method, template) == ("PUT", "/bot/webhook"):
            self.webhook_url = body["webhook"]["outgoing_url"]
            return 200, {
                "data": {
                    "id": 1,
                    "webhook": {
                        "name": "Alerts",
                        "nickname": "alerts_bot",
                        "outgoing_url": self.webhook_url,
                        "events": ["button_click"],
                        "trigger_on": "commands",
                        "commands": [],
                        "scopes": ["messages:create"],
                        "template": "",
                        "template_engine": "liquid",
                        "challenge_key": "",
                        "link_preview_enabled": False,
                        "ignore_self_messages": True,
                        "events_history_enabled": False,
                        "single_chat": False,
                        "can_edit": ["admin"],
                        "who_can_add": "creator",
                    },
                }
            }
        if (method, template) == ("GET", "/users/{id}"):
            user = self.users.get(int(parts[1]))
            if user is None:
                return 404, api_error("id", "Пользователь не найден", "not_found", parts[1])
            return 200, {"data": user}
        if (method, template) == ("POST", "/messages/{id}/link_previews"):
            self.previews.setdefault(int(parts[1]), {}).update(body["link_previews"])
            return 204, None
        if (method, template) == ("GET", "/webhooks/events"):
            return 200, self._events_page()
        if (method, template) == ("DELETE", "/webhooks/events/{id}"):
            kept = [e for e in self.events if not isinstance(e, dict) or e.get("id") != parts[2]]
            if len(kept) == len(self.events):
                return 404, api_error("id", "Событие не найдено", "not_found", parts[2])
            self.events = kept
            return 204, None
        return 404, api_error("path", f"{method} {template} is not faked", "not_found")

    def add_user(self, user_id: int, first_name: str, last_name: str, nickname: str) -> None:
        self.users[user_id] = {
            "id": user_id,
            "first_name": first_name,
            "last_name": last_name,
            "nickname": nickname,
            "email": f"{nickname}@example.com",
            "phone_number": "",
            "department": "SRE",
            "title": "Engineer",
            "role": "user",
            "suspended": False,
            "invite_status": "confirmed",
            "inviter_id": None,
            "list_tags": [],
            "custom_properties": [],
            "user_status": None,
            "bot": False,
            "sso": False,
            "created_at": _now(),
            "last_activity_at": _now(),
            "time_zone": "Europe/Moscow",
            "image_url": None,
        }

    def _personal_chats(self, query: dict[str, str]) -> dict[str, Any]:
        """GET /chats: the bot's chats with a person (those of its direct messages; the
        group chats are not kept here), newest first, filtered by `personal` and
        `last_message_at_after`; the cursor is an offset."""
        after = query.get("last_message_at_after", "")
        chats = []
        for user_id, chat_id in self.dm_chats.items():
            posted = [m["created_at"] for m in self.messages.values() if m["chat_id"] == chat_id]
            last = max(posted, default=None)
            if query.get("personal") == "false" or last is None or last < after:
                continue
            chats.append(
                {
                    "id": chat_id,
                    "name": "",
                    "created_at": min(posted),
                    "owner_id": 1,
                    "member_ids": [1, user_id],
                    "group_tag_ids": [],
                    "channel": False,
                    "archived": False,
                    "personal": True,
                    "public": False,
                    "last_message_at": last,
                    "meet_room_url": f"https://meet.pachca.com/{chat_id}",
                }
            )
        chats.sort(key=lambda c: -c["id"])
        return _offset_page(chats, query)

    def _events_page(self) -> dict[str, Any]:
        # one page of at most `page_size` events; a cursor past them when more remain
        page = self.events[: self.page_size]
        more = len(self.events) > len(page)
        return {
            "data": page,
            "meta": {
                "paginate": {"next_page": "cursor-next" if more else "cursor-end", "has_next": more}
            },
        }

    def _check_content(self, message: dict[str, Any]) -> dict[str, Any] | None:
        content = message.get("content", "")
        if len(content.encode()) > CONTENT_LIMIT:
            return api_error("content", "Слишком длинный текст", "too_long")
        buttons = message.get("buttons") or []
        if (
            sum(len(row) for row in buttons) > 100
            or any(len(row) > 8 for row in buttons)
            or len(buttons) > 32
        ):
            return api_error("buttons", "Слишком много кнопок", "invalid")
        return None

    def _create(self, message: dict[str, Any]) -> tuple[int, Any]:
        if not message.get("content"):
            return 400, api_error("content", "Не может быть пустым", "blank")
        error = self._check_content(message)
        if error:
            return 422, error
        entity_type = message.get("entity_type", "discussion")
        entity_id = message["entity_id"]
        if (
            entity_type == "discussion"
            and self.member_of is not None
            and entity_id not in self.member_of
        ):
            return 422, api_error("entity_id", "Чат не найден", "not_found", str(entity_id))
        chat_id = root_chat_id = entity_id
        if entity_type == "thread":
            thread = next((t for t in self.threads.values() if t["id"] == entity_id), None)
            if thread is None:
                # POST /messages has no 404 in Pachca's spec: a missing target is a 422
                return 422, api_error("entity_id", "Тред не найден", "not_found", str(entity_id))
            # a comment lives in the thread's own chat (read with GET /messages?chat_id=)
            chat_id, root_chat_id = thread["chat_id"], thread["message_chat_id"]
        elif entity_type == "user":  # a direct message: the chat with that person
            chat_id = root_chat_id = self.dm_chats.setdefault(entity_id, next(self._ids))
        parent = message.get("parent_message_id")
        if parent is not None:
            replied = self.messages.get(parent)
            if replied is None or replied["chat_id"] != entity_id:
                return 422, api_error("parent_message_id", "Сообщение не найдено", "not_found")
        message_id = next(self._ids)
        stored = {
            "id": message_id,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "chat_id": chat_id,
            "root_chat_id": root_chat_id,
            "content": message["content"],
            "user_id": 1,
            "created_at": _now(),
            "url": f"https://app.pachca.com/chats/{entity_id}?message={message_id}",
            "files": [],
            "voice_content": None,
            "buttons": message.get("buttons") or None,
            "thread": None,
            "forwarding": None,
            "parent_message_id": parent,
            "changed_at": None,
            "deleted_at": None,
            "display_name": message.get("display_name"),
        }
        self.messages[message_id] = stored
        answer = {k: v for k, v in stored.items() if k != "display_name"}
        return 201, {"data": answer}


def _offset_page(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    """A page of `items` as Pachca answers it (`limit`, at most 50); the cursor is an offset
    here."""
    limit = min(50, int(query.get("limit", "50")))
    start = int(query.get("cursor") or 0)
    following = str(start + limit) if start + limit < len(items) else ""
    return {"data": items[start : start + limit], "meta": {"paginate": {"next_page": following}}}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
