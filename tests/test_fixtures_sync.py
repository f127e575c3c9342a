"""The tests use copies of ../shared (fixtures, Pachca's spec) so a clean checkout runs alone;
where ../shared is present, the copies must not have drifted from it."""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared is not beside this checkout")
def test_copies_match_shared() -> None:
    pairs = [(HERE / "pachca-openapi.yaml", SHARED / "pachca" / "openapi.yaml")]
    for original in (SHARED / "fixtures").rglob("*"):
        if original.is_file():
            pairs.append((HERE / original.relative_to(SHARED / "fixtures"), original))
    drifted = [
        str(copy)
        for copy, original in pairs
        if not copy.is_file() or copy.read_bytes() != original.read_bytes()
    ]
    assert drifted == []
