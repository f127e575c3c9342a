"""Benchmark: what reading a webhook body costs the intake (SPEC 8).

Times, in microseconds per Alertmanager body of 1 to 100 alerts (median of 7 rounds):
`json.loads` alone; `validated`, the intake's reading (`json.loads`, then the objects
validated by pydantic); pydantic's own JSON reader on the bytes (`model_validate_json`, an
option the intake does not take); and `parse`, all the intake makes of a body.

2026-12-05, 2-core VM: a body of 3 alerts is read in 19 us and parsed whole in 30-37 us,
against 1,270 us of the bridge's CPU per new group of 3 alerts measured the same hour
(`bench/storm.py --quick intake`, its outbox's create included): pydantic's JSON reader
(12 us) would save 0.5 % of that, so the intake keeps `json.loads`, whose errors it words
itself (tried: the same answers for every body, by a property test, and not kept).

Run: python3 bench/parse.py
Not a test: it asserts nothing, it measures.
"""

from __future__ import annotations

import json
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from storm import notification  # noqa: E402

from bridge.sources.alertmanager import SOURCE, AlertmanagerPayload, parse, validated  # noqa: E402

ROUNDS = 7


def per_body_us(what: Callable[[bytes], Any], body: bytes) -> float:
    number = max(20, 20_000 // max(1, len(body) // 500))
    rounds = timeit.repeat(lambda: what(body), number=number, repeat=ROUNDS)
    return statistics.median(rounds) / number * 1e6


def main() -> None:
    print(f"python {sys.version.split()[0]}; microseconds per body, median of {ROUNDS} rounds")
    print(
        f"   {'alerts':>6s} {'bytes':>8s} {'json.loads':>11s} {'validated':>10s} "
        f"{'pydantic json':>14s} {'parse':>9s}"
    )
    for alerts in (1, 3, 10, 100):
        body = json.dumps(notification(7, alerts)).encode()
        loads = per_body_us(json.loads, body)
        read = per_body_us(lambda b: validated(AlertmanagerPayload, b, SOURCE), body)
        own = per_body_us(AlertmanagerPayload.model_validate_json, body)
        whole = per_body_us(parse, body)
        print(
            f"   {alerts:6d} {len(body):8,d} {loads:9.1f}us {read:8.1f}us {own:12.1f}us "
            f"{whole:7.1f}us"
        )


if __name__ == "__main__":
    main()
