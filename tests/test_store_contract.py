"""One contract every store backend passes."""

import asyncio
import os
import sqlite3
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import housekeeping
from bridge.briefs import Brief
from bridge.errors import ConflictError, DuplicateEvent, StoreError
from bridge.housekeeping import prune_once
from bridge.model import (
    Alert,
    AlertStatus,
    Delivery,
    Incident,
    IncidentState,
    group_prefix,
    incident_key,
)
from bridge.store import (
    Look,
    NewOutboxItem,
    Place,
    Store,
    Stored,
    changed_pages,
    open_pages,
    open_store,
    summaries,
)
from bridge.store import sqlite as sqlite_store
from bridge.store.memory import MemoryStore
from bridge.store.redis import RedisStore
from bridge.store.sqlite import SCHEMA, SQLiteStore
from bridge.tasks import Pulse

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        store: Store = RedisStore(server.url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    elif request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    else:
        store = open_store("memory://")
    await store.open()
    yield store
    await store.close()


def incident(
    ref: str = "r1",
    key: str = "k1",
    version: int = 1,
    state: IncidentState = IncidentState.FIRING,
    changed_at: datetime = T0,
) -> Incident:
    return Incident(
        ref=ref,
        key=key,
        source="alertmanager",
        route="default",
        chat_id=1,
        receiver="r",
        group_key="g",
        group_labels={},
        common_labels={},
        common_annotations={},
        external_url="",
        alerts={},
        truncated_alerts=0,
        state=state,
        opened_at=T0,
        changed_at=changed_at,
        version=version,
    )


async def test_delivery_round_trips(store: Store) -> None:
    await store.save_incident(incident(), None, [], 1.0)
    delivery = Delivery(message_id=7, thread_id=8, rendered_version=3, create_sent_at=1.5)
    await store.record_delivery("r1", delivery)
    stored = await store.load_by_ref("r1")
    assert stored is not None and stored.delivery == delivery
    in_doubt = Delivery(create_sent_at=2.5, create_digest="d" * 32)
    await store.record_delivery("r1", in_doubt)
    assert (await store.load_incident("k1")) == Stored(incident(), in_doubt)
    await store.record_delivery("r1", Delivery(message_id=9, rendered_version=1))
    stored = await store.load_by_ref("r1")
    assert stored is not None and stored.delivery == Delivery(message_id=9, rendered_version=1)


async def test_an_sqlite_database_of_an_older_version_gets_the_new_columns(tmp_path: Path) -> None:
    """A state file made before `create_digest` existed opens, keeps its incidents, and
    records the digest."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.replace(",\n    create_digest TEXT", ""))
    db.execute(
        "INSERT INTO incidents (ref, key, version, body, message_id, rendered_version) "
        "VALUES ('r1', 'k1', 1, ?, 5, 1)",
        (incident().model_dump_json(),),
    )
    db.execute("INSERT INTO current_incidents (key, ref) VALUES ('k1', 'r1')")
    db.commit()
    assert "create_digest" not in {r[1] for r in db.execute("PRAGMA table_info(incidents)")}
    db.close()
    store = SQLiteStore(str(path))
    await store.open()
    try:
        stored = await store.load_incident("k1")
        assert stored is not None and stored.delivery == Delivery(message_id=5, rendered_version=1)
        in_doubt = Delivery(create_sent_at=2.5, create_digest="d" * 32)
        await store.record_delivery("r1", in_doubt)
        assert (await store.load_by_ref("r1")) == Stored(incident(), in_doubt)
    finally:
        await store.close()


def older_outbox(path: Path, schema: str, items: list[tuple[str, str]], lacking: str) -> None:
    """A state file as an older version left it (`schema`, without the outbox's `lacking`
    column), with `items` (ref, kind) queued."""
    db = sqlite3.connect(path)
    db.executescript(schema)
    db.executemany(
        "INSERT INTO outbox (ref, kind, content, created_at, not_before) VALUES (?, ?, '', 1.0, 0)",
        items,
    )
    db.commit()
    assert lacking not in {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
    db.close()


async def test_creates_queued_by_an_older_version_keep_their_place(tmp_path: Path) -> None:
    """A state file from before the outbox lanes: its queued create still goes ahead of an
    edit queued before it, and the new column is indexed for the lane walk."""
    path = tmp_path / "old.db"
    old = SCHEMA.replace(",\n    priority INTEGER NOT NULL DEFAULT 100", "")
    older_outbox(path, old, [("r1", "edit"), ("r2", "create")], lacking="priority")
    store = SQLiteStore(str(path))
    await store.open()
    try:
        due = await store.due_items(10.0, 10)
        assert [(i.ref, i.kind) for i in due] == [("r2", "create"), ("r1", "edit")]
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert "outbox_by_lane" in {r[1] for r in db.execute("PRAGMA index_list(outbox)")}
    db.close()


async def test_items_queued_by_an_older_version_can_have_attempts_begun(tmp_path: Path) -> None:
    """A state file from before `begin_item`: its queued item is handed out as never begun,
    and an attempt at it can be recorded."""
    path = tmp_path / "old.db"
    old = SCHEMA.replace(",\n    -- when the attempt under way began", "\n    -- ")
    older_outbox(path, old.replace("    begun_at REAL\n", ""), [("r1", "comment")], "begun_at")
    store = SQLiteStore(str(path))
    await store.open()
    try:
        (item,) = await store.due_items(10.0, 10)
        assert item.begun_at is None and not item.in_doubt
        await store.begin_item(item.id, 11.0)
        (again,) = await store.due_items(12.0, 10)
        assert again.begun_at == 11.0 and again.in_doubt
    finally:
        await store.close()


async def test_save_and_load_by_key_and_ref(store: Store) -> None:
    await store.save_incident(incident(), None, [NewOutboxItem("create")], 1.0)
    stored = await store.load_incident("k1")
    assert stored is not None and stored.incident == incident()
    assert stored.delivery == Delivery()
    assert (await store.load_by_ref("r1")) == stored
    assert await store.load_incident("other") is None


async def test_compare_and_set_refuses_a_stale_writer(store: Store) -> None:
    await store.save_incident(incident(), None, [], 1.0)
    with pytest.raises(ConflictError):
        await store.save_incident(incident(), None, [], 1.0)  # both thought it was new
    await store.save_incident(incident(version=2), ("r1", 1), [], 1.0)
    with pytest.raises(ConflictError):
        await store.save_incident(incident(version=3), ("r1", 1), [], 1.0)  # lost the race
    stored = await store.load_incident("k1")
    assert stored is not None and stored.incident.version == 2


async def test_replacing_an_incident_keeps_the_old_one_by_ref(store: Store) -> None:
    await store.save_incident(incident(), None, [], 1.0)
    await store.save_incident(incident(ref="r2"), ("r1", 1), [], 2.0)
    current = await store.load_incident("k1")
    assert current is not None and current.incident.ref == "r2"
    assert await store.load_by_ref("r1") is not None


async def test_delivery_is_kept_apart_from_incident_writes(store: Store) -> None:
    await store.save_incident(incident(), None, [], 1.0)
    await store.record_delivery("r1", Delivery(message_id=5, thread_id=None, rendered_version=1))
    await store.save_incident(incident(version=2), ("r1", 1), [], 2.0)
    stored = await store.load_incident("k1")
    assert stored is not None and stored.delivery.message_id == 5


async def test_outbox_hands_out_the_oldest_item_of_each_incident(store: Store) -> None:
    await store.save_incident(
        incident(), None, [NewOutboxItem("create"), NewOutboxItem("edit")], 1.0
    )
    await store.save_incident(incident("r2", "k2"), None, [NewOutboxItem("create")], 2.0)
    due = await store.due_items(10.0, 10)
    assert [(i.ref, i.kind) for i in due] == [("r1", "create"), ("r2", "create")]
    await store.finish_item(due[0].id)
    due = await store.due_items(10.0, 10)
    # creations first: a new incident is not stuck behind edits of older ones
    assert [(i.ref, i.kind) for i in due] == [("r2", "create"), ("r1", "edit")]
    assert (await store.outbox_stats(10.0))[:2] == (2, 9.0)


async def test_an_edit_waiting_behind_the_head_absorbs_new_edits(store: Store) -> None:
    await store.save_incident(
        incident(), None, [NewOutboxItem("create"), NewOutboxItem("edit")], 1.0
    )
    await store.save_incident(
        incident(version=2),
        ("r1", 1),
        [NewOutboxItem("edit"), NewOutboxItem("comment_resolved", "x")],
        2.0,
    )
    assert (await store.outbox_stats(2.0))[0] == 3  # create, edit, comment: no second edit
    (head,) = await store.due_items(5.0, 10)
    await store.finish_item(head.id)  # the create went; the waiting edit is now the head
    await store.save_incident(incident(version=3), ("r1", 2), [NewOutboxItem("edit")], 3.0)
    # the head edit may already be in flight with older content, so a new one is queued
    assert (await store.outbox_stats(3.0))[0] == 3


async def test_items_keep_content_and_actor_through_retries(store: Store) -> None:
    await store.save_incident(incident(), None, [NewOutboxItem("silence", '{"d": 1}', 42)], 1.0)
    (item,) = await store.due_items(1.0, 10)
    await store.retry_item(item.id, 2.0, "HTTP 503")
    (again,) = await store.due_items(2.0, 10)
    assert (again.kind, again.content, again.actor, again.attempts) == (
        "silence",
        '{"d": 1}',
        42,
        1,
    )


async def test_an_attempt_begun_is_seen_by_whoever_takes_the_item_up_until_it_settles(
    store: Store,
) -> None:
    """An attempt that began and was never settled (its replica died mid-call) is handed out
    as such, so the next attempt waits for its call and looks before posting; a retry
    settles it."""
    await store.save_incident(incident(), None, [NewOutboxItem("comment_resolved", "t")], 1.0)
    (item,) = await store.due_items(1.0, 10)
    assert item.begun_at is None and not item.in_doubt
    await store.begin_item(item.id, 1.5)
    (again,) = await store.due_items(2.0, 10)
    assert (again.id, again.begun_at, again.attempts, again.in_doubt) == (item.id, 1.5, 0, True)
    await store.begin_item(item.id, 2.5)  # the next attempt begins
    await store.retry_item(item.id, 3.0, "HTTP 503")
    (retried,) = await store.due_items(3.0, 10)
    assert (retried.begun_at, retried.attempts, retried.in_doubt) == (None, 1, True)
    await store.begin_item(item.id + 1000, 4.0)  # an item gone since: nothing to record


async def test_retried_item_waits_and_blocks_its_incident(store: Store) -> None:
    await store.save_incident(
        incident(), None, [NewOutboxItem("create"), NewOutboxItem("edit")], 1.0
    )
    (first,) = await store.due_items(1.0, 10)
    await store.retry_item(first.id, 100.0, "HTTP 503")
    assert await store.due_items(50.0, 10) == []  # the edit does not overtake the create
    (again,) = await store.due_items(100.0, 10)
    assert again.id == first.id and again.attempts == 1


async def test_dead_letters_keep_the_item_and_the_reason(store: Store) -> None:
    await store.save_incident(incident(), None, [NewOutboxItem("comment_resolved", "text")], 1.0)
    (item,) = await store.due_items(1.0, 10)
    await store.dead_letter(item, "HTTP 422: content: too long", 5.0)
    assert await store.due_items(1.0, 10) == []
    (dead,) = await store.dead_letters()
    assert dead.item == item and dead.error.startswith("HTTP 422") and dead.failed_at == 5.0


async def test_prune_forgets_only_long_resolved_idle_incidents(store: Store) -> None:
    old = T0 - timedelta(days=8)
    await store.save_incident(
        incident("r1", "k1", state=IncidentState.RESOLVED, changed_at=old), None, [], 1.0
    )
    await store.save_incident(
        incident("r2", "k2", state=IncidentState.FIRING, changed_at=old), None, [], 1.0
    )
    await store.save_incident(
        incident("r3", "k3", state=IncidentState.RESOLVED, changed_at=old),
        None,
        [NewOutboxItem("edit")],
        1.0,
    )
    await store.save_incident(
        incident("r4", "k4", state=IncidentState.RESOLVED, changed_at=T0), None, [], 1.0
    )
    removed = await prune_once(store, retention=7 * 86400, now=T0.timestamp())
    assert removed == 1
    assert await store.load_incident("k1") is None and await store.load_by_ref("r1") is None
    for key in ("k2", "k3", "k4"):
        assert await store.load_incident(key) is not None


async def test_find_by_message_and_all_incidents(store: Store) -> None:
    await store.save_incident(incident(), None, [], 1.0)
    await store.save_incident(incident("r2", "k2"), None, [], 1.0)
    await store.record_delivery("r2", Delivery(message_id=777))
    assert await store.find_by_message(777) == "r2"
    assert await store.find_by_message(778) is None
    assert sorted(s.incident.ref for s in await store.all_incidents()) == ["r1", "r2"]


async def test_an_enqueue_with_an_event_id_is_claimed_once(store: Store) -> None:
    """How once-per-period work (the digest) is claimed and queued in one write."""
    post = [NewOutboxItem("post", "{}")]
    await store.enqueue("digest:1000:2026-11-24", post, 1.0, event_id="digest:1000:2026-11-24")
    with pytest.raises(DuplicateEvent):
        await store.enqueue("digest:1000:2026-11-24", post, 2.0, event_id="digest:1000:2026-11-24")
    assert await store.event_seen("digest:1000:2026-11-24")
    assert not await store.event_seen("digest:1000:2026-11-25")
    assert (await store.outbox_stats(3.0)).depth == 1


async def test_finishing_an_item_can_record_the_delivery_in_the_same_write(store: Store) -> None:
    await store.save_incident(incident(), None, [NewOutboxItem("create")], 1.0)
    (item,) = await store.due_items(1.0, 10)
    await store.finish_item(item.id, ("r1", Delivery(message_id=9, rendered_version=1)))
    stored = await store.load_by_ref("r1")
    assert stored is not None and stored.delivery.message_id == 9
    assert await store.due_items(1.0, 10) == []


async def test_dead_letters_are_counted_and_pruned_oldest_first(store: Store) -> None:
    await store.save_incident(incident(), None, [NewOutboxItem("create")], 1.0)
    await store.enqueue("r1", [NewOutboxItem("dm", "a", 1), NewOutboxItem("dm", "b", 2)], 1.0)
    for failed_at in (100.0, 200.0, 300.0):
        (item,) = await store.due_items(failed_at, 8)
        await store.dead_letter(item, f"refused at {failed_at}", failed_at)
    assert (await store.outbox_stats(400.0)).dead_letters == 3
    await prune_once(store, retention=10**9, now=450.0, dead_letter_retention=200.0)
    remaining = await store.dead_letters()
    assert [d.error for d in remaining] == ["refused at 300.0"]
    assert (await store.outbox_stats(400.0)) == (0, 0.0, 1)


async def test_a_groups_incidents_are_found_whichever_chat_they_are_in(store: Store) -> None:
    def in_chat(ref: str, chat: int, group: str = "g1") -> Incident:
        key = incident_key("alertmanager", "pachca", group, chat)
        return incident(ref=ref).model_copy(update={"key": key, "chat_id": chat})

    await store.save_incident(in_chat("ra", 1000), None, [], 1.0)
    await store.save_incident(in_chat("rb", 2000), None, [], 1.0)
    await store.save_incident(in_chat("rc", 1000, group="g10"), None, [], 1.0)
    found = await store.load_group(group_prefix("alertmanager", "pachca", "g1"))
    assert [s.incident.ref for s in found] == ["ra", "rb"]
    assert await store.load_group(group_prefix("alertmanager", "pachca", "g2")) == []


async def test_swaps_are_shared_replaced_cleared_and_expire(store: Store) -> None:
    assert await store.swaps(0.0) == []
    await store.set_swap("dba", "<@103>", 100.0, 200.0)
    await store.set_swap("web", "@anna", 100.0, 150.0)
    assert sorted(await store.swaps(120.0)) == [
        ("dba", "<@103>", 100.0, 200.0),
        ("web", "@anna", 100.0, 150.0),
    ]
    assert [s.schedule for s in await store.swaps(160.0)] == ["dba"]  # web's is over
    await store.set_swap("dba", "@petrov", 130.0, 300.0)  # taken by someone else: replaced
    assert await store.swaps(250.0) == [("dba", "@petrov", 130.0, 300.0)]
    await store.clear_swap("dba")
    await store.clear_swap("dba")  # twice: nothing to clear, no error
    assert await store.swaps(140.0) == [("web", "@anna", 100.0, 150.0)]


async def test_calendars_keep_the_last_good_copy(store: Store) -> None:
    assert await store.calendar("secondary") is None
    await store.save_calendar("secondary", "BEGIN:VCALENDAR\r\nfirst")
    await store.save_calendar("secondary", "BEGIN:VCALENDAR\r\nsecond")
    assert await store.calendar("secondary") == "BEGIN:VCALENDAR\r\nsecond"
    assert await store.calendar("other") is None


async def test_the_timeline_is_written_with_its_change_bounded_and_pruned(store: Store) -> None:
    from bridge.timeline import MAX_EVENTS, Event

    first = [Event(1.0, "opened", {"route": "default"}), Event(1.0, "fired", {"alert": "a"})]
    await store.save_incident(incident(), None, [NewOutboxItem("create")], 1.0, timeline=first)
    # a write that conflicts records nothing
    with pytest.raises(ConflictError):
        await store.save_incident(
            incident(version=2), None, [], 2.0, timeline=[Event(2.0, "acked", {"by": 1})]
        )
    (item,) = await store.due_items(2.0, 8)
    await store.retry_item(item.id, 3.0, "HTTP 503", Event(2.5, "delivery", {"result": "retry"}))
    (item,) = await store.due_items(4.0, 8)
    await store.finish_item(item.id, None, Event(4.0, "delivery", {"result": "sent"}))
    events, dropped = await store.timeline("r1")
    assert [(e.at, e.kind, dict(e.details)) for e in events] == [
        (1.0, "opened", {"route": "default"}),
        (1.0, "fired", {"alert": "a"}),
        (2.5, "delivery", {"result": "retry"}),
        (4.0, "delivery", {"result": "sent"}),
    ]
    assert dropped == 0
    # bounded: the oldest go, and the drop is counted
    many = [Event(10.0 + n, "repeats", {"count": n}) for n in range(MAX_EVENTS)]
    await store.save_incident(incident(version=2), ("r1", 1), [], 5.0, timeline=many)
    events, dropped = await store.timeline("r1")
    assert len(events) == MAX_EVENTS and dropped == 4
    assert [e.details["count"] for e in events] == list(range(MAX_EVENTS))  # in order
    # forgotten with the incident
    resolved = incident(version=3, state=IncidentState.RESOLVED, changed_at=T0 - timedelta(days=8))
    await store.save_incident(resolved, ("r1", 2), [], 6.0)
    assert await prune_once(store, retention=7 * 86400, now=T0.timestamp()) == 1
    assert await store.timeline("r1") == ([], 0)


async def test_events_can_join_a_timeline_without_changing_the_incident(store: Store) -> None:
    from bridge.timeline import Event

    await store.save_incident(incident(), None, [], 1.0, timeline=[Event(1.0, "opened")])
    await store.enqueue("r1", [], 2.0, timeline=[Event(2.0, "swap", {"schedule": "dba"})])
    events, _ = await store.timeline("r1")
    assert [e.kind for e in events] == ["opened", "swap"]
    assert (await store.load_by_ref("r1")).incident.version == 1  # type: ignore[union-attr]


async def test_lanes_serve_presses_then_creates_by_severity_then_the_rest(store: Store) -> None:
    from bridge.store.base import OTHER, PRESS

    await store.save_incident(
        incident("r1", "k1"), None, [NewOutboxItem("create", priority=3)], 1.0
    )
    await store.save_incident(
        incident("r2", "k2"), None, [NewOutboxItem("create", priority=1)], 2.0
    )
    await store.save_incident(incident("r3", "k3"), None, [NewOutboxItem("comment_x")], 3.0)
    await store.save_incident(incident("r4", "k4"), None, [NewOutboxItem("edit")], 4.0)
    due = await store.due_items(10.0, 10)
    assert [(i.ref, i.priority) for i in due] == [
        ("r2", 1),
        ("r1", 3),
        ("r3", OTHER),
        ("r4", OTHER),
    ]
    # a press on r4: its queue (the old edit too) goes first
    await store.enqueue("r4", [NewOutboxItem("dm", "done", 7, priority=PRESS)], 5.0)
    due = await store.due_items(10.0, 10)
    assert (due[0].ref, due[0].kind, due[0].priority) == ("r4", "edit", PRESS)
    assert NewOutboxItem("create").priority < OTHER  # a create told no severity: still first


async def test_the_scheduler_looks_at_what_changed_and_at_what_came_due(store: Store) -> None:
    """`looks_due` is the scheduler's index (SPEC 8): a save of an open incident makes it
    due at the save's time; a look puts it off until `look_again`'s time (None: until it
    changes); a newer version, a finished incident and a replaced one are never put off or
    handed out by mistake."""
    await store.save_incident(incident(), None, [], 10.0)
    await store.save_incident(incident(ref="r2", key="k2"), None, [], 11.0)
    assert await store.looks_due(10.0, 10) == [], "due at the save's time, not before"
    assert await store.looks_due(100.0, 10) == ["r1", "r2"]  # earliest first
    assert await store.looks_due(100.0, 1) == ["r1"]
    await store.look_again([])
    await store.look_again([Look("r1", 1, 500.0), Look("r2", 1, None)])  # one write
    assert await store.looks_due(100.0, 10) == []
    assert await store.looks_due(500.5, 10) == ["r1"]
    # a look at an older version does not put off the newer one's look
    await store.save_incident(incident(ref="r2", key="k2", version=2), ("r2", 1), [], 120.0)
    await store.look_again([Look("r2", 1, 900.0)])
    assert await store.looks_due(200.0, 10) == ["r2"]
    # finished: nothing more to look at, and a late look does not bring it back
    resolved = incident(ref="r2", key="k2", version=3, state=IncidentState.RESOLVED)
    await store.save_incident(resolved, ("r2", 2), [], 130.0)
    await store.look_again([Look("r2", 3, 140.0)])
    assert await store.looks_due(1000.0, 10) == ["r1"]
    # replaced by a new incident of the same key: only the new one is looked at
    await store.save_incident(incident(ref="r3"), ("r1", 1), [], 150.0)
    assert await store.looks_due(1000.0, 10) == ["r3"]
    await store.look_again([Look("r1", 1, 160.0)])
    assert await store.looks_due(1000.0, 10) == ["r3"]


async def test_what_times_a_look_is_read_without_the_incident(store: Store) -> None:
    """`look_facts` (a start under new rules re-times every open incident from them): each
    store's reading of the fields equals the incident's own, whatever they hold; refs no
    longer held are left out."""
    later = T0 + timedelta(hours=2, microseconds=5)
    kinds: list[dict[str, Any]] = [
        {},
        {"acked_by": 42, "reminded_at": later, "escalated": 2, "firing_since": later},
        {"state": IncidentState.RESOLVED, "silence_id": "s1", "silenced_until": later},
        {"refired_pending": ["fp1", "fp2"], "refired_since": later, "last_seen": later},
        {"state": IncidentState.RESOLVED, "route": 'Дежурные "db"'},
    ]
    saved = []
    for n, update in enumerate(kinds):
        one = incident(ref=f"r{n}", key=f"k{n}", version=n + 1).model_copy(update=update)
        await store.save_incident(one, None, [], 10.0)
        saved.append(one)
    # with alerts, and a label that reads like the text around them (Redis cuts them out)
    tricky = '"alerts":{"x":1},"truncated_alerts":3}'
    held = holding_alerts("r9", "k9", "a", "b").model_copy(
        update={"group_labels": {"alertname": tricky}, "acked_by": 7, "last_seen": later}
    )
    await store.save_incident(held, None, [], 10.0)
    saved.append(held)
    refs = [*(f"r{n}" for n in range(len(kinds))), "r9"]
    facts = await store.look_facts([*refs, "gone"])
    assert sorted(facts, key=lambda f: f.ref) == [one.look_facts() for one in saved]
    assert [f.finished for f in facts if f.ref == "r4"] == [True]
    assert await store.look_facts([]) == []


async def test_each_look_of_a_batch_is_held_to_its_own_version(store: Store) -> None:
    """The scheduler records a page of looks in one write: a stale one among them (its
    incident saved again meanwhile) is skipped alone, the others recorded."""
    for n in range(1, 5):
        await store.save_incident(incident(ref=f"r{n}", key=f"k{n}"), None, [], 10.0)
    await store.save_incident(incident(ref="r2", key="k2", version=2), ("r2", 1), [], 20.0)
    await store.look_again([Look(f"r{n}", 1, 500.0 + n) for n in range(1, 5)])
    assert await store.looks_due(100.0, 10) == ["r2"]  # due at its save, the look was stale
    assert await store.looks_due(600.0, 10) == ["r2", "r1", "r3", "r4"]


async def test_open_incidents_a_page_at_a_time(store: Store) -> None:
    """A pass over every open incident (first tick, silence check-back) holds a page at a
    time; open means not finished: firing, or resolved under a silence still shown."""
    resolved = IncidentState.RESOLVED
    await store.save_incident(incident(), None, [], 1.0)
    await store.save_incident(incident(ref="r2", key="k2", state=resolved), None, [], 1.0)
    silenced = incident(ref="r3", key="k3", state=resolved).model_copy(update={"silence_id": "s1"})
    await store.save_incident(silenced, None, [], 1.0)
    await store.save_incident(incident(ref="r4", key="k4"), None, [], 1.0)
    await store.save_incident(incident(ref="r5", key="k4"), ("r4", 1), [], 2.0)  # replaces r4
    assert await store.open_refs() == ["r1", "r3", "r5"]
    assert sorted(i.ref for i in await store.open_incidents()) == ["r1", "r3", "r5"]
    loaded = await store.load_many(["r5", "gone", "r1"])
    assert [s.incident.ref for s in loaded] == ["r5", "r1"]
    assert await store.load_many([]) == []
    pages = [[i.ref for i in page] async for page in open_pages(store, 2)]
    assert pages == [["r1", "r3"], ["r5"]]


async def test_incidents_are_walked_in_the_order_of_change(store: Store) -> None:
    """`changed` (the pages, the digest, link previews): firing and resolved apart, the most
    recently changed first (ties: greater ref first), from a place on, since a time, a page
    at a time; a change moves an incident, a resolution moves it to the other walk, pruning
    removes it."""
    resolved = IncidentState.RESOLVED
    at = [T0 + timedelta(minutes=n) for n in range(4)]
    for ref, when in (("a1", at[1]), ("a2", at[1]), ("a3", at[1]), ("b", at[2]), ("c", at[0])):
        await store.save_incident(incident(ref, f"k-{ref}", changed_at=when), None, [], 1.0)
    await store.save_incident(incident("d", "k-d", state=resolved, changed_at=at[3]), None, [], 1)
    s = [when.timestamp() for when in at]
    everything = [Place(s[2], "b"), Place(s[1], "a3"), Place(s[1], "a2"), Place(s[1], "a1")]
    everything.append(Place(s[0], "c"))
    assert await store.changed(True, float("-inf"), None, 10) == everything
    assert await store.changed(True, s[1], None, 10) == everything[:4]  # since: inclusive
    assert await store.changed(True, float("-inf"), None, 2) == everything[:2]
    # on from a place inside a tie, and from one not held
    assert await store.changed(True, float("-inf"), everything[2], 10) == everything[3:]
    assert await store.changed(True, float("-inf"), Place(s[1], "a15"), 1) == [everything[3]]
    assert await store.changed(False, float("-inf"), None, 10) == [Place(s[3], "d")]
    walked = [[s.incident.ref for _, s in page] async for page in changed_pages(store, True)]
    assert walked == [["b", "a3", "a2", "a1", "c"]]
    # a change moves "c" first; its resolution moves it to the other walk
    later = T0 + timedelta(hours=1)
    await store.save_incident(incident("c", "k-c", 2, changed_at=later), ("c", 1), [], 2.0)
    assert (await store.changed(True, float("-inf"), None, 1)) == [Place(later.timestamp(), "c")]
    ended = incident("c", "k-c", 3, state=resolved, changed_at=later)
    await store.save_incident(ended, ("c", 2), [], 3.0)
    assert [p.ref for p in await store.changed(True, float("-inf"), None, 10)] == [
        "b",
        "a3",
        "a2",
        "a1",
    ]
    assert [p.ref for p in await store.changed(False, float("-inf"), None, 10)] == ["c", "d"]
    assert await store.prune(later.timestamp() + 1, 0.0, 0.0) == 2
    assert await store.changed(False, float("-inf"), None, 10) == []


async def test_the_order_of_change_is_walked_past_a_page_of_ties(store: Store) -> None:
    """One notification opens many incidents at the same instant: a walk a page at a time
    still reads each once."""
    for n in range(7):
        await store.save_incident(incident(f"r{n}", f"k{n}"), None, [], 1.0)
    walked, below = [], None
    while places := await store.changed(True, float("-inf"), below, 3):
        walked += [p.ref for p in places]
        below = places[-1]
    assert walked == [f"r{n}" for n in reversed(range(7))]


# saves: (incident number, minute changed, firing); the same number saved again is a change
SAVES = st.lists(
    st.tuples(st.integers(0, 11), st.integers(0, 3), st.booleans()), min_size=1, max_size=30
)


@settings(max_examples=40)
@given(SAVES, st.integers(1, 7), st.none() | st.integers(0, 3))
@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_property_a_walk_in_pages_is_the_order_of_change(
    kind: str,
    redis_server: Any,
    saves: list[tuple[int, int, bool]],
    size: int,
    since: int | None,
) -> None:
    """Whatever was saved and however it is paged: each walk lists every incident held in
    its state once, most recently changed first, ties by greater ref first, since `since`."""

    async def run() -> None:
        if kind == "redis":
            store: Store = RedisStore(redis_server.url, prefix=f"p-{uuid.uuid4().hex[:8]}:")
        else:
            store = open_store("memory://" if kind == "memory" else "sqlite:///:memory:")
        await store.open()
        held: dict[str, Incident] = {}
        for n, minute, firing in saves:
            ref = f"{n:04x}"
            before = held.get(ref)
            state = IncidentState.FIRING if firing else IncidentState.RESOLVED
            version = before.version + 1 if before else 1
            when = T0 + timedelta(minutes=minute)
            held[ref] = incident(ref, f"k{n}", version, state, when)
            replaces = (ref, before.version) if before else None
            await store.save_incident(held[ref], replaces, [], 1.0)
        start = float("-inf") if since is None else (T0 + timedelta(minutes=since)).timestamp()
        for firing in (True, False):
            expected = sorted(
                (
                    Place(i.changed_at.timestamp(), i.ref)
                    for i in held.values()
                    if (i.state is IncidentState.FIRING) == firing
                    and i.changed_at.timestamp() >= start
                ),
                reverse=True,
            )
            walked: list[Place] = []
            below = None
            while page := await store.changed(firing, start, below, size):
                assert len(page) <= size
                walked += page
                below = page[-1]
            assert walked == expected
        await store.close()

    asyncio.run(run())


def on_route(ref: str, key: str, route: str, **update: object) -> Incident:
    return incident(ref=ref, key=key).model_copy(update={"route": route, **update})


async def test_open_incidents_are_found_by_route(store: Store) -> None:
    """`open_refs_on` (a start under new timing for some routes re-times their incidents
    alone): open incidents of the routes asked, in ref order; not finished ones, not one
    replaced (even by one of another route), not another route's."""
    resolved = IncidentState.RESOLVED
    await store.save_incident(on_route("r1", "k1", "db"), None, [], 1.0)
    await store.save_incident(on_route("r2", "k2", "web"), None, [], 1.0)
    await store.save_incident(on_route("r3", "k3", "db", state=resolved), None, [], 1.0)
    await store.save_incident(on_route("r4", "k4", "db"), None, [], 1.0)
    await store.save_incident(on_route("r5", "k4", "web"), ("r4", 1), [], 2.0)  # replaces r4
    await store.save_incident(on_route("r6", "k6", "db"), None, [], 1.0)
    await store.save_incident(on_route("r0", "k0", "db"), None, [], 1.0)
    ended = on_route("r6", "k6", "db", version=2, state=resolved)
    await store.save_incident(ended, ("r6", 1), [], 3.0)  # finished since
    assert await store.open_refs_on(["db"]) == ["r0", "r1"]
    assert await store.open_refs_on(["web"]) == ["r2", "r5"]
    assert await store.open_refs_on(["web", "db", "gone"]) == ["r0", "r1", "r2", "r5"]
    assert await store.open_refs_on([]) == []


async def test_an_sqlite_database_without_routes_names_its_incidents_as_candidates(
    tmp_path: Path,
) -> None:
    """Incidents saved before the store kept their route are named for any route asked
    (never missed), until saved again."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.replace("    route TEXT,\n", ""))
    db.execute(
        "INSERT INTO incidents (ref, key, version, body) VALUES ('r1', 'k1', 1, ?)",
        (on_route("r1", "k1", "db").model_dump_json(),),
    )
    db.execute("INSERT INTO current_incidents (key, ref) VALUES ('k1', 'r1')")
    db.commit()
    assert "route" not in {r[1] for r in db.execute("PRAGMA table_info(incidents)")}
    db.close()
    store = SQLiteStore(str(path))
    await store.open()
    try:
        assert await store.open_refs_on(["web"]) == ["r1"]
        again = on_route("r1", "k1", "db", version=2)
        await store.save_incident(again, ("r1", 1), [], 2.0)
        assert await store.open_refs_on(["web"]) == []
        assert await store.open_refs_on(["db"]) == ["r1"]
    finally:
        await store.close()


async def test_redis_data_without_routes_gets_them_indexed(redis_server: Any) -> None:
    """Data whose index kept no routes (`indexed` = 1): the first start indexes them."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    await store.save_incident(on_route("r1", "k1", "db"), None, [], 1.0)
    raw = store._redis
    for key in await raw.keys(f"{prefix}route:*"):
        await raw.delete(key)
    await raw.set(f"{prefix}indexed", "1")
    assert await store.open_refs_on(["db"]) == []
    await store.close()
    again = RedisStore(redis_server.url, prefix=prefix)
    await again.open()
    try:
        assert await again.open_refs_on(["db"]) == ["r1"]
        assert await again.holding([]) == []
    finally:
        await again.close()


async def test_many_incidents_are_read_past_a_statements_limit(tmp_path: Path) -> None:
    """SQLite caps a statement's parameters: a long list of refs is read in chunks."""
    store = SQLiteStore(str(tmp_path / "many.db"))
    await store.open()
    try:
        refs = [f"r{n:04d}" for n in range(1_200)]
        for ref in refs:
            await store.save_incident(incident(ref=ref, key=ref), None, [], 1.0)
        loaded = await store.load_many(list(reversed(refs)))
        assert [s.incident.ref for s in loaded] == list(reversed(refs))
        assert len(await store.open_incidents()) == 1_200
    finally:
        await store.close()


def holding_alerts(ref: str, key: str, *fingerprints: str, **update: object) -> Incident:
    alerts = {
        fp: Alert(fingerprint=fp, status=AlertStatus.FIRING, labels={"fp": fp}, starts_at=T0)
        for fp in fingerprints
    }
    return incident(ref=ref, key=key).model_copy(update={"alerts": alerts, **update})


async def test_incidents_are_read_without_their_alerts_for_summaries(store: Store) -> None:
    """`load_many(alerts=False)`: everything but the alerts, as saved, whatever the labels say
    (Redis cuts the alerts out of the body's text)."""
    tricky = '"alerts":{"x":1},"truncated_alerts":3}'
    held = holding_alerts("r1", "k1", "a", "b").model_copy(
        update={
            "group_labels": {"alertname": tricky, "alerts": "{"},
            "common_annotations": {"truncated_alerts": tricky},
            "acked_by": 7,
        }
    )
    await store.save_incident(held, None, [], 1.0)
    await store.record_delivery("r1", Delivery(message_id=9, rendered_version=1))
    (whole,) = await store.load_many(["r1"])
    (slim,) = await store.load_many(["r1", "gone"], alerts=False)
    assert sorted(whole.incident.alerts) == ["a", "b"]
    assert slim.incident == held.model_copy(update={"alerts": {}})
    assert slim.delivery == whole.delivery


async def test_a_brief_is_picked_out_of_the_incident_as_the_incident_gives_it(
    store: Store,
) -> None:
    """`briefs`: each store's reading of the fields a summary keeps equals `Brief.of` the
    incident read whole, whatever its labels hold (the title from the alertname, a Grafana
    stand-in with its rule, or the group's labels; quotes, dots and Cyrillic in names), its
    times (microseconds, another offset), ack and message; refs no longer held are left out,
    the others come in the order asked."""
    later = datetime(2026, 3, 1, 4, 5, 6, 789, tzinfo=timezone(timedelta(hours=3)))
    kinds: list[dict[str, Any]] = [
        {},
        {"common_labels": {"alertname": "Disk full", "a.b": "1"}, "acked_at": later},
        {"common_labels": {"alertname": "DatasourceNoData", "rulename": 'Оплаты "p99"'}},
        {
            "group_labels": {"alertname": "из группы", "job": "x"},
            "common_labels": {"alertname": ""},
        },
        {"group_labels": {"job": "api", "dc": 'm"1'}, "firing_since": later},
        {"state": IncidentState.RESOLVED, "route": 'Дежурные "db"', "chat_id": 2_147_483_647},
        {"group_labels": {}, "common_labels": {"rulename": "r", "alertname": "  "}},
        {"group_labels": {"alertname": '"alerts":{"x":1},"truncated_alerts":3}'}},
    ]
    for n, update in enumerate(kinds):
        one = holding_alerts(f"r{n}", f"k{n}", "a").model_copy(update=update)
        await store.save_incident(one, None, [], 10.0)
    await store.record_delivery("r1", Delivery(message_id=2_000_000_123, rendered_version=1))
    refs = [f"r{n}" for n in reversed(range(len(kinds)))]
    whole = [Brief.of(s) for s in await store.load_many(refs)]
    assert await store.briefs(["gone", *refs]) == whole
    assert [b.title for b in reversed(whole)] == [
        "alert",
        "Disk full",
        'NoData: Оплаты "p99"',
        "из группы",
        'dc=m"1, job=api',
        "alert",
        "alert",
        '"alerts":{"x":1},"truncated_alerts":3}',
    ]
    assert await store.briefs([]) == []


async def test_summaries_parse_no_incident(store: Store, monkeypatch: Any) -> None:
    """What the digest and /stats count is read as briefs: not one incident is parsed whole
    (at 100,000 firing that had held the event loop for seconds, and its garbage for the
    collector's full passes)."""
    for n in range(5):
        await store.save_incident(incident(ref=f"r{n}", key=f"k{n}"), None, [], 10.0)
    await store.save_incident(
        incident(ref="r9", key="k9", state=IncidentState.RESOLVED), None, [], 10.0
    )
    parsed = []
    for name in ("model_validate_json", "model_validate"):
        real = getattr(Incident, name)
        monkeypatch.setattr(
            Incident, name, lambda *a, real=real, **k: parsed.append(a) or real(*a, **k)
        )
    held = await summaries(store, T0.timestamp() - 1)
    assert sorted(b.ref for b in held) == ["r0", "r1", "r2", "r3", "r4", "r9"]
    assert parsed == []


async def test_redis_cuts_the_alerts_out_before_they_travel(redis_server: Any) -> None:
    store = RedisStore(redis_server.url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    await store.open()
    try:
        many = holding_alerts("r1", "k1", *(f"fp{n}" for n in range(10)))
        await store.save_incident(many, None, [], 1.0)
        ((*_, body),) = [
            [v for k, v in zip(flat[::2], flat[1::2], strict=True) if k == "body"]
            for flat in await store._eval("without alerts", "r1", "gone")
        ]
        assert '"alerts":{},"truncated_alerts":0' in body and "fp3" not in body
    finally:
        await store.close()


async def test_the_check_back_finds_incidents_by_their_alerts_and_silences(store: Store) -> None:
    """`holding` and `shown_silenced` are the silence check-back's index: an open incident
    is found by any of its alerts, and while it shows a silence; a finished or replaced one
    is not (ref order, each once)."""
    resolved = IncidentState.RESOLVED
    await store.save_incident(holding_alerts("r1", "k1", "a", "b"), None, [], 1.0)
    await store.save_incident(holding_alerts("r2", "k2", "b", "c"), None, [], 1.0)
    shown = holding_alerts("r3", "k3", "d", silence_id="s1")
    await store.save_incident(shown, None, [], 1.0)
    assert await store.holding(["b"]) == ["r1", "r2"]
    assert await store.holding(["c", "a", "zz", "a"]) == ["r1", "r2"]
    assert await store.holding([]) == []
    assert await store.shown_silenced() == ["r3"]
    # an alert joins an open incident: found by it too
    await store.save_incident(
        holding_alerts("r1", "k1", "a", "b", "e", version=2), ("r1", 1), [], 2.0
    )
    assert await store.holding(["e"]) == ["r1"]
    # resolved under its silence: still followed; once the silence leaves, finished
    under = shown.model_copy(update={"state": resolved, "version": 2})
    await store.save_incident(under, ("r3", 1), [], 3.0)
    assert await store.shown_silenced() == ["r3"] and await store.holding(["d"]) == ["r3"]
    done = under.model_copy(update={"silence_id": None, "version": 3})
    await store.save_incident(done, ("r3", 2), [], 4.0)
    assert await store.shown_silenced() == [] and await store.holding(["d"]) == []
    # replaced by a new incident of its key: only the new one holds its alerts
    await store.save_incident(holding_alerts("r4", "k2", "f"), ("r2", 1), [], 5.0)
    assert await store.holding(["b", "c", "f"]) == ["r1", "r4"]
    # the silence shown, then taken off an open incident
    await store.save_incident(
        holding_alerts("r4", "k2", "f", silence_id="s2", version=2), ("r4", 1), [], 6.0
    )
    assert await store.shown_silenced() == ["r4"]
    await store.save_incident(holding_alerts("r4", "k2", "f", version=3), ("r4", 2), [], 7.0)
    assert await store.shown_silenced() == []


async def test_settings_are_kept_and_replaced(store: Store) -> None:
    assert await store.setting("looks") is None
    await store.put_setting("looks", "a")
    await store.put_setting("looks", "b")
    assert await store.setting("looks") == "b"


async def test_an_sqlite_database_of_an_older_version_gets_its_alerts_indexed(
    tmp_path: Path,
) -> None:
    """A state file made before the check-back's index existed, or with the `alert_refs`
    table a later version kept: its open incidents are found by their alerts and silences
    after the upgrade; finished and replaced ones are not; the old table goes (what it says
    is not read: the index is rebuilt from the incidents)."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)  # without `incidents.silenced` (added on open)
    db.executescript(
        "CREATE TABLE alert_refs (fingerprint TEXT NOT NULL, ref TEXT NOT NULL, "
        "PRIMARY KEY (fingerprint, ref)) WITHOUT ROWID; "
        "CREATE INDEX alert_refs_by_ref ON alert_refs (ref); "
        "INSERT INTO alert_refs VALUES ('zz', 'r2');"
    )
    rows = [
        (holding_alerts("r1", "k1", "a", silence_id="s1"), None),
        (holding_alerts("r2", "k2", "b"), 1.0),  # finished
        (holding_alerts("r3", "k3", "c"), None),  # replaced by r4
        (holding_alerts("r4", "k3", "d"), None),
    ]
    for old, finished_at in rows:
        db.execute(
            "INSERT INTO incidents (ref, key, version, body, finished_at) VALUES (?, ?, 1, ?, ?)",
            (old.ref, old.key, old.model_dump_json(), finished_at),
        )
    db.executemany(
        "INSERT INTO current_incidents (key, ref) VALUES (?, ?)",
        [("k1", "r1"), ("k2", "r2"), ("k3", "r4")],
    )
    db.commit()
    db.close()
    store = SQLiteStore(str(path))
    await store.open()
    try:
        assert await store.holding(["a", "b", "c", "d", "zz"]) == ["r1", "r4"]
        assert await store.shown_silenced() == ["r1"]
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert not db.execute("SELECT 1 FROM sqlite_master WHERE name LIKE 'alert_refs%'").fetchall()
    db.close()


async def test_sqlite_rebuilds_its_alert_index_at_the_start(tmp_path: Path) -> None:
    """The SQLite store keeps which incidents hold each alert in memory: a second start finds
    the same open incidents by their alerts as the first knew, not the finished or replaced."""
    path = tmp_path / "index.db"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        await store.save_incident(holding_alerts("r1", "k1", "a", "b"), None, [], 1.0)
        await store.save_incident(holding_alerts("r2", "k2", "b", "c"), None, [], 1.0)
        await store.save_incident(holding_alerts("r3", "k3", "d"), None, [], 1.0)
        await store.save_incident(holding_alerts("r4", "k3", "e"), ("r3", 1), [], 2.0)
        ended = holding_alerts("r2", "k2", "b", "c", state=IncidentState.RESOLVED, version=2)
        await store.save_incident(ended, ("r2", 1), [], 3.0)
        before = await store.holding(["a", "b", "c", "d", "e"])
    finally:
        await store.close()
    assert before == ["r1", "r4"]
    again = SQLiteStore(str(path))
    await again.open()
    try:
        assert await again.holding(["a", "b", "c", "d", "e"]) == before
        assert await again.holding(["c", "d"]) == []
    finally:
        await again.close()


async def test_an_sqlite_write_undone_leaves_the_alert_index_as_it_was(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The index changes only with a commit: a save that fails after its alerts were noted
    (here the outbox's insert), alone or among others in one transaction, is undone and its
    alerts are not found; a finish that fails does not lose the open incident's alerts."""
    store = SQLiteStore(str(tmp_path / "undone.db"))
    await store.open()
    real = sqlite_store._add_items
    failing_refs = {"bad1", "bad2", "bad3"}

    def failing(db: sqlite3.Connection, ref: str, *rest: Any) -> None:
        if ref in failing_refs:
            raise sqlite3.OperationalError("disk I/O error")
        real(db, ref, *rest)

    monkeypatch.setattr(sqlite_store, "_add_items", failing)
    try:
        await store.save_incident(holding_alerts("r1", "k1", "a"), None, [], 1.0)
        with pytest.raises(StoreError):
            await store.save_incident(holding_alerts("bad1", "k2", "b"), None, [], 1.0)
        saves = [  # queued together: each after the first in a savepoint of its own
            store.save_incident(holding_alerts(ref, f"k-{ref}", f"fp-{ref}"), None, [], 1.0)
            for ref in ("r2", "bad2", "r3", "bad3")
        ]
        outcomes = await asyncio.gather(*saves, return_exceptions=True)
        assert [type(o).__name__ for o in outcomes] == [
            "NoneType",
            "StoreError",
            "NoneType",
            "StoreError",
        ]
        ended = holding_alerts("r1", "k1", "a", state=IncidentState.RESOLVED, version=2)
        failing_refs.add("r1")
        with pytest.raises(StoreError):
            await store.save_incident(ended, ("r1", 1), [], 2.0)
        wanted = ["a", "b", "fp-r2", "fp-bad2", "fp-r3", "fp-bad3"]
        assert await store.holding(wanted) == ["r1", "r2", "r3"]
    finally:
        await store.close()


async def test_an_sqlite_database_with_look_times_in_its_incidents_keeps_them(
    tmp_path: Path,
) -> None:
    """A state file from when the look times were a column of `incidents`: an open incident
    keeps its time in `looks`; one looked at until it changes, a finished and a replaced one
    get none; the old column's index goes; a second start moves nothing again."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.split("-- when the scheduler looks next")[0])
    db.execute("ALTER TABLE incidents ADD COLUMN look_at REAL")
    db.execute("CREATE INDEX incidents_by_look ON incidents (look_at) WHERE look_at IS NOT NULL")
    rows = [  # (ref, key, finished_at, look_at)
        ("r1", "k1", None, 50.0),
        ("r2", "k2", None, None),  # looked at: not until it changes
        ("r3", "k3", 1.0, 60.0),  # finished
        ("r4", "k4", None, 70.0),  # replaced by r5
        ("r5", "k4", None, 80.0),
    ]
    for ref, key, finished_at, look_at in rows:
        db.execute(
            "INSERT INTO incidents (ref, key, version, body, finished_at, look_at) "
            "VALUES (?, ?, 1, ?, ?, ?)",
            (ref, key, incident(ref, key).model_dump_json(), finished_at, look_at),
        )
    db.executemany(
        "INSERT INTO current_incidents (key, ref) VALUES (?, ?)",
        [("k1", "r1"), ("k2", "r2"), ("k3", "r3"), ("k4", "r5")],
    )
    db.commit()
    db.close()
    for start in range(2):
        store = SQLiteStore(str(path))
        await store.open()
        try:
            assert await store.looks_due(1000.0, 10) == ["r1", "r5"]
            if start == 0:  # moved once: a look recorded now is not undone by the next start
                await store.look_again([Look("r1", 1, 500.0)])
                assert await store.looks_due(100.0, 10) == ["r5"]
                await store.look_again([Look("r1", 1, 40.0)])
        finally:
            await store.close()
    db = sqlite3.connect(path)
    indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    db.close()
    assert "incidents_by_look" not in indexes and "looks_by_time" in indexes


async def test_redis_data_of_an_older_version_gets_its_alerts_indexed(
    redis_server: Any,
) -> None:
    """Data written before the index existed (no `indexed` mark): the first start indexes
    the open incidents."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    await store.save_incident(holding_alerts("r1", "k1", "a", silence_id="s1"), None, [], 1.0)
    await store.save_incident(holding_alerts("r2", "k2", "b"), None, [], 1.0)
    raw = store._redis
    for key in await raw.keys(f"{prefix}fp*") + await raw.keys(f"{prefix}silenced"):
        await raw.delete(key)
    await raw.delete(f"{prefix}indexed")
    await store.close()
    again = RedisStore(redis_server.url, prefix=prefix)
    await again.open()
    try:
        assert await again.holding(["a", "b"]) == ["r1", "r2"]
        assert await again.shown_silenced() == ["r1"]
    finally:
        await again.close()


async def test_an_sqlite_database_from_before_the_order_of_change_gets_it(
    tmp_path: Path,
) -> None:
    """A state file made before `changed_at` and `firing`: every incident held (resolved and
    replaced ones too) has its place after the upgrade, read from its body."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    old = SCHEMA.split("    -- its place in the order of change")[0].rstrip().rstrip(",")
    db.executescript(old + "\n);\n" + SCHEMA.split("    firing INTEGER\n);")[1])
    assert "firing" not in {r[1] for r in db.execute("PRAGMA table_info(incidents)")}
    later = T0 + timedelta(seconds=1.25)
    for held in (
        incident("r1", "k1"),
        incident("r2", "k2", state=IncidentState.RESOLVED, changed_at=later),
        incident("r3", "k1", changed_at=later),
    ):
        db.execute(
            "INSERT INTO incidents (ref, key, version, body) VALUES (?, ?, 1, ?)",
            (held.ref, held.key, held.model_dump_json()),
        )
    db.commit()
    db.close()
    store = SQLiteStore(str(path))
    await store.open()
    try:
        firing = [Place(later.timestamp(), "r3"), Place(T0.timestamp(), "r1")]
        assert await store.changed(True, float("-inf"), None, 10) == firing
        assert await store.changed(False, float("-inf"), None, 10) == [
            Place(later.timestamp(), "r2")
        ]
    finally:
        await store.close()
    again = SQLiteStore(str(path))  # placed once: a second start finds nothing to do
    await again.open()
    try:
        assert len(await again.changed(True, float("-inf"), None, 10)) == 2
    finally:
        await again.close()


async def test_redis_data_from_before_the_order_of_change_gets_it(redis_server: Any) -> None:
    """Data whose index had no order of change (`indexed` = 2): the first start places every
    incident held, resolved ones too."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    await store.save_incident(incident("r1", "k1"), None, [], 1.0)
    resolved = incident("r2", "k2", state=IncidentState.RESOLVED)
    await store.save_incident(resolved, None, [], 1.0)
    raw = store._redis
    await raw.delete(f"{prefix}changed:firing", f"{prefix}changed:resolved")
    await raw.set(f"{prefix}indexed", "2")
    assert await store.changed(True, float("-inf"), None, 10) == []
    await store.close()
    again = RedisStore(redis_server.url, prefix=prefix)
    await again.open()
    try:
        assert await again.changed(True, float("-inf"), None, 10) == [Place(T0.timestamp(), "r1")]
        assert await again.changed(False, float("-inf"), None, 10) == [Place(T0.timestamp(), "r2")]
    finally:
        await again.close()


async def test_the_periodic_passes_read_through_their_indexes(tmp_path: Path) -> None:
    """`looks_due`, `look_again`, `shown_silenced`, `open_refs_on` and `changed` cost what they
    touch, not what the store holds (`holding` reads the index in memory): SQLite must search
    their indexes, never walk every incident (it prefers a walk in key order to sorting a few
    rows: an ORDER BY had made the check-back's read take 0.6 s at 100,000 open incidents)."""
    path = tmp_path / "plans.db"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        await store.save_incident(holding_alerts("r1", "k1", "a", silence_id="s1"), None, [], 1.0)
        await store.save_incident(holding_alerts("r2", "k2", "b"), None, [], 1.0)
        ran: list[str] = []
        assert store._db is not None
        store._db.set_trace_callback(ran.append)
        await store.looks_due(10.0, 5)
        await store.look_again([Look("r1", 1, 500.0), Look("r2", 1, None)])
        await store.shown_silenced()
        await store.open_refs_on(["default", "db"])
        await store.changed(True, 0.0, Place(5.0, "r9"), 10)
        await store.changed(False, 0.0, None, 10)
        store._db.set_trace_callback(None)
    finally:
        await store.close()
    reads = [sql for sql in ran if sql.lstrip().upper().startswith(("SELECT", "INSERT", "DELETE"))]
    assert len(reads) == 8, ran
    db = sqlite3.connect(path)
    for sql in reads:
        plan = " / ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "SCAN" not in plan, (sql, plan)
        if "i.route" in sql:  # not every open incident (SQLite's other choice)
            assert "USING INDEX incidents_by_route" in plan, (sql, plan)
        if "changed_at" in sql:  # walked in its order: no sorting of what it found
            assert "USING COVERING INDEX incidents_by_change" in plan, (sql, plan)
            assert "TEMP B-TREE" not in plan, (sql, plan)
    db.close()


async def test_pruning_costs_what_it_deletes(tmp_path: Path) -> None:
    """`prune` finds what to delete through the finished incidents' index: it walks neither
    every incident's key (it had: 47 ms at 100,000 open) nor the outbox (a storm's backlog);
    an incident finished long ago goes with its key, timeline and all, unless something is
    still queued for it or a newer incident holds its key."""
    path = tmp_path / "prune.db"
    store = SQLiteStore(str(path))
    await store.open()
    resolved = IncidentState.RESOLVED
    try:
        await store.save_incident(incident("r1", "k1", state=resolved), None, [], 1.0)
        queued = [NewOutboxItem("edit", "{}")]
        await store.save_incident(incident("r2", "k2", state=resolved), None, queued, 1.0)
        await store.save_incident(incident("r3", "k3", state=resolved), None, [], 1.0)
        await store.save_incident(incident("r4", "k3"), ("r3", 1), [], 2.0)  # k3 is r4's now
        await store.save_incident(incident("r5", "k5"), None, [], 1.0)
        ran: list[str] = []
        assert store._db is not None
        store._db.set_trace_callback(ran.append)
        assert await store.prune(T0.timestamp() + 1, 0.0, 0.0) == 2  # r1, r3
        store._db.set_trace_callback(None)
        assert await store.load_incident("k1") is None
        assert await store.load_by_ref("r2") is not None
        stored = await store.load_incident("k3")
        assert stored is not None and stored.incident.ref == "r4"
        assert await store.open_refs() == ["r4", "r5"]
    finally:
        await store.close()
    deletes = [sql for sql in ran if "incidents" in sql and sql.lstrip().startswith("DELETE")]
    assert len(deletes) == 4, ran
    db = sqlite3.connect(path)
    for sql in deletes:
        plan = " / ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "SCAN" not in plan, (sql, plan)
    db.close()


async def test_the_gauges_read_counts_not_the_backlog(tmp_path: Path) -> None:
    """`outbox_stats` runs at every scrape: it reads counts kept by the writes themselves
    (triggers) and the first item queued, never walks the outbox; the counts stay what a
    COUNT(*) says through queueing, coalescing, delivery, retries, dead letters, their replay
    and pruning, and a database from before them is counted once when opened."""
    path = tmp_path / "gauges.db"
    store = SQLiteStore(str(path))
    await store.open()

    def counted() -> tuple[int, int]:
        db = sqlite3.connect(path)
        found = db.execute(
            "SELECT (SELECT COUNT(*) FROM outbox), (SELECT COUNT(*) FROM dead_letters)"
        ).fetchone()
        db.close()
        return found

    try:
        items = [NewOutboxItem("create"), NewOutboxItem("edit"), NewOutboxItem("edit")]
        await store.save_incident(incident(), None, items, 1.0)
        await store.enqueue("r1", [NewOutboxItem("dm", "a", 1), NewOutboxItem("dm", "b", 2)], 2.0)
        await store.save_incident(incident("r2", "k2"), None, [NewOutboxItem("create")], 3.0)
        assert (await store.outbox_stats(10.0))[::2] == (*counted(),)
        (first, second) = await store.due_items(10.0, 10)
        await store.finish_item(first.id)
        await store.retry_item(second.id, 20.0, "HTTP 503")
        (third,) = await store.due_items(10.0, 10)
        await store.dead_letter(third, "HTTP 422", 11.0)
        stats = await store.outbox_stats(10.0)
        assert (stats.depth, stats.dead_letters) == counted() and stats.dead_letters == 1
        assert await store.replay_dead_letters(12.0) == 1
        assert (await store.outbox_stats(12.0))[::2] == counted() == (stats.depth + 1, 0)
        queued = stats.depth + 1
        ran: list[str] = []
        assert store._db is not None
        store._db.set_trace_callback(ran.append)
        await store.outbox_stats(12.0)
        store._db.set_trace_callback(None)
    finally:
        await store.close()
    db = sqlite3.connect(path)
    (read,) = [sql for sql in ran if sql.startswith("SELECT")]
    plan = " / ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {read}"))
    assert "SCAN" not in plan.replace("SCAN CONSTANT ROW", ""), plan
    db.executescript(  # as a version without the counts left it
        "DROP TABLE counts; DROP TRIGGER outbox_added; DROP TRIGGER outbox_removed; "
        "DROP TRIGGER dead_letter_added; DROP TRIGGER dead_letter_removed;"
    )
    db.close()
    store = SQLiteStore(str(path))
    await store.open()
    try:
        assert (await store.outbox_stats(12.0))[::2] == (queued, 0)
        (item, _) = await store.due_items(30.0, 10)
        await store.finish_item(item.id)
        assert (await store.outbox_stats(12.0))[::2] == (queued - 1, 0) == counted()
    finally:
        await store.close()


