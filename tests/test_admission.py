"""Admission (bridge.admission): a few holders at once; the most urgent waiter goes next."""

import asyncio

import pytest

from bridge.admission import Admission


async def test_waiters_go_in_by_rank_then_arrival() -> None:
    admission = Admission(2)
    gate = asyncio.Event()
    order: list[str] = []

    async def work(name: str, rank: int, hold: bool = False) -> None:
        async with admission.slot(rank):
            order.append(name)
            if hold:
                await gate.wait()

    holders = [asyncio.create_task(work(f"h{n}", 9, hold=True)) for n in range(2)]
    await asyncio.sleep(0)
    waiters = []
    for name, rank in [("w1", 3), ("c1", 1), ("w2", 3), ("e1", 2), ("c2", 1)]:
        waiters.append(asyncio.create_task(work(name, rank)))
        await asyncio.sleep(0)
    assert admission.free == 0 and admission.waiting == 5
    gate.set()
    await asyncio.gather(*holders, *waiters)
    assert order == ["h0", "h1", "c1", "c2", "e1", "w1", "w2"]
    assert admission.free == 2 and admission.waiting == 0


async def test_a_waiter_that_gives_up_leaves_no_slot_lost() -> None:
    admission = Admission(1)
    gate = asyncio.Event()

    async def hold() -> None:
        async with admission.slot(5):
            await gate.wait()

    async def work() -> str:
        async with admission.slot(5):
            return "done"

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    gone = asyncio.create_task(work())
    kept = asyncio.create_task(work())
    await asyncio.sleep(0)
    gone.cancel()  # a sender that hung up while waiting
    gate.set()
    await holder
    assert await kept == "done"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert admission.free == 1 and admission.waiting == 0
    # handed a slot and cancelled before it ran: the slot goes back
    holder = asyncio.create_task(hold())
    gate.clear()
    await asyncio.sleep(0)
    late = asyncio.create_task(work())
    await asyncio.sleep(0)
    gate.set()
    await asyncio.sleep(0)  # the holder leaves and hands its slot to `late`...
    late.cancel()  # ...which is cancelled before it could run
    await holder
    with pytest.raises(asyncio.CancelledError):
        await late
    assert admission.free == 1
    assert await work() == "done"


async def test_a_waiter_out_of_patience_goes_ahead_of_more_urgent_ones() -> None:
    """A stream of criticals never holds a warning back for good: once the earliest waiter has
    waited `patience`, it goes next, whatever its rank."""
    now = [0.0]
    admission = Admission(1, patience=1.0, clock=lambda: now[0])
    gate = asyncio.Event()
    order: list[str] = []

    async def work(name: str, rank: int) -> None:
        async with admission.slot(rank):
            order.append(name)
            await gate.wait()

    holder = asyncio.create_task(work("holder", 1))
    await asyncio.sleep(0)
    warning = asyncio.create_task(work("warning", 3))
    await asyncio.sleep(0)
    now[0] = 0.5
    criticals = [asyncio.create_task(work(f"c{n}", 1)) for n in range(3)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.sleep(0)  # the holder leaves: c0 (the warning has waited 0.5 s)
    now[0] = 1.2  # the warning has now waited 1.2 s: it goes before c1 and c2
    await asyncio.gather(holder, warning, *criticals)
    assert order == ["holder", "c0", "warning", "c1", "c2"]
    assert admission.free == 1 and admission.waiting == 0
