"""The default store: one SQLite file (WAL), for a single replica that survives restarts.

sqlite3 calls block, so they all run on one dedicated thread; that also serialises every
transaction, which is what makes compare-and-set on incidents trivially safe. WAL with
`synchronous=NORMAL` keeps every committed transaction through a crash of the process
(`kill -9`); only a power loss of the node may lose the last few.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

from bridge.briefs import BRIEF_PATHS, Brief
from bridge.errors import ConflictError, DuplicateEvent, StoreError
from bridge.model import LOOK_FIELDS, Delivery, Incident, IncidentState, LookFacts
from bridge.store.alert_index import AlertIndex
from bridge.store.base import (
    PRESS,
    Backlog,
    DeadLetter,
    Look,
    NewOutboxItem,
    OutboxItem,
    Place,
    Stored,
    SwapRecord,
    coalesced,
    open_pages,
    shows_silence,
    watched_alerts,
)
from bridge.store.worker import BACKGROUND, URGENT, Outcome, PriorityWorker
from bridge.timeline import MAX_EVENTS, Event

T = TypeVar("T")

# what `SQLiteStore._stored` reads, from `incidents i`
IN_LIST_MAX = 500  # refs read by one statement
# pages of write-ahead log past which `checkpoint` has the writer start the log over (see
# `_restart_log`; about 40 MB, about once a second at 500 new groups/s): each time a few ms
# on the writer, so not at every checkpoint
WAL_RESTART_PAGES = 10_000
# pages past which a write moves the log into the database itself (SQLite's autocheckpoint):
# only if `checkpoint` stops (about 120 MB)
WAL_PAGES_AT_MOST = 30_000
# how much less CPU the checkpoint's thread asks for than the writer and the event loop (a
# nice value, Linux): moving the log is never what a webhook waits for
CHECKPOINT_NICENESS = 10

_STORED = (
    "i.body, i.message_id, i.thread_id, i.rendered_version, i.create_attempted, i.create_digest"
)

# incident `i`'s body without its alerts
_NO_ALERTS = "json_set(i.body, '$.alerts', json_object())"
# incident `i` is still its key's current one (not replaced)
_CURRENT = "i.ref = (SELECT c.ref FROM current_incidents c WHERE c.key = i.key)"
# `look_again` holds each look to its version of an open incident still followed for its key
_LOOKED_AT = f"i.ref = ? AND i.version = ? AND i.finished_at IS NULL AND {_CURRENT}"

# json_extract's paths to the fields `look_facts` reads (LOOK_FIELDS), in their order
_LOOK_PATHS = ", ".join(f"'$.{name}'" for name in LOOK_FIELDS)
_BRIEF_PATHS = ", ".join(f"'$.{'.'.join(path)}'" for path in BRIEF_PATHS)

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    ref TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    finished_at REAL,  -- set while resolved: when it was last changed (for pruning)
    message_id INTEGER,
    thread_id INTEGER,
    rendered_version INTEGER NOT NULL DEFAULT 0,
    create_attempted INTEGER NOT NULL DEFAULT 0,
    -- Incident.route (NULL: saved by a version that did not keep it)
    route TEXT,
    create_digest TEXT,
    -- its place in the order of change (`Store.changed`): Incident.changed_at in seconds, and
    -- 1 while firing (0: resolved)
    changed_at REAL,
    firing INTEGER
);
CREATE TABLE IF NOT EXISTS current_incidents (
    key TEXT PRIMARY KEY,
    ref TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ref TEXT NOT NULL,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL,
    last_error TEXT,
    actor INTEGER,
    priority INTEGER NOT NULL DEFAULT 100,
    -- when the attempt under way began (`Store.begin_item`); NULL once settled
    begun_at REAL
);
CREATE TABLE IF NOT EXISTS timeline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ref TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timeline_by_incident ON timeline (ref, id);
CREATE TABLE IF NOT EXISTS timeline_dropped (
    ref TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS calendars (
    schedule TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS swaps (
    schedule TEXT PRIMARY KEY,
    who TEXT NOT NULL,
    start REAL NOT NULL,
    until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS once (
    key TEXT PRIMARY KEY,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_by_message ON incidents (message_id);
CREATE TABLE IF NOT EXISTS processed_events (
    event_id TEXT PRIMARY KEY,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_incident ON outbox (ref, id);
CREATE INDEX IF NOT EXISTS outbox_by_kind ON outbox (kind, id);
CREATE INDEX IF NOT EXISTS incidents_finished ON incidents (finished_at);
-- when the scheduler looks next at each open incident (none: not until it changes); a table of
-- its own, not a column of `incidents`: a look then writes a few bytes, not a page of the
-- incident's row (a pass over 10,000 had filled the write-ahead log to its checkpoint)
CREATE TABLE IF NOT EXISTS looks (
    ref TEXT PRIMARY KEY,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS looks_by_time ON looks (at);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    ref TEXT NOT NULL,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    actor INTEGER,
    error TEXT NOT NULL,
    failed_at REAL NOT NULL
);
-- how many rows the outbox and the dead letters hold, kept by triggers: the gauges read them
-- at every scrape, and a COUNT(*) walked a storm's backlog on the store's one thread (30-100
-- ms at 100,000 queued, every intake write waiting behind it)
CREATE TABLE IF NOT EXISTS counts (
    name TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS outbox_added AFTER INSERT ON outbox
BEGIN UPDATE counts SET n = n + 1 WHERE name = 'outbox'; END;
CREATE TRIGGER IF NOT EXISTS outbox_removed AFTER DELETE ON outbox
BEGIN UPDATE counts SET n = n - 1 WHERE name = 'outbox'; END;
CREATE TRIGGER IF NOT EXISTS dead_letter_added AFTER INSERT ON dead_letters
BEGIN UPDATE counts SET n = n + 1 WHERE name = 'dead_letters'; END;
CREATE TRIGGER IF NOT EXISTS dead_letter_removed AFTER DELETE ON dead_letters
BEGIN UPDATE counts SET n = n - 1 WHERE name = 'dead_letters'; END;
"""

