"""Incident references: short, opaque to users, unique, and ordered by the second they were made.

Ordered so that the store's indexes keyed by reference grow at one end during a storm instead of
dirtying a random page of each for every new incident (bench/storm.py, README: goal 5).
"""

from __future__ import annotations

import pytest

from bridge import inbox
from bridge.actions import parse_button_data


def test_a_reference_made_a_second_later_sorts_after(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    for second in (1_790_000_000, 1_790_000_001, 1_790_000_002, 1_790_003_600):
        monkeypatch.setattr(inbox.time, "time", lambda second=second: second + 0.5)
        made += [inbox.new_ref() for _ in range(50)]
    for earlier, later in zip(made[::50], made[50::50], strict=False):
        assert earlier[:6] < later[:6]
    assert [ref[:6] for ref in made] == sorted(ref[:6] for ref in made)


def test_references_made_in_the_same_second_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbox.time, "time", lambda: 1_790_000_000.25)
    made = {inbox.new_ref() for _ in range(10_000)}
    assert len(made) == 10_000


@pytest.mark.parametrize("action", ["ack", "resolve", "silence"])
def test_a_reference_is_valid_button_data_within_pachcas_limits(action: str) -> None:
    ref = inbox.new_ref()
    data = f"{action}:{ref}:4h" if action == "silence" else f"{action}:{ref}"
    parsed = parse_button_data(data)
    assert parsed is not None and parsed.ref == ref
    assert len(ref) == 16 and int(ref, 16) >= 0
    assert len(data) <= 255
