"""`POST /webhook/alertmanager`: refuse what is wrong (401/413/415/400) before touching any
state, answer 200 only once the notification is committed, 503 if it could not be."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bridge.errors import PayloadError, StoreError
from bridge.inbox import Accepted, body_id
from bridge.model import Notification
from bridge.web.body import CLOSE_AFTER, read_body
from bridge.web.state import AUTH, INBOX, INTAKE_SLOTS, METRICS, SETTINGS

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)


def json_error(status: int, message: str, details: object = None) -> web.Response:
    body: dict[str, object] = {"error": message}
    if details is not None:
        body["details"] = details
    headers = {"WWW-Authenticate": 'Bearer realm="pachca-alert-bridge"'} if status == 401 else None
    response = web.json_response(body, status=status, headers=headers)
    if status in CLOSE_AFTER:
        response.force_close()
    return response


# an extra check of the raw body (e.g. a signature), raising PayloadError to refuse it
BodyCheck = Callable[[web.Request, bytes], None]


def intake_handler(
    source: str, parse: Callable[[bytes], Notification], check_body: BodyCheck | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A webhook endpoint for one source."""

    async def handle(request: web.Request) -> web.Response:
        metrics = request.app[METRICS]
        with metrics.child(metrics.intake_latency, source).time():
            return await answer(request)

    async def answer(request: web.Request) -> web.Response:
        app = request.app
        metrics = app[METRICS]
        try:
            if not app[AUTH].allows(request.headers.get("Authorization")):
                raise PayloadError(401, "missing or wrong credentials in the Authorization header")
            if request.content_type not in JSON_TYPES:
                raise PayloadError(
                    415, f"Content-Type must be application/json, not {request.content_type!r}"
                )
            settings = app[SETTINGS]
            body = await read_body(request, settings.BRIDGE_MAX_BODY, settings.BRIDGE_READ_TIMEOUT)
            if check_body is not None:
                check_body(request, body)
            body_key = body_id(source, body)
            repeat = app[INBOX].repeat_of(source, body_key)  # a copy of a body recorded
            if repeat is not None:
                return accepted_response(repeat)
            note = parse(body)
        except PayloadError as exc:
            metrics.rejected.labels(source, str(exc.status)).inc()
            log.info(
                "refused %s webhook from %s: %s %s", source, request.remote, exc.status, exc.message
            )
            return json_error(exc.status, exc.message, exc.details)
        try:
            # a few at a time, the most severe waiting one next (see web.app.INTAKE_AT_ONCE)
            async with app[INTAKE_SLOTS].slot(app[INBOX].rank(note)):
                accepted = await app[INBOX].accept(note, body_key)
        except StoreError as exc:
            metrics.store_errors.inc()
            metrics.rejected.labels(source, "503").inc()
            log.error("could not record %s notification %s: %s", source, note.group_key, exc)
            return json_error(503, "could not record the notification; retry later")
        return accepted_response(accepted)

    return handle


def accepted_response(accepted: Accepted) -> web.Response:
    if not accepted.changed:  # most answers (repeats): their body is one of a few
        body = _unchanged_body(accepted.unchanged)
        return web.Response(body=body, content_type="application/json", charset="utf-8")
    return web.json_response(
        {"status": "accepted", "changed": accepted.changed, "unchanged": accepted.unchanged}
    )


@functools.lru_cache(maxsize=64)
def _unchanged_body(unchanged: int) -> bytes:
    return json.dumps({"status": "accepted", "changed": [], "unchanged": unchanged}).encode()
