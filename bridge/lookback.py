"""Reading a chat's recent history back, for creates whose answer was lost: did the post land?

A create in doubt is looked for from the newest message back to the time it was sent. While
Pachca was slow many creates may be in doubt in one chat, each looked for half a minute later
behind a thousand newer posts: read one by one, that is thousands of calls, and a search cut
short posts the message twice. So each chat's history read is kept for a while (what every
message there could be recognised by, see attempts.post_keys): a later search reads only the
pages newer than what was read, and older ones only as far back as it needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.attempts import post_keys
from bridge.pachca import PachcaApi

# a post is looked for this far before the time its create was sent (clocks differ)
CLOCK_SLACK_SECONDS = 60.0
# at most this many pages (of 50) read by one search; past it the search gives up (a chat
# this busy is beyond anything Pachca lets one bot post: other people's messages)
MAX_PAGES = 200
# a chat's history read is forgotten when no search used it for this long, or when it holds
# this many messages (the next search reads afresh)
KEEP_SECONDS = 300.0
MAX_KEPT = 50_000


class LookbackCutShort(Exception):
    """The search read MAX_PAGES pages without reaching the time it looks back to."""


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class _Read:
    """What has been read of one chat: the messages from `newest_id` back to `oldest_at`."""

    newest_id: int = -1
    oldest_at: float | None = None  # None: nothing read yet
    cursor: str | None = None  # the next older page
    at_start: bool = False  # read back to the chat's first message
    posts: dict[str, int] = field(default_factory=dict)  # key -> newest message id with it
    count: int = 0
    used: float = 0.0

    def add(self, message: dict[str, Any]) -> None:
        message_id = message.get("id")
        if not isinstance(message_id, int):
            return
        self.count += 1
        for key in post_keys(message):
            if message_id > self.posts.get(key, -1):
                self.posts[key] = message_id

    def reaches(self, until: float) -> bool:
        return self.at_start or (self.oldest_at is not None and self.oldest_at < until)


class Lookback:
    """Finds a chat's message by its keys (attempts.wanted_keys), reading each page once."""

    def __init__(self, pachca: PachcaApi, clock: Callable[[], float] = time.monotonic) -> None:
        self.pachca = pachca
        self.clock = clock
        self._reads: dict[int, _Read] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def find(self, chat_id: int, keys: list[str], since: float) -> int | None:
        """The newest message in the chat with one of `keys`, looking back to `since` (unix
        time) less CLOCK_SLACK_SECONDS; None if there is none. LookbackCutShort if that is
        more than MAX_PAGES pages back; PachcaError as the reads fail."""
        lock = self._locks.setdefault(chat_id, asyncio.Lock())
        async with lock:
            self._forget_unused()
            read = self._reads.get(chat_id)
            if read is None or read.count > MAX_KEPT:
                read = self._reads[chat_id] = _Read()
            read.used = self.clock()
            try:
                await self._read_back(chat_id, read, since - CLOCK_SLACK_SECONDS)
            except LookbackCutShort:
                del self._reads[chat_id]  # too far behind to catch up: afresh next time
                raise
            found = [read.posts[key] for key in keys if key in read.posts]
            return max(found) if found else None

    def _forget_unused(self) -> None:
        now = self.clock()
        for chat_id, read in list(self._reads.items()):
            if now - read.used > KEEP_SECONDS:
                del self._reads[chat_id]

    async def _read_back(self, chat_id: int, read: _Read, until: float) -> None:
        """`read` brought up to the newest message and back past `until`; what is read is
        kept as it comes, so a search cut short by a failed page leaves it sound."""
        pages = 0
        if read.oldest_at is not None:  # the pages newer than what was read
            cursor: str | None = None
            newest = read.newest_id
            while True:
                if pages == MAX_PAGES:
                    raise LookbackCutShort(f"more than {MAX_PAGES} pages since the last read")
                messages, cursor = await self.pachca.messages_page(chat_id, cursor)
                pages += 1
                fresh = [m for m in messages if _id(m) > read.newest_id]
                for message in fresh:
                    read.add(message)
                newest = max([newest, *map(_id, fresh)])
                if len(fresh) < len(messages) or cursor is None:
                    break
            read.newest_id = newest  # only once joined to what was read: no gap
        while not read.reaches(until):  # the older pages, as far as needed
            if pages == MAX_PAGES:
                raise LookbackCutShort(f"more than {MAX_PAGES} pages back to the time sent")
            messages, read.cursor = await self.pachca.messages_page(chat_id, read.cursor)
            pages += 1
            for message in messages:
                read.add(message)
                read.newest_id = max(read.newest_id, _id(message))
                when = _timestamp(message.get("created_at"))
                if when is not None:
                    read.oldest_at = when if read.oldest_at is None else min(read.oldest_at, when)
            if read.oldest_at is None:
                read.oldest_at = float("inf")  # messages without a time: keep paging back
            read.at_start = read.cursor is None


def _id(message: dict[str, Any]) -> int:
    value = message.get("id")
    return value if isinstance(value, int) else -1


async def find_personal_chat(pachca: PachcaApi, user_id: int, since: float) -> int | None:
    """The bot's personal chat with the person, if a message was posted in it since `since`
    (unix time) less CLOCK_SLACK_SECONDS; None if there is none. A direct message's chat is
    not known before its answer (Pachca creates it with the first): a direct message whose
    answer was lost is looked for in the personal chats active since it was sent, few
    however many people the bot has written to. LookbackCutShort past MAX_PAGES pages."""
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        chats, cursor = await pachca.personal_chats_page(since - CLOCK_SLACK_SECONDS, cursor)
        for chat in chats:
            members = chat.get("member_ids")
            if isinstance(members, list) and user_id in members and _id(chat) >= 0:
                return _id(chat)
        if cursor is None:
            return None
    raise LookbackCutShort(f"more than {MAX_PAGES} pages of personal chats")
