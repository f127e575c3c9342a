"""The SQLite store's thread serves waiting webhooks before queued background work, but never
starves it; what queued while it was busy runs together, in one transaction."""

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import StoreError
from bridge.store import sqlite as sqlite_store
from bridge.store.sqlite import SQLiteStore
from bridge.store.worker import (
    BACKGROUND,
    BACKGROUND_WAIT,
    URGENT,
    Outcome,
    PriorityWorker,
    one_by_one,
)
from bridge.timeline import Event
from tests.test_store_contract import holding_alerts


async def test_urgent_calls_overtake_queued_background_work() -> None:
    worker = PriorityWorker("test-store", background_wait=60)
    gate = threading.Event()
    order: list[str] = []

    def hold() -> None:
        gate.wait(5)

    def record(name: str) -> None:
        order.append(name)

    busy = asyncio.ensure_future(worker.run(hold, BACKGROUND))
    await asyncio.sleep(0.05)  # the worker is now inside `hold`
    queued = [
        asyncio.ensure_future(worker.run(lambda n=n: record(n), BACKGROUND))
        for n in ("outbox-1", "outbox-2")
    ]
    await asyncio.sleep(0.01)
    urgent = asyncio.ensure_future(worker.run(lambda: record("webhook"), URGENT))
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(busy, *queued, urgent)
    assert order == ["webhook", "outbox-1", "outbox-2"]
    worker.stop()


async def test_background_work_gets_a_turn_in_a_stream_of_urgent_calls() -> None:
    """A storm's webhooks keep the thread busy: a background call that has waited
    BACKGROUND_WAIT goes next, so messages reach the chat during the storm, not after it."""
    worker = PriorityWorker("test-store")
    gate = threading.Event()
    order: list[str] = []

    def hook() -> None:
        time.sleep(BACKGROUND_WAIT / 4)
        order.append("hook")

    busy = asyncio.ensure_future(worker.run(lambda: gate.wait(5), BACKGROUND))
    await asyncio.sleep(0.05)
    calls = [asyncio.ensure_future(worker.run(lambda: order.append("outbox"), BACKGROUND))]
    await asyncio.sleep(BACKGROUND_WAIT * 2)
    calls += [asyncio.ensure_future(worker.run(hook, URGENT)) for _ in range(40)]
    await asyncio.sleep(0.01)
    gate.set()  # the outbox call has waited long enough already: it goes first
    await asyncio.gather(busy, *calls)
    assert order.index("outbox") == 0
    # queued behind a stream of webhooks, another gets its turn after about BACKGROUND_WAIT
    calls = [asyncio.ensure_future(worker.run(hook, URGENT)) for _ in range(40)]
    calls.append(asyncio.ensure_future(worker.run(lambda: order.append("outbox 2"), BACKGROUND)))
    await asyncio.gather(*calls)
    assert 41 + 2 <= order.index("outbox 2") <= 41 + 10, order.index("outbox 2")
    worker.stop()


async def test_errors_reach_the_caller() -> None:
    worker = PriorityWorker("test-store")

    def fail() -> None:
        raise ValueError("disk on fire")

    with pytest.raises(ValueError, match="disk on fire"):
        await worker.run(fail, URGENT)
    assert await worker.run(lambda: 42) == 42
    worker.stop()


async def test_calls_queued_together_run_as_one_group_in_order() -> None:
    """What queued while the thread was busy runs together (one `together` call), in priority
    order, up to GROUP_MAX calls; a call that must run alone never joins a group."""
    groups: list[list[str]] = []

    def together(calls: Iterator[Callable[[], Any]]) -> list[Outcome]:
        outcomes = one_by_one(calls)
        groups.append([str(result) for result, _ in outcomes])
        return outcomes

    worker = PriorityWorker("test-store", background_wait=60, together=together, group_max=4)
    gate = threading.Event()
    busy = asyncio.ensure_future(worker.run(lambda: gate.wait(5) and "hold", BACKGROUND))
    await asyncio.sleep(0.05)
    names = ["b1", "u1", "u2", "alone", "u3", "u4", "u5", "u6"]
    calls = []
    for name in names:
        priority = BACKGROUND if name.startswith("b") else URGENT
        calls.append(
            asyncio.ensure_future(
                worker.run(lambda n=name: n, priority, alone=name == "alone")  # type: ignore[misc]
            )
        )
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    gate.set()
    assert await asyncio.gather(busy, *calls) == ["hold", *names]
    # urgent calls first, "alone" by itself (not through `together`), at most 4 at a time
    assert groups == [["hold", "u1", "u2"], ["u3", "u4", "u5", "u6"], ["b1"]]
    worker.stop()


async def test_a_failing_group_fails_each_of_its_calls_and_the_thread_lives_on() -> None:
    def together(calls: Iterator[Callable[[], Any]]) -> list[Outcome]:
        ran = [call() for call in calls]
        raise OSError(f"commit of {len(ran)} failed")

    worker = PriorityWorker("test-store", together=together)
    gate = threading.Event()
    held = asyncio.ensure_future(worker.run(lambda: gate.wait(5), URGENT))
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(worker.run(lambda: 1, URGENT)) for _ in range(3)]
    await asyncio.sleep(0.01)
    gate.set()
    results = await asyncio.gather(held, *queued, return_exceptions=True)
    assert [str(r) for r in results] == ["commit of 4 failed"] * 4
    assert await worker.run(lambda: 42, alone=True) == 42
    worker.stop()


