"""The admission line: bounded slots, first come first served, positions reported, full line refused."""

from __future__ import annotations

import asyncio

import pytest

from capmesh.services.runtime.admission import Admission
from capmesh.services.runtime.errors import ResourceExhausted


async def test_waiters_see_their_place_and_are_served_in_order():
    admission = Admission(max_concurrency=1, max_queue=3)
    names = ("first", "second", "third", "fourth")
    seen: dict[str, list[int]] = {name: [] for name in names}
    order: list[str] = []
    release = {name: asyncio.Event() for name in names}

    async def call(name: str) -> None:
        async with admission.ticket() as ticket:
            async for position in ticket.positions():
                seen[name].append(position)
            order.append(name)
            await release[name].wait()

    tasks = [asyncio.create_task(call(name)) for name in names]
    for name in names:  # each holds the only slot until released; the others move up one place
        while order[-1:] != [name]:
            await asyncio.sleep(0)
        release[name].set()
    await asyncio.gather(*tasks)

    assert order == list(names)
    assert seen == {"first": [], "second": [1], "third": [2, 1], "fourth": [3, 2, 1]}
    assert (admission.in_flight, admission.queued, admission.busy) == (0, 0, False)


async def test_a_full_line_is_resource_exhausted_with_a_retry_delay():
    admission = Admission(max_concurrency=1, max_queue=1)
    async with admission.ticket(), admission.ticket():
        with pytest.raises(ResourceExhausted) as caught:
            async with admission.ticket():
                pass
    assert caught.value.retry_after_s == pytest.approx(1.0)
    assert not admission.busy


async def test_a_waiter_that_leaves_frees_its_place():
    admission = Admission(max_concurrency=1, max_queue=2)
    async with admission.ticket():
        leaving = asyncio.create_task(_wait_in_line(admission))
        staying_positions: list[int] = []
        staying = asyncio.create_task(_wait_in_line(admission, staying_positions))
        while admission.queued < 2:
            await asyncio.sleep(0)
        leaving.cancel()
        while staying_positions[-1:] != [1]:
            await asyncio.sleep(0)
        assert admission.queued == 1
    await staying
    assert staying_positions == [2, 1] and not admission.busy


async def test_a_slot_freed_while_the_waiter_reports_its_place_is_not_missed():
    """The servicer sends each place as a `queued` message; a slot handed over while that message
    is being sent must still end the wait (it was lost, and the call held the slot for ever)."""
    admission = Admission(max_concurrency=1, max_queue=1)
    holder = admission.ticket()
    await holder.__aenter__()
    async with admission.ticket() as waiting:
        places = waiting.positions()
        assert await anext(places) == 1  # the waiter is suspended here, sending its place
        await holder.__aexit__(None, None, None)  # ...when the slot is handed to it
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(places), timeout=5)
        assert admission.in_flight == 1
    assert not admission.busy


async def _wait_in_line(admission: Admission, positions: list[int] | None = None) -> None:
    async with admission.ticket() as ticket:
        async for position in ticket.positions():
            if positions is not None:
                positions.append(position)
