"""Recent injection scores, so a text the gateway has already read is not read again.

Clients re-send the same text all the time: one system prompt on every request of an app, and the whole
conversation so far on every turn of a chat or an agent loop (tool results included). Scoring is linear in
the text, so without memory an n-turn conversation costs O(n^2) characters read; with it, each turn costs
only its new messages. A score depends only on the text and the head, so a hit is exact. Keys are a
128-bit BLAKE2b digest of the text (no text is kept), per tenant, so one tenant's hits cannot reveal by
their timing what another tenant sent. Bounded: past the size the tenant holding the most forgets its least
recently used (fair_lru's rule, as the decision log's), so one tenant's texts cannot push the others' scores out
(until the thirty-sixth session the least recently used of all went: one request of 4,000 tiny texts emptied every
tenant's kept scores, and their conversations were read again whole on the firewall's one thread, ATK4). Safe to
call from the firewall's worker thread and the event loop at once.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from aigrid.most_held import MostHeld
from aigrid.security.firewall.injection import InjectionScore

DEFAULT_SIZE = 4096
"""Entries kept (about 200 bytes each)."""


class ScoreCache:
    def __init__(self, score: Callable[[str, bool], InjectionScore], size: int = DEFAULT_SIZE) -> None:
        if size < 0:
            raise ValueError("score cache size must be >= 0")
        self._score = score
        self.size = size
        self._of_tenant: dict[str, OrderedDict[tuple[bool, bytes], InjectionScore]] = {}
        self._count = 0
        self._most = MostHeld()  # which tenant holds the most entries
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def known(self, tenant: str, text: str, document: bool) -> bool:
        """Whether the score of `text` is kept (nothing is counted or reordered)."""
        with self._lock:
            return self.size > 0 and _key(text, document) in self._of_tenant.get(tenant, {})

    def score(self, tenant: str, text: str, document: bool) -> InjectionScore:
        if not self.size:
            return self._score(text, document)
        key = _key(text, document)
        with self._lock:
            entries = self._of_tenant.get(tenant)
            if entries is not None and (found := entries.get(key)) is not None:
                entries.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        result = self._score(text, document)  # outside the lock: a 4 MiB text must not hold up short ones
        with self._lock:
            entries = self._of_tenant.setdefault(tenant, OrderedDict())
            if key not in entries:
                self._count += 1
                self._most.moved(tenant, len(entries), len(entries) + 1)
            entries[key] = result
            entries.move_to_end(key)
            while self._count > self.size:
                self._forget_oldest_of_most()
        return result

    def _forget_oldest_of_most(self) -> None:
        """The tenant holding the most (of those holding as many, the first to come to it) forgets its least
        recently used (most_held.MostHeld: O(1), not a walk of every tenant)."""
        tenant = self._most.most()
        assert tenant is not None  # over the size: some tenant holds entries
        held = self._of_tenant[tenant]
        held.popitem(last=False)
        self._count -= 1
        self._most.moved(tenant, len(held) + 1, len(held))
        if not held:
            del self._of_tenant[tenant]

    def __len__(self) -> int:
        return self._count


def _key(text: str, document: bool) -> tuple[bool, bytes]:
    """A text's key within its tenant's entries."""
    return document, hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