async def test_a_call_nobody_waits_for_any_more_is_skipped() -> None:
    worker = PriorityWorker("test-store")
    gate = threading.Event()
    ran: list[str] = []
    held = asyncio.ensure_future(worker.run(lambda: gate.wait(5), URGENT))
    await asyncio.sleep(0.05)
    gone = asyncio.ensure_future(worker.run(lambda: ran.append("gone"), URGENT))
    kept = asyncio.ensure_future(worker.run(lambda: ran.append("kept"), URGENT))
    await asyncio.sleep(0.01)
    gone.cancel()
    gate.set()
    await asyncio.gather(held, kept)
    assert ran == ["kept"]
    worker.stop()


async def test_sqlite_commits_a_group_once_and_undoes_a_failing_call_alone(
    tmp_path: Path,
) -> None:
    """Writes queued together share one commit; one that raises after writing is undone by
    itself (its caller gets the error, the others' writes stay); a call SQLite's transaction
    ends under fails the group so far, with nothing of it kept (the calls after it run next)."""
    store = SQLiteStore(str(tmp_path / "g.db"))
    await store.open()
    assert store._db is not None
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    gate = threading.Event()

    def insert(name: str, fail: str = "") -> Callable[[sqlite3.Connection], None]:
        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO settings (name, value) VALUES (?, ?)", (name, "v"))
            if fail == "raise":
                raise ValueError(f"{name} changed its mind")
            if fail == "end":
                db.execute("ROLLBACK")  # as SQLite does itself on a full disk
                raise sqlite3.OperationalError("database or disk is full")

        return write

    async def group(*writes: Callable[[sqlite3.Connection], None]) -> list[Any]:
        held = asyncio.ensure_future(store._run(lambda db: gate.wait(5), URGENT))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(store._run(w, URGENT)) for w in writes]
        await asyncio.sleep(0.01)
        gate.set()
        results = await asyncio.gather(held, *queued, return_exceptions=True)
        gate.clear()
        return results[1:]

    statements.clear()
    results = await group(insert("a"), insert("b", "raise"), insert("c"))
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError)
    assert statements.count("COMMIT") == 1, statements
    assert {await store.setting(n) for n in "abc"} == {"v", None}
    assert await store.setting("b") is None

    results = await group(insert("d"), insert("e", "end"), insert("f"))
    assert [type(r) for r in results] == [StoreError, StoreError, type(None)], results
    assert [await store.setting(n) for n in "def"] == [None, None, "v"]
    await store.put_setting("g", "after")  # the thread and its connection still serve
    assert await store.setting("g") == "after"
    await store.close()


def sqlite_temp_files() -> list[str]:
    """The files SQLite made for scratch space that this process holds open (SQLite deletes
    them at once; the descriptor stays until it is done with them)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if "etilqs_" in target:
                found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux's /proc")
async def test_writes_in_a_savepoint_make_no_files(tmp_path: Path, monkeypatch: Any) -> None:
    """A save queued behind another runs in a savepoint, whose journal holds the pages it
    changes: past 64 KiB SQLite put it in a file it made and deleted (~70 a second in a storm,
    each a filesystem change that can wait on the checkpoint's fdatasync). Kept in memory."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    await store.open()
    assert store._db is not None
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    held_open: list[str] = []
    real = sqlite_store._note

    def note(db: sqlite3.Connection, ref: str, events: Any) -> None:  # a save's last step
        real(db, ref, events)
        held_open.extend(sqlite_temp_files())

    monkeypatch.setattr(sqlite_store, "_note", note)
    gate = threading.Event()
    fingerprints = [f"fp-{i}" for i in range(200)]
    try:
        for n in range(20):
            await store.save_incident(holding_alerts(f"r{n}", f"k{n}", *fingerprints), None, [], 1)
        held = asyncio.ensure_future(store._run(lambda db: gate.wait(5), URGENT))
        await asyncio.sleep(0.05)
        saves = [  # each changes the pages of one whose body filled several
            asyncio.ensure_future(
                store.save_incident(
                    holding_alerts(f"r{n}", f"k{n}", *fingerprints[:150], version=2),
                    (f"r{n}", 1),
                    [],
                    2.0,
                )
            )
            for n in range(20)
        ]
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(held, *saves)
        assert any(s.startswith("SAVEPOINT") for s in statements)
        assert held_open == []
    finally:
        await store.close()


async def test_a_saves_events_go_in_one_statement(tmp_path: Path) -> None:
    """Each statement lets go of the GIL while SQLite runs it and waits to get it back, behind
    a busy event loop: a new incident's 11 events inserted one by one made its save several
    times slower in a storm. One statement per 400 events (SQLite's old limit of 999
    parameters), and they read back in order."""
    store = SQLiteStore(str(tmp_path / "t.db"))
    await store.open()
    assert store._db is not None
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    try:
        events = [Event(float(n), "fired", {"alert": f"a{n}"}) for n in range(901)]
        await store.save_incident(holding_alerts("r1", "k1", "a"), None, [], 1.0, timeline=events)
        inserts = [s for s in statements if s.startswith("INSERT INTO timeline")]
        assert len(inserts) == 3  # 400 + 400 + 101
        read, dropped = await store.timeline("r1")
        assert read == events and dropped == 0
    finally:
        await store.close()
