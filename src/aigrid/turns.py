"""Turns taken one owner after another: at most `slots` holders at once, and those waiting served round the owners
(a turn each, in the order the owners came), each owner's callers first come, first served. So one owner's many
callers (a tenant's flood) wait on each other, and another owner waits for the turns under way and one turn of each
owner before it, not one of each of those callers. A caller cancelled while it waits never holds a turn; one
cancelled as its turn came hands it on.

One implementation for every such queue of the grid: the shared embedder's batches (agents/embeddings.py, one slot,
by tenant) and the gateway's parse threads (gateway/parse_pool.py, a slot a thread, by tenant; brief ATK9). Called on
the event loop only: no lock."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable


class Turns:
    """At most `slots` turns held at once; `take` waits for one, `hand_on` gives one up."""

    def __init__(self, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError(f"turns need at least one slot, not {slots}")
        self.slots = slots
        self.held = 0
        """Turns taken and not yet handed on."""
        self._waiting: OrderedDict[Hashable, deque[asyncio.Future[None]]] = OrderedDict()
        """Each owner's callers waiting, the owners in the order of their next turn."""

    @property
    def waiting(self) -> int:
        """Callers waiting for a turn."""
        return sum(len(line) for line in self._waiting.values())

    @contextlib.asynccontextmanager
    async def turn(self, owner: Hashable) -> AsyncIterator[None]:
        await self.take(owner)
        try:
            yield
        finally:
            self.hand_on()

    async def take(self, owner: Hashable) -> None:
        """A turn, once every owner before this one has had one; `hand_on` gives it up."""
        if self.held < self.slots and not self._waiting:
            self.held += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(owner, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed a turn as it was cancelled: it goes on to the next
                self.hand_on()
            else:
                line = self._waiting.get(owner)
                if line is not None and turn in line:
                    line.remove(turn)
                    if not line:
                        del self._waiting[owner]
            raise

    def hand_on(self) -> None:
        """A turn given up: the next owner's oldest caller waiting takes it."""
        self.held = max(0, self.held - 1)
        while self.held < self.slots and self._waiting:
            owner, line = next(iter(self._waiting.items()))
            turn = line.popleft()
            if line:
                self._waiting.move_to_end(owner)  # its next caller after every other owner's
            else:
                del self._waiting[owner]
            if not turn.done():
                turn.set_result(None)
                self.held += 1

    def cancel_waiting(self) -> None:
        """Every caller still waiting cancelled (a pool closing)."""
        for line in self._waiting.values():
            for turn in line:
                turn.cancel()
        self._waiting.clear()
