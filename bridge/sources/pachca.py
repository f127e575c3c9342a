"""Pachca outgoing-webhook events: the signature check and the button-click payload.

The signature is HMAC-SHA256 over the raw body bytes, hex, in `Pachca-Signature`; it is checked
before the body is even parsed. `webhook_timestamp` bounds how old a signed body may be.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from bridge.errors import PayloadError
from bridge.model import Click, Command, LinkShared, PachcaEvent, Reaction
from bridge.sources.alertmanager import decode_json

SIGNATURE_HEADER = "Pachca-Signature"
ModelT = TypeVar("ModelT", bound=BaseModel)


def signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, given: str | None) -> bool:
    """Constant-time check of the `Pachca-Signature` header against the raw body."""
    if not given or not given.isascii():  # a hex digest is ASCII; anything else is forged
        return False
    return hmac.compare_digest(signature(secret, body).encode(), given.strip().lower().encode())


def timestamp_fresh(timestamp: int | float | None, now: float, max_age: float) -> bool:
    """Within `max_age` seconds of now, either way (a future-dated body is as suspect).
    Compared in integers first: a 400-digit number is simply not fresh."""
    if timestamp is None or not abs(int(timestamp) - int(now)) <= max_age + 1:
        return False
    return abs(now - float(timestamp)) <= max_age


class ButtonEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["button"]
    event: Literal["click"]
    message_id: int
    trigger_id: str
    data: str
    user_id: int
    chat_id: int
    webhook_timestamp: int


def decode_event(body: bytes) -> dict[str, Any]:
    """The event as a JSON object, or a 400 PayloadError."""
    data = decode_json(body)
    if not isinstance(data, dict):
        raise PayloadError(400, "event is not a JSON object")
    return data


def event_timestamp(event: dict[str, Any]) -> int | None:
    value = event.get("webhook_timestamp")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class ReactionEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["reaction"]
    event: Literal["new", "delete"]
    message_id: int
    code: str
    user_id: int
    created_at: str = ""


class MessageEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["message"]
    event: str
    id: int
    chat_id: int
    user_id: int
    content: str = ""


class SharedLink(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str
    skip: bool = False


class LinkSharedEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["message"]
    event: Literal["link_shared"]
    message_id: int
    links: list[SharedLink]


def _validated(model: type[ModelT], event: dict[str, Any], what: str) -> ModelT:
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
        raise PayloadError(400, f"not a valid Pachca {what} event", problems) from exc


def event_from_payload(event: dict[str, Any]) -> PachcaEvent | None:
    """The press, reaction or chat command an event carries; None for the kinds of event the
    bridge ignores. Raises PayloadError for one not shaped as Pachca sends it."""
    kind = event.get("type")
    if kind == "button":
        return click_from_event(event)
    if kind == "reaction":
        reaction = _validated(ReactionEvent, event, "reaction")
        return Reaction(
            # reactions carry no trigger id: the same emoji by the same person at the same
            # moment on the same message is the same event
            event_id=f"reaction:{reaction.message_id}:{reaction.user_id}:{reaction.code}:"
            f"{reaction.event}:{reaction.created_at}",
            message_id=reaction.message_id,
            code=reaction.code,
            user_id=reaction.user_id,
            added=reaction.event == "new",
        )
    if kind == "message" and event.get("event") == "link_shared":
        shared = _validated(LinkSharedEvent, event, "link_shared")
        return LinkShared(
            event_id=f"links:{shared.message_id}",
            message_id=shared.message_id,
            urls=tuple(link.url for link in shared.links if not link.skip),
        )
    if kind == "message" and event.get("event") == "new":
        message = _validated(MessageEvent, event, "message")
        if message.content.startswith("/"):
            return Command(
                event_id=f"message:{message.id}",
                chat_id=message.chat_id,
                user_id=message.user_id,
                text=message.content.strip(),
            )
    return None


def click_from_event(event: dict[str, Any]) -> Click | None:
    """The button press an event carries; None for the kinds of event the bridge ignores.
    Raises PayloadError for a button event that is not shaped as Pachca sends it."""
    if event.get("type") != "button":
        return None
    button = _validated(ButtonEvent, event, "button")
    return Click(
        event_id=button.trigger_id,
        data=button.data,
        user_id=button.user_id,
        chat_id=button.chat_id,
        message_id=button.message_id,
    )