async def test_sqlite_writes_leave_the_log_to_the_checkpoint(tmp_path: Path) -> None:
    """A write does not move the write-ahead log into the database (SQLite's default does it
    in the commit that crosses 1,000 pages: an fsync, ~20 ms of intake p99 here); `checkpoint`
    does, from its own connection and thread."""
    path = tmp_path / "wal.db"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        fingerprints = [f"{n:016x}" for n in range(40)]
        for n in range(300):  # about 4,300 pages of log
            saved = holding_alerts(f"r{n}", f"k{n}", *fingerprints)
            await store.save_incident(saved, None, [], 1.0)
        wal = path.with_name("wal.db-wal")
        assert wal.stat().st_size > 1_500 * 4096  # no write moved it past 1,000 pages
        assert path.stat().st_size < 100_000  # the database file: the empty schema
        await store.checkpoint()
        assert path.stat().st_size > 1_000_000  # the incidents are in the file now
        assert (await store.load_by_ref("r299")) is not None
        await store.checkpoint()  # again, with nothing new: nothing to do, no error
    finally:
        await store.close()


async def test_the_log_starts_over_under_a_steady_stream_of_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite starts its log over only once all of it is in the database; when writes land
    during every checkpoint (a storm), the checkpoint alone never gets there and the log grew
    until an intake write's commit moved it (8-27 ms every 0.65 s at 500 new groups/s). Once
    the log is long, the writer moves the little left between two writes."""
    monkeypatch.setattr(sqlite_store, "WAL_RESTART_PAGES", 100)
    path = tmp_path / "storm.db"
    store = SQLiteStore(str(path))
    await store.open()
    # a reader whose snapshot holds the checkpoint's pass short of the log's end: what the
    # writes landing while the pass runs do
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    checkpoint = store._checkpoint

    def pass_with_writes_landing_meanwhile() -> int:
        pages = checkpoint()
        if reader.in_transaction:
            reader.execute("COMMIT")
        return pages

    monkeypatch.setattr(store, "_checkpoint", pass_with_writes_landing_meanwhile)
    wal = path.with_name("storm.db-wal")
    fingerprints = [f"{n:016x}" for n in range(20)]
    sizes = []
    try:
        for round_ in range(20):
            for n in range(5):  # a few hundred pages of log between checkpoints
                ref = f"r{round_}-{n}"
                await store.save_incident(holding_alerts(ref, ref, *fingerprints), None, [], 1.0)
                if n == 0:
                    reader.execute("BEGIN")
                    reader.execute("SELECT count(*) FROM incidents").fetchone()
            await store.checkpoint()
            sizes.append(wal.stat().st_size)  # the log's high-water mark: it never shrinks
        # the log started over each round (it grew by a round's writes each time before)
        assert sizes[-1] < 2 * sizes[0], sizes
        assert (await store.load_by_ref("r19-4")) is not None
    finally:
        reader.close()
        await store.close()


async def test_a_checkpoint_writes_the_database_file_to_disk_even_short_of_the_logs_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite syncs the database file only after a pass that reached the log's end; in a
    storm none did, and the writer's pass that started the log over synced all they had
    moved (21-25 ms at 100,000 incidents). Each pass now syncs what it moved, on its own
    thread."""
    path = tmp_path / "flush.db"
    store = SQLiteStore(str(path))
    await store.open()
    synced: list[int] = []  # inodes
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    reader = sqlite3.connect(path, isolation_level=None)
    fingerprints = [f"{n:016x}" for n in range(20)]
    try:
        await store.save_incident(holding_alerts("r0", "k0", *fingerprints), None, [], 1.0)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM incidents").fetchone()  # the pass stops here
        for n in range(1, 5):
            await store.save_incident(
                holding_alerts(f"r{n}", f"k{n}", *fingerprints), None, [], 1.0
            )
        await store.checkpoint()
        assert path.stat().st_ino in synced
    finally:
        reader.close()
        await store.close()


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own nice value is Linux's")
async def test_the_checkpoint_asks_for_less_cpu_than_the_writer_and_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moving the log into the database (23-39 ms a pass at 100,000 incidents, four times a
    second in a storm) took a core from the event loop and the writer on 2 cores; its thread
    now runs at a higher nice value, theirs stay as they were."""
    path = tmp_path / "nice.db"
    store = SQLiteStore(str(path))
    await store.open()
    niceness: list[int] = []  # of the thread that syncs the file: the checkpoint's
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    try:
        await store.save_incident(holding_alerts("r0", "k0", "f0"), None, [], 1.0)
        await store.checkpoint()
        await store.checkpoint()
        writer = next(t for t in threading.enumerate() if t.name == "sqlite-store")
        assert writer.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, writer.native_id) == here
        assert len(niceness) == 2 and all(n > here for n in niceness), (here, niceness)
    finally:
        await store.close()


async def test_a_look_writes_a_few_bytes_not_the_incident(tmp_path: Path) -> None:
    """The scheduler records its looks beside the incidents, not in their rows: a look at
    each of 300 incidents (a first tick under new rules) writes a few pages of log, not one
    page per incident (at 10,000 open that had filled the log to its checkpoint, which the
    next notification's commit ran)."""
    path = tmp_path / "looks.db"
    store = SQLiteStore(str(path))
    await store.open()
    try:
        fingerprints = [f"{n:016x}" for n in range(40)]  # a body of several pages
        for n in range(300):
            await store.save_incident(
                holding_alerts(f"r{n}", f"k{n}", *fingerprints), None, [], 1.0
            )
        await store.checkpoint()  # the log starts again at its next write
        await store.look_again([Look(f"r{n}", 1, 500.0 + n) for n in range(300)])
        db = sqlite3.connect(path)
        _, written, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        db.close()
        assert 0 < written < 30, written
        assert await store.looks_due(600.0, 1000) == [f"r{n}" for n in range(100)]
    finally:
        await store.close()


async def test_a_failing_checkpoint_is_logged_and_tried_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop outlives the store's errors and keeps its pulse (/healthz) beating."""
    monkeypatch.setattr(housekeeping, "CHECKPOINT_EVERY_SECONDS", 0.01)
    calls: list[int] = []

    class Failing(MemoryStore):
        async def checkpoint(self) -> None:
            calls.append(1)
            if len(calls) <= 3:
                raise StoreError("disk I/O error")

    pulse = Pulse(stall_after=5.0)
    loop = asyncio.create_task(housekeeping.checkpoint_forever(Failing(), pulse))
    while len(calls) < 6:
        await asyncio.sleep(0.01)
    loop.cancel()
    assert pulse.stalled_for() == 0
    warned = [r for r in caplog.records if "checkpoint failed" in r.getMessage()]
    assert len(warned) == 1  # once a minute, not every second


async def test_a_burst_of_concurrent_calls_is_served(store: Store) -> None:
    """Three hundred calls at once (a storm's intake, outbox and pace together) are all
    served: a store may make some wait, never refuse them (Redis: more than its connections)."""
    await asyncio.gather(*(store.put_setting(f"s{n}", str(n)) for n in range(300)))
    assert await asyncio.gather(*(store.setting(f"s{n}") for n in range(300))) == [
        str(n) for n in range(300)
    ]
