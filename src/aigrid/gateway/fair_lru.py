"""A size-bounded store of tenants' records in which one tenant cannot push out the others' records.

The in-memory stores (stored responses, background placeholders, conversations) hold every tenant's
records in one budget. Evicting the oldest record of all, whoever owns it, lets a tenant that writes a lot
evict every other tenant's conversations. Here, over budget, the tenant holding the most goes first: its own
oldest record is evicted, so a tenant within its share of the store loses nothing to a noisy neighbour,
and a store with one tenant behaves as a plain LRU (oldest written first). The record being written is
never evicted for its own sake while another record can go.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

from aigrid.most_held import MostHeld

V = TypeVar("V")


class FairLru(Generic[V]):
    """Records by (tenant, id), each with a size (bytes, or 1 to bound a count); oldest written first per tenant."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.size = 0
        """The sizes of every record held."""
        self._tenants: dict[str, OrderedDict[str, tuple[V, int]]] = {}
        self._held: dict[str, int] = {}  # per tenant: the sizes of its records
        self._count = 0
        self._most = MostHeld(by_one=False)  # which tenant's records are the largest

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: tuple[str, str]) -> bool:
        records = self._tenants.get(key[0])
        return records is not None and key[1] in records

    def get(self, tenant: str, rid: str) -> V | None:
        records = self._tenants.get(tenant)
        found = records.get(rid) if records is not None else None
        return None if found is None else found[0]

    def values(self) -> Iterator[V]:
        for records in self._tenants.values():
            for value, _ in records.values():
                yield value

    def put(self, tenant: str, rid: str, value: V, size: int) -> None:
        """Keep `value` as the tenant's newest record (replacing one of the same id), then evict while over."""
        self.pop(tenant, rid)
        self._tenants.setdefault(tenant, OrderedDict())[rid] = (value, size)
        self._count += 1
        self._add(tenant, size)
        self._evict(tenant, rid)

    def resize(self, tenant: str, rid: str, delta: int, *, newest: bool = True) -> None:
        """The record grew (or shrank) by `delta`; `newest`: it was written now, so it goes last in line."""
        records = self._tenants.get(tenant)
        if records is None or rid not in records:
            return
        value, size = records[rid]
        records[rid] = (value, size + delta)
        if newest:
            records.move_to_end(rid)
        self._add(tenant, delta)
        if delta > 0:
            self._evict(tenant, rid)

    def pop(self, tenant: str, rid: str) -> V | None:
        records = self._tenants.get(tenant)
        found = records.pop(rid, None) if records is not None else None
        if found is None:
            return None
        self._count -= 1
        self._add(tenant, -found[1])
        if not records:
            del self._tenants[tenant]
            self._held.pop(tenant, None)
        return found[0]

    def _add(self, tenant: str, delta: int) -> None:
        self.size += delta
        was = self._held.get(tenant, 0)
        self._held[tenant] = was + delta
        self._most.moved(tenant, was, was + delta)

    def _evict(self, tenant: str, rid: str) -> None:
        """While over budget: the oldest record of the tenant holding the most goes (most_held.MostHeld, not a sort of
        every tenant each time), never `rid` itself while another record can go: where it is its tenant's one record
        and that tenant holds the most, the oldest of the next goes."""
        while self.size > self.max_size and self._count > 1:
            t = self._most.most()
            assert t is not None  # over budget: some tenant holds records
            oldest = next(iter(self._tenants[t]))
            if (t, oldest) == (tenant, rid):  # alone: set aside while the next is found
                held = self._held[t]
                self._most.moved(t, held, 0)
                t = self._most.most()
                self._most.moved(tenant, 0, held)
                if t is None:
                    return
                oldest = next(iter(self._tenants[t]))
            self.pop(t, oldest)
