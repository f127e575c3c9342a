"""Periodic clean-up, so the store stays bounded however long the bridge runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bridge.errors import StoreError
from bridge.store import Store
from bridge.tasks import Pulse

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 600.0
# Pachca redelivers for minutes at most; a day of processed event ids is ample.
EVENT_MEMORY_SECONDS = 86400.0


async def prune_once(
    store: Store, retention: float, now: float, dead_letter_retention: float = 14 * 86400
) -> int:
    """Forget incidents resolved longer than `retention` seconds ago, and dead letters older
    than `dead_letter_retention`."""
    removed = await store.prune(
        now - retention, now - EVENT_MEMORY_SECONDS, now - dead_letter_retention
    )
    if removed:
        log.info("forgot %d incidents resolved more than %.0fs ago", removed, retention)
    return removed


async def prune_forever(
    store: Store,
    retention: float,
    dead_letter_retention: float,
    pulse: Pulse,
    clock: Callable[[], float] = time.time,
) -> None:
    while True:
        try:
            await prune_once(store, retention, clock(), dead_letter_retention)
        except StoreError as exc:
            log.warning("pruning failed, will try again: %s", exc)
        pulse.beat(PRUNE_EVERY_SECONDS)
        await asyncio.sleep(PRUNE_EVERY_SECONDS)


# Four times a second: each pass has little to move (about a thousand pages during a storm of
# new groups at 300/s), and so the stalls of the commits that run beside it stay short. Side by
# side at 300 new groups/s on a 2-core VM, while it kept up: intake p99 31-35 ms with
# checkpoints every 0.25 s, 56-58 ms every second (`python3 bench/storm.py --intake-rate 300
# intake`; where the VM cannot keep up with 300/s, the backlog decides the p99 instead)
CHECKPOINT_EVERY_SECONDS = 0.25
# a checkpoint failing four times a second is logged once a minute
CHECKPOINT_LOG_EVERY_SECONDS = 60.0


async def checkpoint_forever(store: Store, pulse: Pulse) -> None:
    """The store's upkeep off the write path (`Store.checkpoint`), four times a second."""
    logged_at = -CHECKPOINT_LOG_EVERY_SECONDS
    while True:
        try:
            await store.checkpoint()
        except StoreError as exc:
            if time.monotonic() - logged_at >= CHECKPOINT_LOG_EVERY_SECONDS:
                logged_at = time.monotonic()
                log.warning("store checkpoint failed, will try again: %s", exc)
        pulse.beat(CHECKPOINT_EVERY_SECONDS)
        await asyncio.sleep(CHECKPOINT_EVERY_SECONDS)
