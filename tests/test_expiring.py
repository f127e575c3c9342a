"""bridge.expiring.ExpiringDict: the inbox's memory of every incident, against a reference
model, and without an object per entry for the garbage collector to walk."""

from __future__ import annotations

import gc

from cachetools import TTLCache
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.expiring import ExpiringDict

KEYS = st.sampled_from("abcdef")
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, st.integers(0, 9)),
        st.tuples(st.just("get"), KEYS),
        st.tuples(st.just("pop"), KEYS),
        st.tuples(st.just("wait"), st.sampled_from([0.0, 0.5, 1.0, 3.0, 10.0, -2.0])),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(maxsize=st.integers(1, 5), steps=STEPS)
def test_it_answers_as_a_map_of_what_was_set_less_than_ttl_ago(
    maxsize: int, steps: list[tuple[object, ...]]
) -> None:
    """Reference: each key's value and when it was last set; a key is there while less than
    `ttl` has passed since, and of more than `maxsize` set the first to expire is gone (the
    clock may also go back: a test's clock, or a corrected one)."""
    now = [100.0]
    ttl = 4.0
    cache: ExpiringDict[str, int] = ExpiringDict(maxsize=maxsize, ttl=ttl, timer=lambda: now[0])
    model: dict[str, tuple[float, int]] = {}  # key -> (expires, value), in the order set

    def live(key: str) -> int | None:
        entry = model.get(key)
        return entry[1] if entry is not None and now[0] < entry[0] else None

    for step in steps:
        match step:
            case ("set", str(key), int(value)):
                model.pop(key, None)
                model[key] = (now[0] + ttl, value)
                while len(model) > maxsize:  # the earliest set (not yet dropped) goes
                    del model[next(iter(model))]
                cache[key] = value
            case ("get", str(key)):
                assert cache.get(key) == live(key)
                assert cache.get(key, -1) == (-1 if live(key) is None else live(key))
            case ("pop", str(key)):
                assert cache.pop(key, -1) == (-1 if live(key) is None else live(key))
                model.pop(key, None)
            case ("wait", float(seconds)):
                now[0] += seconds
        assert len(cache) <= maxsize


def test_expired_entries_are_dropped_as_new_ones_come() -> None:
    """Memory follows what is live, not everything ever set (below the size bound too)."""
    now = [0.0]
    cache: ExpiringDict[str, str] = ExpiringDict(maxsize=100_000, ttl=10, timer=lambda: now[0])
    for n in range(1000):
        cache[f"k{n}"] = "d"
        now[0] += 0.1
    assert 99 <= len(cache) <= 101


def test_its_entries_are_not_objects_the_garbage_collector_walks() -> None:
    """10,000 entries add next to nothing to what a full collection walks; the TTLCache it
    replaces added an object per entry (a gen-2 pause of 50-75 ms at 100,000 incidents)."""

    def tracked_after(fill: object) -> int:
        gc.collect()
        before = len(gc.get_objects())
        for n in range(10_000):
            fill[f"incident-{n}"] = f"{n:064x}"  # type: ignore[index]
        gc.collect()  # the collector stops tracking tuples of atoms once it sees them
        return len(gc.get_objects()) - before

    expiring: ExpiringDict[str, str] = ExpiringDict(maxsize=100_000, ttl=3600)
    cache: TTLCache[str, str] = TTLCache(maxsize=100_000, ttl=3600)
    assert tracked_after(expiring) < 100
    assert tracked_after(cache) >= 10_000  # what this test would catch
    assert len(expiring) == len(cache) == 10_000
