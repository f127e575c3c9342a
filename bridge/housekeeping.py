"""Periodic clean-up, so the store stays bounded however long the bridge runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bridge.errors import StoreError
from bridge.store import Store

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 600.0
# Pachca redelivers for minutes at most; a day of processed event ids is ample.
EVENT_MEMORY_SECONDS = 86400.0


async def prune_once(store: Store, retention: float, now: float) -> int:
    """Forget incidents resolved longer than `retention` seconds ago."""
    removed = await store.prune(now - retention, now - EVENT_MEMORY_SECONDS)
    if removed:
        log.info("forgot %d incidents resolved more than %.0fs ago", removed, retention)
    return removed


async def prune_forever(
    store: Store, retention: float, clock: Callable[[], float] = time.time
) -> None:
    while True:
        try:
            await prune_once(store, retention, clock())
        except StoreError as exc:
            log.warning("pruning failed, will try again: %s", exc)
        await asyncio.sleep(PRUNE_EVERY_SECONDS)