_ITEM_COLUMNS = "id, ref, kind, content, created_at, attempts, actor"
# the oldest item of each incident, if due
_DUE_HEADS = (
    "SELECT o.id, o.ref, o.kind, o.content, o.created_at, o.attempts, o.actor, o.priority, "
    "o.begun_at "
    "FROM outbox o WHERE o.not_before <= ? AND NOT EXISTS "
    "(SELECT 1 FROM outbox p WHERE p.ref = o.ref AND p.id < o.id) "
    "ORDER BY o.priority, o.id LIMIT ?"
)


class SQLiteStore:
    claims_lapse = False

    def __init__(self, path: str) -> None:
        self.path = path
        self._worker = PriorityWorker("sqlite-store", together=self._together)
        self._db: sqlite3.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None  # used by `checkpoint` alone
        self._checkpointing = threading.Lock()
        self._checkpoint_thread: ThreadPoolExecutor | None = None  # `checkpoint`'s own
        # which open incidents hold each alert (`holding`): read and changed on the worker
        # alone, changed only once a write is committed (`_index_changes` waits for that)
        self._alerts = AlertIndex()
        # the transaction's changes to `_alerts`: (ref, its alerts while open; None: none)
        self._index_changes: list[tuple[str, tuple[str, ...] | None]] = []

    async def _run(self, fn: Callable[[sqlite3.Connection], T], priority: int = BACKGROUND) -> T:
        """`fn` in a transaction of its own (a savepoint in the group's, see `_together`)."""

        def call() -> T:
            if self._db is None:
                raise StoreError("store is not open")
            return fn(self._db)

        return await self._worker.run(call, priority)

    def _together(self, calls: Iterator[Callable[[], Any]]) -> list[Outcome]:
        """Calls queued together, in one transaction with one commit: each after the first in a
        savepoint, so one that fails is undone alone. Raises StoreError if the commit fails or
        SQLite ends the transaction itself (a full disk, an I/O error): none of their writes
        stayed."""
        db = self._db
        if db is None:
            raise StoreError("store is not open")
        try:
            db.execute("BEGIN IMMEDIATE")
            outcomes = [self._first(db, next(calls))]  # most groups are of one call
            outcomes += [self._in_savepoint(db, call) for call in calls]
            db.execute("COMMIT")
            self._apply_index_changes()
        except BaseException as exc:
            self._index_changes.clear()
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"sqlite {self.path}: {exc}") from exc
            raise
        return outcomes

    def _first(self, db: sqlite3.Connection, call: Callable[[], Any]) -> Outcome:
        """The group's first call: alone in the transaction so far, undone by rolling it back."""
        try:
            return call(), None
        except BaseException as exc:  # handed to its caller
            self._index_changes.clear()
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.execute("BEGIN IMMEDIATE")  # for the calls after it
            return None, self._error(exc)

    def _in_savepoint(self, db: sqlite3.Connection, call: Callable[[], Any]) -> Outcome:
        db.execute("SAVEPOINT call")
        index_changes = len(self._index_changes)
        try:
            result = call()
        except BaseException as exc:  # handed to its caller
            if not db.in_transaction:  # SQLite rolled the whole transaction back
                raise
            del self._index_changes[index_changes:]
            db.execute("ROLLBACK TO call")
            db.execute("RELEASE call")
            return None, self._error(exc)
        db.execute("RELEASE call")
        return result, None

    def _apply_index_changes(self) -> None:
        """The committed transaction's changes to the alert index, in the order written."""
        for ref, alerts in self._index_changes:
            if alerts is None:
                self._alerts.drop(ref)
            else:
                self._alerts.hold(ref, alerts)
        self._index_changes.clear()

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.Error):
            error = StoreError(f"sqlite {self.path}: {exc}")
            error.__cause__ = exc
            return error
        return exc

    async def open(self) -> None:
        def connect() -> None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            # a savepoint's journal (every call after the first of a group runs in one) and a
            # sort's scratch space stay in memory: a save of a new incident journals more than
            # the 64 KiB SQLite keeps in memory by default, so it made and deleted a file, ~70
            # a second in a storm, each a filesystem metadata change that can wait for the
            # checkpoint's fdatasync to finish (strace of the store's thread)
            db.execute("PRAGMA temp_store=MEMORY")
            # the log is moved into the database by `checkpoint`, off the write path; a write
            # does it only if that falls far behind (SQLite's default: every 1,000 pages, an
            # fsync in the commit of whichever write crosses it, ~20 ms here)
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES_AT_MOST}")
            placed = not _has_table(db, "incidents") or _has_column(db, "incidents", "firing")
            # the open incidents' `silenced` is filled in when the column is first made
            marked = not _has_table(db, "incidents") or _has_column(db, "incidents", "silenced")
            timed = _has_table(db, "looks")
            counted = _has_table(db, "counts")
            db.executescript(SCHEMA)
            if not counted:  # a new database, or one from before the counts: counted once
                _count_rows(db)
            _add_missing_columns(db)
            if not marked:
                _mark_silenced(db)
            # the alert index lives in memory now (see AlertIndex): the table an older version
            # kept goes, so that version rebuilds it whole if it ever opens this file again
            db.execute("DROP TABLE IF EXISTS alert_refs")
            self._alerts = _open_alerts(db)
            if not timed:
                _move_looks(db)
            if not placed:
                _place_incidents(db)
            self._db = db

        try:
            await self._worker.run(connect, URGENT, alone=True)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open sqlite store {self.path}: {exc}") from exc

    async def close(self) -> None:
        def disconnect() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._worker.run(disconnect, alone=True)
        self._worker.stop()
        with self._checkpointing:  # not while a checkpoint runs in its thread
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
        if self._checkpoint_thread is not None:
            self._checkpoint_thread.shutdown(wait=False)
            self._checkpoint_thread = None

    async def checkpoint(self) -> None:
        """Move the write-ahead log into the database file from a connection and thread of its
        own: a PASSIVE checkpoint takes no lock that writes wait for, so the worker's commits
        go on meanwhile (and its fsync is not theirs). Once the log is long, a second pass
        moves what was written during the first, and the writer moves the rest and so starts
        the log over (`_restart_log`)."""
        if self.path == ":memory:":
            return
        if self._checkpoint_thread is None:
            self._checkpoint_thread = ThreadPoolExecutor(
                1, "sqlite-checkpoint", initializer=_yield_cpu
            )
        one_pass = partial(
            asyncio.get_running_loop().run_in_executor, self._checkpoint_thread, self._checkpoint
        )
        if await one_pass() >= WAL_RESTART_PAGES:
            await one_pass()
            await self._worker.run(self._restart_log, URGENT, alone=True)

    def _checkpoint(self) -> int:
        """A PASSIVE checkpoint, then the database file's pages written to disk; returns how
        many pages the log holds (all of them now in the database, unless a write came in
        meanwhile). SQLite syncs the file only after a pass that reached the log's end: in a
        storm none of these passes did, and the pass that started the log over (on the writer,
        `_restart_log`) synced everything they had moved since the last one: 4.5 ms on average
        at first, 21-25 ms once the file held 100,000 incidents."""
        with self._checkpointing:
            try:
                if self._checkpointer is None:
                    self._checkpointer = sqlite3.connect(
                        self.path, check_same_thread=False, isolation_level=None, timeout=5.0
                    )
                _, log_pages, _ = self._checkpointer.execute(
                    "PRAGMA wal_checkpoint(PASSIVE)"
                ).fetchone()
                _flush(self.path)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"sqlite {self.path}: checkpoint: {exc}") from exc
        return int(log_pages)

    def _restart_log(self) -> None:
        """On the worker, between transactions: move the little `checkpoint` missed, so the
        next write starts the log over. SQLite starts it over only once all of it is in the
        database; under a steady stream of writes `checkpoint` never gets there (each write
        adds to the log while it runs), so the log grew to WAL_PAGES_AT_MOST and an intake
        write moved what was left in its commit: 8-27 ms every 0.65 s at 500 new groups/s,
        growing with the database (`bench/storm.py scale`). Here it is what was written since
        the second pass began, ahead of the queued calls (URGENT): 2-7 ms at 30,000
        incidents, once a second."""
        if self._db is None:
            raise StoreError("store is not open")
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: checkpoint: {exc}") from exc

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    @staticmethod
    def _stored(
        row: tuple[str, int | None, int | None, int, float | None, str | None] | None,
    ) -> Stored | None:
        if row is None:
            return None
        # create_attempted holds when the create was sent (0: none; 1 from older versions:
        # sent long ago)
        body, message_id, thread_id, rendered, sent_at, digest = row
        return Stored(
            Incident.model_validate_json(body),
            Delivery(
                message_id=message_id,
                thread_id=thread_id,
                rendered_version=rendered,
                create_sent_at=float(sent_at) if sent_at else None,
                create_digest=digest,
            ),
        )

    async def load_incident(self, key: str) -> Stored | None:
        return await self._run(
            lambda db: self._stored(
                db.execute(
                    f"SELECT {_STORED} FROM current_incidents c "  # noqa: S608
                    "JOIN incidents i ON i.ref = c.ref WHERE c.key = ?",
                    (key,),
                ).fetchone()
            ),
            URGENT,
        )

    async def load_by_ref(self, ref: str) -> Stored | None:
        return await self._run(
            lambda db: self._stored(
                db.execute(
                    f"SELECT {_STORED} FROM incidents i WHERE i.ref = ?",  # noqa: S608
                    (ref,),
                ).fetchone()
            )
        )

    async def load_group(self, prefix: str) -> list[Stored]:
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {_STORED} FROM current_incidents c "  # noqa: S608
                "JOIN incidents i ON i.ref = c.ref WHERE c.key >= ? AND c.key < ? ORDER BY c.key",
                (prefix, prefix + "\U0010ffff"),
            ).fetchall(),
            URGENT,
        )
        return [s for row in rows if (s := self._stored(row)) is not None]

    async def all_incidents(self) -> list[Stored]:
        rows = await self._run(
            lambda db: db.execute(f"SELECT {_STORED} FROM incidents i").fetchall()  # noqa: S608
        )
        return [s for row in rows if (s := self._stored(row)) is not None]

    async def changed(
        self, firing: bool, since: float, below: Place | None, limit: int
    ) -> list[Place]:
        # by the index (firing, changed_at, ref), walked backwards from `below`
        after = "AND (changed_at, ref) < (?, ?) " if below is not None else ""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT changed_at, ref FROM incidents WHERE firing = ? "  # noqa: S608
                f"AND changed_at >= ? {after}ORDER BY changed_at DESC, ref DESC LIMIT ?",
                (int(firing), since, *(below or ()), limit),
            ).fetchall()
        )
        return [Place(changed_at, ref) for changed_at, ref in rows]

    async def find_by_message(self, message_id: int) -> str | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT ref FROM incidents WHERE message_id = ?", (message_id,)
            ).fetchone()
        )
        return str(row[0]) if row else None

    async def open_incidents(self) -> list[Incident]:
        return [incident async for page in open_pages(self) for incident in page]

    async def open_refs(self) -> list[str]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT c.ref FROM current_incidents c JOIN incidents i ON i.ref = c.ref "
                "WHERE i.finished_at IS NULL ORDER BY c.ref"
            ).fetchall()
        )
        return [ref for (ref,) in rows]

    async def open_refs_on(self, routes: Sequence[str]) -> list[str]:
        # two statements: with an OR of the two, SQLite walks every open incident instead
        of_routes = (
            "SELECT i.ref FROM incidents i WHERE i.route IN ({marks}) "  # noqa: S608
            f"AND i.finished_at IS NULL AND {_CURRENT}"
        )
        unknown = (
            "SELECT i.ref FROM incidents i WHERE i.route IS NULL "  # noqa: S608
            f"AND i.finished_at IS NULL AND {_CURRENT}"
        )
        rows = await self._rows_in(of_routes, routes)
        if routes:
            rows += await self._run(lambda db: db.execute(unknown).fetchall())
        return sorted({ref for (ref,) in rows})

    async def _rows_in(self, query: str, values: Sequence[str]) -> list[Any]:
        """The rows `query` selects for all of `values` (its `{marks}`: their IN list), read
        in chunks: SQLite caps a statement's parameters."""

        def read(chunk: Sequence[str]) -> Callable[[sqlite3.Connection], list[Any]]:
            marks = ",".join("?" * len(chunk))
            return lambda db: db.execute(query.format(marks=marks), chunk).fetchall()

        rows: list[Any] = []
        for start in range(0, len(values), IN_LIST_MAX):
            rows += await self._run(read(values[start : start + IN_LIST_MAX]))
        return rows

    async def load_many(self, refs: list[str], alerts: bool = True) -> list[Stored]:
        # without alerts: cut out by SQLite on its thread (a third of the parse's time)
        read = _STORED if alerts else _STORED.replace("i.body", _NO_ALERTS, 1)
        query = f"SELECT i.ref, {read} FROM incidents i WHERE i.ref IN ({{marks}})"  # noqa: S608
        rows = await self._rows_in(query, refs)
        by_ref = {row[0]: self._stored(row[1:]) for row in rows}
        return [s for s in (by_ref.get(ref) for ref in refs) if s is not None]

    async def _picked(self, column: str, paths: str, refs: list[str]) -> list[Any]:
        """(ref, `column`, [the values at `paths`]) of each incident still held: the fields
        picked out of each body by SQLite itself, on its thread, so the event loop parses a
        short list per incident, not the incident."""
        query = (
            f"SELECT ref, {column}, json_extract(body, {paths}) "  # noqa: S608
            "FROM incidents WHERE ref IN ({marks})"
        )
        rows = await self._rows_in(query, refs)
        return [(ref, value, json.loads(values)) for ref, value, values in rows]

    async def look_facts(self, refs: list[str]) -> list[LookFacts]:
        rows = await self._picked("version", _LOOK_PATHS, refs)
        return [LookFacts.from_json(*row) for row in rows]

    async def briefs(self, refs: list[str]) -> list[Brief]:
        rows = await self._picked("message_id", _BRIEF_PATHS, refs)
        by_ref = {row[0]: Brief.from_json(*row) for row in rows}
        return [b for b in (by_ref.get(ref) for ref in refs) if b is not None]

    async def shown_silenced(self) -> list[str]:
        # sorted here: ORDER BY would have SQLite walk every incident in ref order instead of
        # the few its partial index holds
        rows = await self._run(
            lambda db: db.execute("SELECT ref FROM incidents WHERE silenced IS NOT NULL").fetchall()
        )
        return sorted(ref for (ref,) in rows)

    async def holding(self, fingerprints: Sequence[str]) -> list[str]:
        wanted = list(fingerprints)
        return await self._run(lambda db: sorted(self._alerts.holding(wanted)))

    async def setting(self, name: str) -> str | None:
        row = await self._run(
            lambda db: db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        )
        return str(row[0]) if row else None

    async def put_setting(self, name: str, value: str) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
        )

    async def looks_due(self, before: float, limit: int) -> list[str]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT ref FROM looks WHERE at < ? ORDER BY at LIMIT ?", (before, limit)
            ).fetchall()
        )
        return [ref for (ref,) in rows]

    async def look_again(self, looks: Sequence[Look]) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                f"INSERT INTO looks (ref, at) SELECT i.ref, ? FROM incidents i "  # noqa: S608
                f"WHERE {_LOOKED_AT} ON CONFLICT (ref) DO UPDATE SET at = excluded.at",
                [(at, ref, version) for ref, version, at in looks if at is not None],
            )
            db.executemany(
                f"DELETE FROM looks WHERE ref IN (SELECT i.ref FROM incidents i "  # noqa: S608
                f"WHERE {_LOOKED_AT})",
                [(ref, version) for ref, version, at in looks if at is None],
            )

        if looks:
            await self._run(write)

    async def save_incident(
        self,
        incident: Incident,
        replaces: tuple[str, int] | None,
        items: list[NewOutboxItem],
        now: float,
        event_id: str | None = None,
        timeline: Sequence[Event] = (),
    ) -> None:
        def write(db: sqlite3.Connection) -> None:
            row = db.execute(
                "SELECT c.ref, i.version FROM current_incidents c JOIN incidents i "
                "ON i.ref = c.ref WHERE c.key = ?",
                (incident.key,),
            ).fetchone()
            found = (row[0], row[1]) if row else None
            if found != replaces:
                raise ConflictError(f"incident {incident.key!r} changed: {found} != {replaces}")
            _record_event(db, event_id, now)
            finished_at = incident.changed_at.timestamp() if incident.finished else None
            opens = found is None or found[0] != incident.ref  # the group's incident from now
            if opens and found is not None:  # the one it replaces is no longer followed
                db.execute("UPDATE incidents SET silenced = NULL WHERE ref = ?", (found[0],))
                self._index_changes.append((found[0], None))
                db.execute("DELETE FROM looks WHERE ref = ?", (found[0],))
            db.execute(
                "INSERT INTO incidents (ref, key, version, body, finished_at, silenced, route, "
                "changed_at, firing) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (ref) DO UPDATE SET "
                "version = excluded.version, body = excluded.body, "
                "finished_at = excluded.finished_at, silenced = excluded.silenced, "
                "route = excluded.route, changed_at = excluded.changed_at, "
                "firing = excluded.firing",
                (
                    incident.ref,
                    incident.key,
                    incident.version,
                    incident.model_dump_json(),
                    finished_at,
                    1 if shows_silence(incident) else None,
                    incident.route,
                    incident.changed_at.timestamp(),
                    int(incident.state is IncidentState.FIRING),
                ),
            )
            _due_at(db, incident, now)
            self._index_changes.append(
                (incident.ref, None if incident.finished else tuple(watched_alerts(incident)))
            )
            if opens:  # otherwise the group's row already names this incident
                db.execute(
                    "INSERT INTO current_incidents (key, ref) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET ref = excluded.ref",
                    (incident.key, incident.ref),
                )
            _add_items(db, incident.ref, items, now)
            _note(db, incident.ref, timeline)

        await self._run(write, URGENT)

    async def enqueue(
        self,
        ref: str,
        items: list[NewOutboxItem],
        now: float,
        event_id: str | None = None,
        timeline: Sequence[Event] = (),
    ) -> None:
        def write(db: sqlite3.Connection) -> None:
            _record_event(db, event_id, now)
            _add_items(db, ref, items, now)
            _note(db, ref, timeline)

        await self._run(write, URGENT)

    async def set_swap(self, schedule: str, who: str, start: float, end: float) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO swaps (schedule, who, start, until) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (schedule) DO UPDATE SET who = excluded.who, "
                "start = excluded.start, until = excluded.until",
                (schedule, who, start, end),
            ),
            URGENT,
        )

    async def clear_swap(self, schedule: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM swaps WHERE schedule = ?", (schedule,)))

    async def swaps(self, now: float) -> list[SwapRecord]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT schedule, who, start, until FROM swaps WHERE until > ?", (now,)
            ).fetchall()
        )
        return [SwapRecord(str(s), str(w), float(a), float(b)) for s, w, a, b in rows]

    async def save_calendar(self, schedule: str, text: str) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO calendars (schedule, body) VALUES (?, ?) "
                "ON CONFLICT (schedule) DO UPDATE SET body = excluded.body",
                (schedule, text),
            )
        )

    async def calendar(self, schedule: str) -> str | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT body FROM calendars WHERE schedule = ?", (schedule,)
            ).fetchone()
        )
        return str(row[0]) if row else None

    async def event_seen(self, event_id: str) -> bool:
        row = await self._run(
            lambda db: db.execute(
                "SELECT 1 FROM processed_events WHERE event_id = ?", (event_id,)
            ).fetchone(),
            URGENT,
        )
        return row is not None

    async def record_delivery(self, ref: str, delivery: Delivery) -> None:
        await self._run(lambda db: _record_delivery(db, ref, delivery))

    async def hold(self, refs: list[str]) -> list[str]:
        return refs  # one process: nobody else takes an item

    async def due_items(self, now: float, limit: int) -> list[OutboxItem]:
        def heads(db: sqlite3.Connection) -> list[OutboxItem]:
            # lane by lane (presses, creates by severity, the rest), walking the index on
            # (priority, id) and stopping at `limit`, whatever the backlog
            found = db.execute(_DUE_HEADS, (now, limit)).fetchall()
            return [OutboxItem(*row) for row in found]

        return await self._run(heads)

    async def begin_item(self, item_id: int, at: float) -> None:
        def begin(db: sqlite3.Connection) -> None:
            db.execute("UPDATE outbox SET begun_at = ? WHERE id = ?", (at, item_id))

        await self._run(begin)

    async def finish_item(
        self,
        item_id: int,
        delivery: tuple[str, Delivery] | None = None,
        note: Event | None = None,
    ) -> None:
        def finish(db: sqlite3.Connection) -> None:
            if delivery is not None:
                _record_delivery(db, *delivery)
            _note_item(db, item_id, note)
            db.execute("DELETE FROM outbox WHERE id = ?", (item_id,))

        await self._run(finish)

    async def retry_item(
        self, item_id: int, not_before: float, error: str, note: Event | None = None
    ) -> None:
        def retry(db: sqlite3.Connection) -> None:
            _note_item(db, item_id, note)
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, not_before = ?, last_error = ?, "
                "begun_at = NULL WHERE id = ?",
                (not_before, error, item_id),
            )

        await self._run(retry)

    async def timeline(self, ref: str) -> tuple[list[Event], int]:
        def read(db: sqlite3.Connection) -> tuple[list[Event], int]:
            rows = db.execute(
                "SELECT body FROM timeline WHERE ref = ? ORDER BY id", (ref,)
            ).fetchall()
            dropped = db.execute("SELECT n FROM timeline_dropped WHERE ref = ?", (ref,)).fetchone()
            return [Event.from_json(body) for (body,) in rows], int(dropped[0]) if dropped else 0

        return await self._run(read)

    async def dead_letter(
        self, item: OutboxItem, error: str, now: float, note: Event | None = None
    ) -> None:
        def move(db: sqlite3.Connection) -> None:
            _note_item(db, item.id, note)
            db.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
            db.execute(
                "INSERT OR REPLACE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.id,
                    item.ref,
                    item.kind,
                    item.content,
                    item.created_at,
                    item.attempts,
                    item.actor,
                    error,
                    now,
                ),
            )

        await self._run(move)

    async def dead_letters(self) -> list[DeadLetter]:
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {_ITEM_COLUMNS}, error, failed_at FROM dead_letters ORDER BY id"  # noqa: S608
            ).fetchall()
        )
        return [DeadLetter(OutboxItem(*row[:7]), row[7], row[8]) for row in rows]

    async def prune(self, finished_before: float, events_before: float, dead_before: float) -> int:
        def delete(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM processed_events WHERE at < ?", (events_before,))
            db.execute("DELETE FROM dead_letters WHERE failed_at < ?", (dead_before,))
            db.execute("DELETE FROM once WHERE at < ?", (finished_before,))
            # finished before the cut, nothing queued: found through incidents_finished, so a
            # pass costs what it deletes, not what is open or queued
            stale = (
                "FROM incidents i WHERE i.finished_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.ref = i.ref)"
            )
            db.execute(  # by key, its primary key, while the incident is still the key's
                f"DELETE FROM current_incidents WHERE (key, ref) IN (SELECT i.key, i.ref {stale})",  # noqa: S608
                (finished_before,),
            )
            for table in ("timeline", "timeline_dropped", "incidents"):
                deleted = db.execute(
                    f"DELETE FROM {table} WHERE ref IN (SELECT i.ref {stale})",  # noqa: S608
                    (finished_before,),
                ).rowcount
            return deleted

        return await self._run(delete)

    async def replay_dead_letters(self, now: float) -> int:
        def move(db: sqlite3.Connection) -> int:
            db.execute(
                "INSERT INTO outbox (ref, kind, content, created_at, not_before, actor) "
                "SELECT ref, kind, content, ?, ?, actor FROM dead_letters ORDER BY id",
                (now, now),
            )
            return db.execute("DELETE FROM dead_letters").rowcount

        return await self._run(move)

    async def outbox_stats(self, now: float) -> Backlog:
        # the oldest item is the first one queued still there (ids follow the clock)
        count, oldest, dead = await self._run(
            lambda db: db.execute(
                "SELECT (SELECT n FROM counts WHERE name = 'outbox'), "
                "(SELECT created_at FROM outbox WHERE id = (SELECT MIN(id) FROM outbox)), "
                "(SELECT n FROM counts WHERE name = 'dead_letters')"
            ).fetchone()
        )
        age = max(0.0, now - oldest) if oldest is not None else 0.0
        return Backlog(int(count), age, int(dead))


def _record_event(db: sqlite3.Connection, event_id: str | None, now: float) -> None:
    if event_id is None:
        return
    try:
        db.execute("INSERT INTO processed_events (event_id, at) VALUES (?, ?)", (event_id, now))
    except sqlite3.IntegrityError as exc:
        raise DuplicateEvent(event_id) from exc


# rows a statement inserts at most (two parameters each: old SQLite builds allow 999)
ROWS_PER_INSERT = 400


def _note(db: sqlite3.Connection, ref: str, events: Sequence[Event]) -> None:
    """Append to the incident's timeline, keeping its last MAX_EVENTS (the drop counted)."""
    if not events:
        return
    for start in range(0, len(events), ROWS_PER_INSERT):
        chunk = events[start : start + ROWS_PER_INSERT]
        db.execute(
            # only placeholders are joined in: the values are bound
            "INSERT INTO timeline (ref, body) VALUES "  # noqa: S608
            + ", ".join(["(?, ?)"] * len(chunk)),
            [value for e in chunk for value in (ref, e.to_json())],
        )
    # the newest event past the bound, if any: one step of SQLite when there is none (a count
    # took two), the usual case
    oldest_gone = db.execute(
        "SELECT id FROM timeline WHERE ref = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
        (ref, MAX_EVENTS),
    ).fetchone()
    if oldest_gone is not None:
        over = db.execute(
            "DELETE FROM timeline WHERE ref = ? AND id <= ?", (ref, oldest_gone[0])
        ).rowcount
        db.execute(
            "INSERT INTO timeline_dropped (ref, n) VALUES (?, ?) "
            "ON CONFLICT (ref) DO UPDATE SET n = n + excluded.n",
            (ref, over),
        )


def _note_item(db: sqlite3.Connection, item_id: int, note: Event | None) -> None:
    """A delivery's event, on the timeline of the incident the outbox item is for."""
    if note is None:
        return
    row = db.execute("SELECT ref FROM outbox WHERE id = ?", (item_id,)).fetchone()
    if row is not None:
        _note(db, str(row[0]), [note])


def _add_items(db: sqlite3.Connection, ref: str, items: list[NewOutboxItem], now: float) -> None:
    # only an edit is dropped for one waiting: without one, no need to look (two steps)
    waiting_edit = (
        any(i.kind == "edit" for i in items)
        and db.execute(
            "SELECT 1 FROM outbox WHERE ref = ? AND kind = 'edit' AND id > "
            "(SELECT MIN(id) FROM outbox WHERE ref = ?)",
            (ref, ref),
        ).fetchone()
    )
    if any(i.priority == PRESS for i in items):  # someone waits: the queue goes first
        db.execute("UPDATE outbox SET priority = ? WHERE ref = ?", (PRESS, ref))
    db.executemany(
        "INSERT INTO outbox (ref, kind, content, created_at, not_before, actor, priority) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (ref, i.kind, i.content, now, now, i.actor, i.priority)
            for i in coalesced(items, bool(waiting_edit))
        ],
    )


