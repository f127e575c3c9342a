"""Fault soak: a few hundred alert groups through fire / resolve / re-fire cycles into a
running bridge while the fake Pachca fails a share of calls in every way it can (5xx, 429 with
and without Retry-After, a non-UTF-8 error page, hangs past the client timeout, dropped
connections, permanent refusals of thread comments) and the store fails a share of its calls.

Prints what a person would check afterwards: every group's message shows its last state, no
group has two messages, nothing is stuck in the outbox, every background loop is alive, and
the dead letters are only the refusals injected as permanent. Exits 1 if any of that fails.

With --replicas 2 (or more) the replicas share a Redis store (a throwaway redis-server is
started unless --redis names one): both get a share of the notifications at once, as from an
HA pair of Alertmanagers; Pachca also performs some calls and answers after the client gave up;
people delete a tenth of the messages in the chat during the first half; the last replica is
killed halfway. It then also prints the messages left behind showing firing (orphaned).

Run: python3 bench/fault_soak.py [--groups 300] [--cycles 4] [--fault-rate 0.2]
     [--store-fail-rate 0.05] [--seed 1] [--replicas 2 [--redis URL]]
     (about two minutes with the defaults)
tests/test_fault_soak.py runs the same soaks, smaller, in every test run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.redis_server import RedisServer  # noqa: E402
from tests.soak import run_soak  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=300)
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--permanent-rate", type=float, default=0.05)
    parser.add_argument("--store-fail-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--redis", help="a Redis URL (default: a throwaway redis-server)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the faults are expected: keep the log quiet
    redis: RedisServer | None = None
    redis_url = args.redis
    if args.replicas > 1 and redis_url is None:
        redis = RedisServer(Path(tempfile.mkdtemp(prefix="soak-redis-")))
        redis.start()
        redis_url = redis.url
    try:
        report = asyncio.run(
            run_soak(
                groups=args.groups,
                cycles=args.cycles,
                fault_rate=args.fault_rate,
                permanent_rate=args.permanent_rate,
                store_fail_rate=args.store_fail_rate,
                settle_seconds=120.0,
                storm_tail_seconds=120.0,
                seed=args.seed,
                redis_url=redis_url if args.replicas > 1 else None,
                replicas=args.replicas,
                crash_one=args.replicas > 1,
                delete_rate=0.1 if args.replicas > 1 else 0.0,
            )
        )
    finally:
        if redis is not None:
            redis.stop()
    for line in report.lines():
        print(line)
    for problem in (
        report.wrong_state[:10]
        + report.duplicated[:10]
        + report.orphaned[:10]
        + report.dms_doubled[:10]
    ):
        print("  ", problem)
    print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
