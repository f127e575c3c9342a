"""A bounded map whose entries expire, that the garbage collector does not have to walk.

The inbox remembers something of every incident it has seen (the last notification's digest,
the repeats since the last write): 100,000 entries in a storm. `cachetools.TTLCache` keeps a
Python object per entry (its link in the expiry list), each one tracked by the garbage
collector, so every full collection walked all of them: 50-75 ms pauses of the event loop at
100,000 open incidents (`python3 bench/storm.py --scale-incidents 100000 scale`). Here an entry
is a tuple of a float and the value, which the collector stops tracking once it has seen it
(for values that hold no containers: strings, numbers), in one OrderedDict whose order is the
order of expiry.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class ExpiringDict(Generic[K, V]):
    """At most `maxsize` entries, each gone `ttl` seconds (of `timer`) after it was last set;
    when full, the entry that would expire first goes."""

    def __init__(
        self, maxsize: int, ttl: float, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.maxsize = maxsize
        self.ttl = ttl
        self.timer = timer
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()  # oldest set first

    def __len__(self) -> int:
        return len(self._entries)

    def __setitem__(self, key: K, value: V) -> None:
        now = self.timer()
        entries = self._entries
        entries.pop(key, None)
        entries[key] = (now + self.ttl, value)
        self._expire(now)
        while len(entries) > self.maxsize:
            entries.popitem(last=False)

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: D) -> V | D: ...

    def get(self, key: K, default: object = None) -> object:
        return self._live(self._entries.get(key), default)

    @overload
    def pop(self, key: K) -> V | None: ...

    @overload
    def pop(self, key: K, default: D) -> V | D: ...

    def pop(self, key: K, default: object = None) -> object:
        return self._live(self._entries.pop(key, None), default)

    def _live(self, entry: tuple[float, V] | None, default: object) -> object:
        """The entry's value if it has not expired, else `default`."""
        if entry is None or not self.timer() < entry[0]:
            return default
        return entry[1]

    def _expire(self, now: float) -> None:
        """Drop the expired entries at the front (a clock set back leaves some for later:
        `get` checks each entry's own time)."""
        entries = self._entries
        while entries:
            key = next(iter(entries))
            if now < entries[key][0]:
                return
            del entries[key]
