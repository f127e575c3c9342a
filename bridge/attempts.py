"""What a delivery attempt does about an incident's one message, decided without I/O: post it,
wait for an earlier create whose outcome is unknown, look for that create in the chat first,
or post again because the message is gone. The outbox carries these decisions out.

The rule that keeps one message per incident: a create that may have been performed (the
answer was lost: a timeout, a dropped connection, a 5xx) is never followed by another until
it could have landed and the chat has been searched for it. The same wait keeps the message
true: an edit whose answer was lost is retried only once it could have landed, so a late
landing never shows an older state over the newer one. A post found that way is recorded
as the incident's message before anything is done to it: once edited, it may no longer look
like what the create sent, and could not be found a second time. Every other post (a reply,
a thread comment, a message to a chat) gets the same wait and search: posted twice, its
mentions ping people twice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from bridge.errors import (
    PachcaAuthError,
    PachcaError,
    PachcaRateLimited,
    PachcaRequestError,
    PachcaServerError,
    PachcaUnavailable,
)
from bridge.incidents import Effect
from bridge.model import Delivery

# a create whose answer was lost may still land this many client timeouts after it was sent
SETTLE_TIMEOUTS = 3.0
_MENTION = re.compile(r"<@\d+>|@[\w.-]+")


class CreateStep(StrEnum):
    UP_TO_DATE = "up_to_date"  # the message exists and shows the incident as it is
    EDIT = "edit"  # the message exists (found and adopted) but shows an older version
    POST = "post"  # nothing is in doubt: post
    WAIT = "wait"  # an earlier create may still land: not before `not_before`
    SEARCH = "search"  # an earlier create may have landed: look for it in the chat first


@dataclass(frozen=True)
class CreatePlan:
    step: CreateStep
    not_before: float = 0.0


def plan_create(delivery: Delivery, version: int, now: float, settle: float) -> CreatePlan:
    """The next step towards the message showing the incident at `version`. `settle`: how
    long after it was sent a create of unknown outcome may still land."""
    if delivery.message_id is not None:
        if delivery.rendered_version < version:
            return CreatePlan(CreateStep.EDIT)
        return CreatePlan(CreateStep.UP_TO_DATE)
    if delivery.create_sent_at is None:
        return CreatePlan(CreateStep.POST)
    landed_by = delivery.create_sent_at + settle
    if now < landed_by:
        return CreatePlan(CreateStep.WAIT, landed_by)
    return CreatePlan(CreateStep.SEARCH)


def outcome_unknown(exc: PachcaError) -> bool:
    """Might Pachca have performed the call although it failed? Yes when the answer was lost
    or came from something in front of Pachca (timeouts, dropped connections, 5xx); no for a
    429 or a 4xx, which Pachca gives before doing anything."""
    return isinstance(exc, PachcaUnavailable | PachcaServerError) and not isinstance(
        exc, PachcaRateLimited
    )


def posts_a_message(kind: str) -> bool:
    """Does an outbox item of this kind post a new message (the one call Pachca does not make
    idempotent)? The incident's message, a reply to it, a thread comment, a message of its own
    to a chat, a direct message (looked for in the personal chat with the person)."""
    return kind in (
        Effect.CREATE,
        Effect.REPLY_REOPENED,
        Effect.POST,
        Effect.DM,
    ) or kind.startswith("comment_")


def may_land_late(exc: PachcaError, posting: bool) -> bool:
    """Might this failed call still be performed after a retry of it, undoing the retry?
    `posting`: a post looked for in its chat before it is posted again (see posts_a_message):
    posted twice, it pings everyone twice; else an edit of the message (the older state shown
    over the newer: a live outage shown resolved). Their retries wait until the call could
    have landed."""
    return outcome_unknown(exc) and (posting or exc.endpoint == "PUT /messages/{id}")


def history_refused(exc: PachcaError) -> bool:
    """The chat's history cannot be read for this bot (a 4xx other than a bad token): the
    search can never succeed, so the create is posted without it rather than never."""
    return isinstance(exc, PachcaRequestError) and not isinstance(exc, PachcaAuthError)


def message_gone(exc: PachcaError) -> bool:
    """Pachca says the incident's message (or its thread) does not exist: deleted in the chat.
    The incident gets a new message rather than losing every later edit and comment. An edit
    or a thread request answers 404; a comment posted into a thread that is gone is refused
    with its `entity_id` "not_found" (POST /messages has no 404)."""
    if not isinstance(exc, PachcaRequestError):
        return False
    return exc.status == 404 or ("entity_id", "not_found") in exc.codes


def content_digest(content: str) -> str:
    """What a posted message says, in short: a create in doubt is recognised by it in the chat
    when it carries no button naming its incident (an incident already resolved when its
    message was posted shows none). Outer whitespace is left out, as chat servers trim it."""
    return hashlib.sha256(content.strip().encode()).hexdigest()[:32]


def post_keys(message: dict[str, object]) -> set[str]:
    """What a chat message could be recognised by: `ref:<ref>` for every incident a button
    names (the parts of its data after the first colon), and `digest:<digest>` of what it
    says. See is_post_of."""
    keys: set[str] = set()
    buttons = message.get("buttons")
    for row in buttons if isinstance(buttons, list) else []:
        for button in row if isinstance(row, list) else []:
            data = str(button.get("data", "")) if isinstance(button, dict) else ""
            keys.update(f"ref:{part}" for part in data.split(":")[1:] if part)
    content = message.get("content")
    if isinstance(content, str):
        keys.add(f"digest:{content_digest(content)}")
        keys.add(said_key(content))
        parent = message.get("parent_message_id")
        if isinstance(parent, int):
            keys.add(reply_key(parent, content))
    return keys


def said_key(content: str) -> str:
    """The key (see post_keys) of a message saying `content`, mentions left out: Pachca
    rewrites `<@id>` to `@nickname` in what it stores (a thread comment, a message of its own
    to a chat: looked for in a chat where only the bridge says such things)."""
    return f"said:{content_digest(_MENTION.sub('@', content))}"


def reply_key(parent: int, content: str) -> str:
    """The key (see post_keys) of a reply to message `parent` saying `content` (mentions left
    out, see said_key)."""
    return f"reply:{parent}:{content_digest(_MENTION.sub('@', content))}"


def wanted_keys(ref: str, digest: str | None) -> list[str]:
    """The keys (see post_keys) of the incident's own post: its button, or what it said."""
    return [f"ref:{ref}"] + ([f"digest:{digest}"] if digest is not None else [])


def is_post_of(message: dict[str, object], ref: str, digest: str | None) -> bool:
    """Is this chat message the incident's own post: a button names the incident, or it says
    exactly what the create in doubt posted."""
    return not post_keys(message).isdisjoint(wanted_keys(ref, digest))
