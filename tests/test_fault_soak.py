"""The fault soak, small enough for every run (bench/fault_soak.py runs it larger): while
Pachca fails a fifth of the calls in every way it can and the store fails one call in twenty,
every group still ends with one message showing its last state, nothing is stuck, every loop
is alive, and the only dead letters are the refusals injected as permanent."""

from tests.redis_server import RedisServer
from tests.soak import run_soak


async def test_fault_soak_every_group_ends_true_nothing_stuck_no_loop_dead() -> None:
    report = await run_soak(groups=20, cycles=3, fault_rate=0.1, store_fail_rate=0.05, seed=7)
    print("\n".join(report.lines()))
    assert report.wrong_state == []
    assert report.duplicated == []
    assert report.presses > 0 and report.told > 0 and report.dms_doubled == []
    assert report.messages == report.groups
    assert report.stuck == 0
    assert report.loops_down == []
    assert report.dead_letters <= report.faults.get("permanent", 0)
    assert report.dead_letters_unexpected == 0
    # the soak did what it says: faults of every kind were injected, the store did fail
    assert {"5xx", "429", "429-bare", "not-utf8", "hang", "drop", "late"} <= set(report.faults)
    assert report.store_failures > 0 and report.intake_retries > 0


async def test_fault_soak_two_replicas_on_redis_one_crashes_messages_deleted(
    redis_server: RedisServer,
) -> None:
    """Two replicas share Redis (claims of 1 s), both get a share of the notifications at
    once as from an HA pair; Pachca also performs some calls and answers after the client gave
    up; people delete a tenth of the messages in the chat; one replica dies halfway. Still one
    live message per group, none left behind showing firing, nothing stuck."""
    report = await run_soak(
        groups=20,
        cycles=3,
        fault_rate=0.1,
        store_fail_rate=0.02,
        seed=11,
        redis_url=redis_server.url,
        replicas=2,
        crash_one=True,
        delete_rate=0.1,
    )
    print("\n".join(report.lines()))
    assert report.replicas == 2 and report.crashed == 1
    assert report.wrong_state == []
    assert report.duplicated == []
    assert report.presses > 0 and report.told > 0 and report.dms_doubled == []
    assert report.orphaned == []
    assert report.messages == report.groups
    assert report.stuck == 0
    assert report.loops_down == []
    assert report.dead_letters_unexpected == 0
    assert report.deleted > 0 and "late" in report.faults
