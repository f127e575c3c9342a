"""`POST /pachca/webhook`: Pachca's outgoing-webhook events (button presses).

Checked before anything else: source IP (optional allow-list), body size, `Pachca-Signature`
over the raw bytes, then `webhook_timestamp` freshness. A refused request changes nothing.
A signed event that is permanently bad is answered 200 (so Pachca stops resending it) and logged;
a failure to record answers 503 (so Pachca retries).
"""

from __future__ import annotations

import logging
from ipaddress import ip_address

from aiohttp import web

from bridge.errors import PayloadError, StoreError
from bridge.settings import IPNetwork
from bridge.sources import pachca
from bridge.web.body import read_body
from bridge.web.intake import json_error
from bridge.web.state import CLOCK, EVENTS, METRICS, SETTINGS

log = logging.getLogger(__name__)

# Pachca's events are small (a click is ~200 bytes; a message event carries one message):
# this endpoint, open to the internet, never reads more than this
CALLBACK_MAX_BODY = 128 * 1024


def client_ip(remote: str | None, forwarded_for: str | None, trusted: list[IPNetwork]) -> str:
    """The address that sent the request: `X-Forwarded-For` is believed only hop by hop from
    the right, and only while the hop that added it is a trusted proxy."""
    address = remote or ""
    if not forwarded_for:
        return address
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    while hops and _within(address, trusted):
        address = hops.pop()
    return address


def _within(address: str, networks: list[IPNetwork]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _refuse(request: web.Request, status: int, reason: str, message: str) -> web.Response:
    request.app[METRICS].callbacks_refused.labels(reason).inc()
    log.warning("refused Pachca callback from %s: %s", request.remote, message)
    return json_error(status, message)


async def pachca_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    allow = settings.callback_allow_ips
    if allow:
        sender = client_ip(
            request.remote, request.headers.get("X-Forwarded-For"), settings.trusted_proxies
        )
        if not _within(sender, allow):
            return _refuse(request, 403, "source_ip", f"source {sender} is not allowed")
    try:
        body = await read_body(
            request, min(CALLBACK_MAX_BODY, settings.BRIDGE_MAX_BODY), settings.BRIDGE_READ_TIMEOUT
        )
    except PayloadError as exc:
        reason = {413: "too_large", 408: "slow_body"}.get(exc.status, "bad_body")
        return _refuse(request, exc.status, reason, exc.message)
    secret = settings.PACHCA_SIGNING_SECRET
    if secret is None:
        return _refuse(
            request, 401, "signature", "callbacks are disabled: PACHCA_SIGNING_SECRET is not set"
        )
    given = request.headers.get(pachca.SIGNATURE_HEADER)
    if not pachca.signature_valid(secret.get_secret_value(), body, given):
        return _refuse(request, 401, "signature", "missing or wrong Pachca-Signature")
    try:
        event = pachca.decode_event(body)
    except PayloadError as exc:
        return _ignore(request, exc.message)
    if not pachca.timestamp_fresh(
        pachca.event_timestamp(event), request.app[CLOCK](), settings.BRIDGE_CALLBACK_MAX_AGE
    ):
        return _refuse(
            request,
            401,
            "timestamp",
            "webhook_timestamp is missing or not within "
            f"{settings.BRIDGE_CALLBACK_MAX_AGE:.0f}s of now",
        )
    try:
        parsed = pachca.event_from_payload(event)
    except PayloadError as exc:
        return _ignore(request, f"{exc.message}: {exc.details}")
    if parsed is None:
        return web.json_response({"status": "ignored"})
    try:
        outcome = await request.app[EVENTS].handle(parsed)
    except StoreError as exc:
        log.error("could not record Pachca event %s: %s", parsed.event_id, exc)
        return json_error(503, "could not record the event; retry later")
    if outcome is None:
        return web.json_response({"status": "ignored"})
    status = "duplicate" if outcome.duplicate else "accepted"
    return web.json_response({"status": status})


def _ignore(request: web.Request, why: str) -> web.Response:
    """Signed by Pachca but unusable: say 200 so it is not resent forever, and log it."""
    request.app[METRICS].callbacks_refused.labels("bad_event").inc()
    log.error("ignoring a signed Pachca event that cannot be used: %s", why)
    return web.json_response({"status": "ignored", "error": why})
