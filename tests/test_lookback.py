"""Reading a chat back for creates in doubt (bridge/lookback.py), against the fake Pachca over
HTTP: what one search reads is kept, so the next reads only what is newer, joined without a
gap, and goes further back only when asked to."""

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bridge.attempts import wanted_keys
from bridge.errors import PachcaServerError
from bridge.lookback import Lookback, LookbackCutShort
from bridge.metrics import Metrics
from bridge.pachca import PachcaClient
from tests.fake_pachca import FakePachca

CHAT = 1000


@pytest.fixture
async def chat() -> AsyncIterator[tuple[FakePachca, PachcaClient]]:
    fake = FakePachca()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    client = PachcaClient(str(server.make_url("/api/shared/v1")), fake.token, 2.0, Metrics())
    yield fake, client
    await client.close()
    await server.close()
    assert fake.violations == []


def post(fake: FakePachca, ref: str, chat_id: int = CHAT) -> int:
    message = {
        "entity_type": "discussion",
        "entity_id": chat_id,
        "content": f"**{ref}**",
        "buttons": [[{"text": "Ack", "data": f"ack:{ref}"}]],
    }
    status, answer = fake._create(message)
    assert status == 201
    return int(answer["data"]["id"])


def reads(fake: FakePachca) -> int:
    return fake.count("GET", "/messages")


async def test_the_next_search_reads_only_what_is_newer_and_joins_it_without_a_gap(
    chat: tuple[FakePachca, PachcaClient],
) -> None:
    fake, client = chat
    lookback = Lookback(client)
    since = time.time()
    first = post(fake, "aaa")
    fake.chatter(CHAT, 120)
    assert await lookback.find(CHAT, wanted_keys("aaa", None), since) == first
    assert reads(fake) == 3  # 121 messages back to the start of the chat: three pages
    # 130 more, one of them the post looked for next, in the middle of them
    fake.chatter(CHAT, 60)
    second = post(fake, "bbb")
    fake.chatter(CHAT, 69)
    assert await lookback.find(CHAT, wanted_keys("bbb", None), since) == second
    assert reads(fake) == 3 + 3  # the 130 newer ones only
    assert await lookback.find(CHAT, wanted_keys("ccc", None), since) is None
    assert reads(fake) == 3 + 3 + 1  # the newest page: nothing new
    # another chat is read on its own
    other = post(fake, "ccc", chat_id=2000)
    assert await lookback.find(CHAT, wanted_keys("ccc", None), since) is None
    assert await lookback.find(2000, wanted_keys("ccc", None), since) == other


async def test_a_search_reads_back_only_as_far_as_it_needs(
    chat: tuple[FakePachca, PachcaClient],
) -> None:
    """Messages older than the time looked back to (less a minute's slack) are not read."""
    fake, client = chat
    lookback = Lookback(client)
    old = post(fake, "old")
    fake.chatter(CHAT, 200)
    for message in fake.messages.values():  # all of it an hour old
        message["created_at"] = "2000-01-01T00:00:00.000Z"
    fake.chatter(CHAT, 10)
    now = time.time()
    assert await lookback.find(CHAT, wanted_keys("old", None), now) is None
    assert reads(fake) == 1  # the first page already reaches past `now - 60 s`
    assert await lookback.find(CHAT, wanted_keys("old", None), 946684800.0) == old
    assert reads(fake) == 1 + 1 + 4  # newer (none), then back to the post's time


async def test_a_search_too_far_behind_is_cut_short_and_the_next_reads_afresh(
    chat: tuple[FakePachca, PachcaClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, client = chat
    monkeypatch.setattr("bridge.lookback.MAX_PAGES", 3)
    lookback = Lookback(client)
    since = time.time()
    first = post(fake, "aaa")
    assert await lookback.find(CHAT, wanted_keys("aaa", None), since) == first
    fake.chatter(CHAT, 200)  # four pages newer than what was read
    with pytest.raises(LookbackCutShort):
        await lookback.find(CHAT, wanted_keys("bbb", None), since)
    for message in fake.messages.values():  # what was there is an hour old by now
        message["created_at"] = "2000-01-01T00:00:00.000Z"
    second = post(fake, "bbb")
    before = reads(fake)
    # afresh: from the newest page back, not stuck behind the gap for good
    assert await lookback.find(CHAT, wanted_keys("bbb", None), time.time()) == second
    assert reads(fake) == before + 1


async def test_a_page_that_fails_halfway_through_what_is_newer_leaves_no_gap(
    chat: tuple[FakePachca, PachcaClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second of the newer pages fails: the next search reads them all again rather than
    taking the first for the join and never reading the second."""
    fake, client = chat
    lookback = Lookback(client)
    since = time.time()
    post(fake, "aaa")
    await lookback.find(CHAT, wanted_keys("aaa", None), since)
    wanted = post(fake, "bbb")
    fake.chatter(CHAT, 80)  # "bbb" is on the second page
    read_page = client.messages_page
    calls = 0

    async def second_fails(chat_id: int, cursor: str | None = None) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise PachcaServerError("GET /messages", "HTTP 502", 502)
        return await read_page(chat_id, cursor)

    monkeypatch.setattr(client, "messages_page", second_fails)
    with pytest.raises(PachcaServerError):
        await lookback.find(CHAT, wanted_keys("bbb", None), since)
    assert await lookback.find(CHAT, wanted_keys("bbb", None), since) == wanted
