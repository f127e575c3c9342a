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

import json
from collections.abc import Iterable


class AlertIndex:
    """fingerprint -> refs of the open incidents holding it.

    Only strings, no tuple or set: a container holding only strings drops out of the garbage
    collector's passes, so a million alerts cost its full passes nothing (one dict of tuples
    had added 5-10 ms to each at 100,000 incidents). Most alerts are in one incident, whose ref
    is the value; an alert in several (routed to two chats) has their refs joined by spaces
    (a ref has none). What each incident holds, for `drop`, is kept as a JSON list."""

    def __init__(self) -> None:
        self._refs: dict[str, str] = {}
        self._held: dict[str, str] = {}  # ref -> JSON list of its fingerprints

    def __len__(self) -> int:
        """How many incidents are indexed."""
        return len(self._held)

    def _fingerprints(self, ref: str) -> list[str]:
        held = self._held.get(ref)
        return json.loads(held) if held is not None else []

    def hold(self, ref: str, fingerprints: Iterable[str]) -> None:
        """`ref` holds these alerts too (those it held before stay)."""
        before = self._fingerprints(ref)
        known = set(before)
        added = [fp for fp in dict.fromkeys(fingerprints) if fp not in known]
        if not added:
            return
        self._held[ref] = json.dumps(before + added)
        for fp in added:
            have = self._refs.get(fp)
            self._refs[fp] = ref if have is None else f"{have} {ref}"

    def drop(self, ref: str) -> None:
        """`ref` holds nothing any more (finished, or replaced by a new incident of its key)."""
        for fp in self._fingerprints(ref):
            rest = [r for r in self._refs[fp].split(" ") if r != ref]
            if rest:
                self._refs[fp] = " ".join(rest)
            else:
                del self._refs[fp]
        self._held.pop(ref, None)

    def holding(self, fingerprints: Iterable[str]) -> set[str]:
        """Refs of the incidents holding any of these alerts."""
        refs: set[str] = set()
        for fp in fingerprints:
            have = self._refs.get(fp)
            if have is not None:
                refs.update(have.split(" "))
        return refs
