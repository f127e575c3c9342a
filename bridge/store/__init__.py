"""Durable state: incidents, what Pachca knows of them, and the outbox. One protocol, several
backends; `open_store` picks one from `BRIDGE_STORE`."""

from __future__ import annotations

from bridge.settings import Settings
from bridge.store.base import (
    READ_PAGE,
    Backlog,
    DeadLetter,
    Look,
    NewOutboxItem,
    OutboxItem,
    Place,
    Store,
    Stored,
    SwapRecord,
    changed_pages,
    firing_on_routes,
    open_pages,
    open_stored,
    summaries,
)
from bridge.store.memory import MemoryStore
from bridge.store.sqlite import SQLiteStore


def open_store(url: str, password: str | None = None, claim_ttl: float = 60.0) -> Store:
    """A store for `url`: `sqlite:///path.db`, `redis://host:port/db` (or `rediss://`), or
    `memory://` (tests)."""
    if url == "memory://":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("redis://", "rediss://")):
        from bridge.store.redis import RedisStore

        return RedisStore(url, password=password, claim_ttl=claim_ttl)
    raise ValueError(f"unsupported store URL {url!r}")


def store_from_settings(settings: Settings) -> Store:
    """The store `BRIDGE_STORE` names, with its password and claim expiry."""
    password = settings.REDIS_PASSWORD.get_secret_value() if settings.REDIS_PASSWORD else None
    return open_store(settings.BRIDGE_STORE, password, settings.BRIDGE_CLAIM_TTL)


__all__ = [
    "READ_PAGE",
    "Backlog",
    "DeadLetter",
    "Look",
    "MemoryStore",
    "NewOutboxItem",
    "OutboxItem",
    "Place",
    "SQLiteStore",
    "Store",
    "Stored",
    "SwapRecord",
    "changed_pages",
    "firing_on_routes",
    "open_pages",
    "open_store",
    "open_stored",
    "store_from_settings",
    "summaries",
]