def _yield_cpu() -> None:
    """The checkpoint's thread asks for less CPU than the rest of the process (Linux lets a
    thread have a nice value of its own). It copies the log's pages into the database, four
    times a second in a storm, 23-39 ms a pass at 100,000 incidents: on 2 cores at equal
    priority it took a core from the event loop and the writer, and the webhooks answered
    meanwhile were the slow ones."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + CHECKPOINT_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness, 19))


def _flush(path: str) -> None:
    """Write the file's changed pages to disk (whichever connection changed them)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


def _has_column(db: sqlite3.Connection, table: str, name: str) -> bool:
    return any(row[1] == name for row in db.execute(f"PRAGMA table_info({table})"))


def _due_at(db: sqlite3.Connection, incident: Incident, now: float) -> None:
    """A save makes an open incident due for a look at once; a finished one has none."""
    if incident.finished:
        db.execute("DELETE FROM looks WHERE ref = ?", (incident.ref,))
    else:
        db.execute(
            "INSERT INTO looks (ref, at) VALUES (?, ?) "
            "ON CONFLICT (ref) DO UPDATE SET at = excluded.at",
            (incident.ref, now),
        )


def _count_rows(db: sqlite3.Connection) -> None:
    for table in ("outbox", "dead_letters"):
        db.execute(
            f"INSERT INTO counts (name, n) SELECT ?, COUNT(*) FROM {table}",  # noqa: S608
            (table,),
        )


