"""aigrid.turns.Turns: at most `slots` holders, those waiting served round the owners (the shared embedder's batches
and the gateway's parse threads take their turns here)."""

from __future__ import annotations

import asyncio

import pytest

from aigrid.turns import Turns


async def test_two_slots_are_held_at_once_and_the_waiting_go_round_the_owners() -> None:
    turns, order = Turns(2), []
    release = asyncio.Event()

    async def hold(name: str, owner: str) -> None:
        async with turns.turn(owner):
            order.append(name)
            await release.wait()

    holders = [asyncio.create_task(hold(f"a{i}", "a")) for i in range(2)]
    await asyncio.sleep(0)
    assert turns.held == 2 and order == ["a0", "a1"]
    waiting = [asyncio.create_task(hold(f"a{i}", "a")) for i in range(2, 5)]
    waiting += [asyncio.create_task(hold(f"b{i}", "b")) for i in range(2)]
    await asyncio.sleep(0)
    assert turns.waiting == 5 and turns.held == 2
    release.set()
    await asyncio.gather(*holders, *waiting)
    assert order == ["a0", "a1", "a2", "b0", "a3", "b1", "a4"]  # first come first served: a2 a3 a4 b0 b1
    assert turns.held == 0 and turns.waiting == 0


async def test_cancel_waiting_cancels_every_caller_waiting_and_no_other() -> None:
    turns = Turns(1)
    await turns.take("a")
    waiting = asyncio.create_task(turns.take("b"))
    await asyncio.sleep(0)
    turns.cancel_waiting()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert turns.held == 1 and turns.waiting == 0
    turns.hand_on()
    await asyncio.wait_for(turns.take("c"), 30)  # at once


def test_a_turn_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Turns(0)
