"""Durable state: incidents, what Pachca knows of them, and the outbox. One protocol, several
backends; `open_store` picks one from `BRIDGE_STORE`."""

from __future__ import annotations

from bridge.store.base import DeadLetter, NewOutboxItem, OutboxItem, Store, Stored
from bridge.store.memory import MemoryStore
from bridge.store.sqlite import SQLiteStore


def open_store(url: str) -> Store:
    """A store for `url`: `sqlite:///path.db` or `memory://`."""
    if url == "memory://":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///"))
    raise ValueError(f"unsupported store URL {url!r}")


__all__ = [
    "DeadLetter",
    "MemoryStore",
    "NewOutboxItem",
    "OutboxItem",
    "SQLiteStore",
    "Store",
    "Stored",
    "open_store",
]