def _place_incidents(db: sqlite3.Connection) -> None:
    """A database from before `changed_at` and `firing`: each incident's place in the order of
    change is read from its body, once (one write)."""
    rows = db.execute(
        "SELECT ref, json_extract(body, '$.changed_at'), json_extract(body, '$.state') "
        "FROM incidents WHERE firing IS NULL"
    ).fetchall()
    places = [
        (datetime.fromisoformat(changed).timestamp(), int(state == IncidentState.FIRING), ref)
        for ref, changed, state in rows
    ]
    db.execute("BEGIN IMMEDIATE")  # a failure leaves it to the connection's end: rolled back
    db.executemany("UPDATE incidents SET changed_at = ?, firing = ? WHERE ref = ?", places)
    db.execute("COMMIT")


def _move_looks(db: sqlite3.Connection) -> None:
    """A database whose look times were a column of `incidents` (`look_at`): they move to
    `looks` once. The column stays, unused (dropping it would rewrite every incident)."""
    if _has_column(db, "incidents", "look_at"):
        db.execute(
            "INSERT OR IGNORE INTO looks (ref, at) SELECT i.ref, i.look_at FROM incidents i "
            "JOIN current_incidents c ON c.ref = i.ref "
            "WHERE i.look_at IS NOT NULL AND i.finished_at IS NULL"
        )
        db.execute("DROP INDEX IF EXISTS incidents_by_look")


