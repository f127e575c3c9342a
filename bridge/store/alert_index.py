"""Which open incidents hold each alert, in memory: the SQLite store's answer to `holding`.

A table keyed by fingerprint had each new incident write ten random pages of a b-tree (an
alert's fingerprint is a hash): at 100,000 open incidents a third of the write-ahead log, and
the checkpoints that moved it into the database were what the slow webhooks waited behind
(`bench/storm.py --fingerprints hashed --scale-incidents 100000 scale`). The SQLite store has
one process, so the index can live in it; it is rebuilt from the open incidents at the start.

Like the table it replaces it may name a spare candidate (an alert that left an open incident
stays until the incident finishes), never miss one.
"""

from __future__ import annotations

from collections.abc import Iterable


class AlertIndex:
    """fingerprint -> refs of the open incidents holding it. Most alerts are in one incident,
    so a single ref is kept as it is and only a shared alert gets a tuple (a set for each of a
    million alerts would triple the memory)."""

    def __init__(self) -> None:
        self._refs: dict[str, str | tuple[str, ...]] = {}
        self._held: dict[str, tuple[str, ...]] = {}  # ref -> its fingerprints, to drop them

    def __len__(self) -> int:
        """How many incidents are indexed."""
        return len(self._held)

    def hold(self, ref: str, fingerprints: Iterable[str]) -> None:
        """`ref` holds these alerts too (those it held before stay)."""
        before = self._held.get(ref, ())
        known = set(before)
        added = tuple(fp for fp in dict.fromkeys(fingerprints) if fp not in known)
        if not added:
            return
        self._held[ref] = before + added
        for fp in added:
            have = self._refs.get(fp)
            if have is None:
                self._refs[fp] = ref
            elif isinstance(have, str):
                self._refs[fp] = (have, ref)
            else:
                self._refs[fp] = (*have, ref)

    def drop(self, ref: str) -> None:
        """`ref` holds nothing any more (finished, or replaced by a new incident of its key)."""
        for fp in self._held.pop(ref, ()):
            have = self._refs[fp]
            if isinstance(have, str):
                del self._refs[fp]
                continue
            rest = tuple(r for r in have if r != ref)
            self._refs[fp] = rest[0] if len(rest) == 1 else rest

    def holding(self, fingerprints: Iterable[str]) -> set[str]:
        """Refs of the incidents holding any of these alerts."""
        refs: set[str] = set()
        for fp in fingerprints:
            have = self._refs.get(fp)
            if isinstance(have, str):
                refs.add(have)
            elif have is not None:
                refs.update(have)
        return refs
