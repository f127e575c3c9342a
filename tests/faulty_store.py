"""A store that fails on purpose: wraps a real one and raises before chosen calls reach it
(the next N calls of a method, or a random fraction of all calls), as a flaky disk or a Redis
failover would. Nothing is half-written: a failed call never reached the real store."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from bridge.errors import StoreError
from bridge.store import Store

# calls that only start or stop the store, never failed at random
_LIFECYCLE = {"open", "close", "ping"}


class FaultyStore:
    def __init__(self, inner: Store, fail_rate: float = 0.0, seed: int = 0) -> None:
        self.inner = inner
        self.fail_rate = fail_rate
        self.rng = random.Random(seed)
        self.planned: dict[str, list[BaseException]] = defaultdict(list)
        self.raised = 0

    def fail_next(self, method: str, error: BaseException, times: int = 1) -> None:
        self.planned[method].extend([error] * times)

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)
        if not callable(real) or name.startswith("_"):
            return real

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.planned.get(name):
                self.raised += 1
                raise self.planned[name].pop(0)
            if name not in _LIFECYCLE and self.fail_rate and self.rng.random() < self.fail_rate:
                self.raised += 1
                raise StoreError(f"injected failure of {name}")
            return await real(*args, **kwargs)

        return call