def _open_alerts(db: sqlite3.Connection) -> AlertIndex:
    """The alert index of the open incidents as stored (at the start: 1,000,000 alerts in
    100,000 incidents took about 3 s)."""
    index = AlertIndex()
    rows = db.execute(
        "SELECT i.ref, a.key FROM incidents i JOIN current_incidents c ON c.ref = i.ref, "
        "json_each(i.body, '$.alerts') a WHERE i.finished_at IS NULL ORDER BY i.ref"
    )
    for ref, held in groupby(rows, key=itemgetter(0)):
        index.hold(ref, [fingerprint for _, fingerprint in held])
    return index


def _mark_silenced(db: sqlite3.Connection) -> None:
    """A database made before `silenced` existed: mark the open incidents showing one."""
    db.execute(
        "UPDATE incidents SET silenced = 1 WHERE finished_at IS NULL "
        "AND json_extract(body, '$.silence_id') IS NOT NULL "
        "AND ref IN (SELECT ref FROM current_incidents)"
    )


# columns added after the first release: (table, column, declaration)
ADDED_COLUMNS = [
    ("incidents", "create_digest", "TEXT"),
    ("outbox", "begun_at", "REAL"),
    ("outbox", "priority", "INTEGER NOT NULL DEFAULT 100"),
    # 1 while the incident is open and shows a silence (the check-back follows each); set for
    # an older database's open incidents when it is first made (`_mark_silenced`)
    ("incidents", "silenced", "INTEGER"),
    # an older database's incidents get theirs when next saved (`open_refs_on` names those
    # without one as candidates: filling it in would rewrite every open incident at the start)
    ("incidents", "route", "TEXT"),
    # filled in for an older database's incidents when first added (`_place_incidents`)
    ("incidents", "changed_at", "REAL"),
    ("incidents", "firing", "INTEGER"),
]


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """A database made by an older version gets the columns added since (CREATE TABLE IF NOT
    EXISTS leaves an existing table as it was)."""
    for table, column, declaration in ADDED_COLUMNS:
        if not _has_column(db, table, column):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            if (table, column) == ("outbox", "priority"):  # creates queued by an older version
                db.execute("UPDATE outbox SET priority = 1 WHERE kind = 'create'")
    db.execute("CREATE INDEX IF NOT EXISTS outbox_by_lane ON outbox (priority, id)")
    db.execute(
        "CREATE INDEX IF NOT EXISTS incidents_silenced ON incidents (silenced) "
        "WHERE silenced IS NOT NULL"
    )
    db.execute("CREATE INDEX IF NOT EXISTS incidents_by_route ON incidents (route, finished_at)")
    db.execute(
        "CREATE INDEX IF NOT EXISTS incidents_by_change ON incidents (firing, changed_at, ref)"
    )


def _record_delivery(db: sqlite3.Connection, ref: str, delivery: Delivery) -> None:
    db.execute(
        "UPDATE incidents SET message_id = ?, thread_id = ?, rendered_version = ?, "
        "create_attempted = ?, create_digest = ? WHERE ref = ?",
        (
            delivery.message_id,
            delivery.thread_id,
            delivery.rendered_version,
            delivery.create_sent_at or 0,
            delivery.create_digest,
            ref,
        ),
    )
