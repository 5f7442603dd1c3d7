"""Abuse signals over every worker's requests of a key (`aigrid up|gateway --workers N`).

Each worker keeps its own AbuseMonitor for an immediate verdict and queues the digest of every request it
counted (key id, prompt and prefix hashes, two flags: no text). Once per batch interval the worker sends the
queue to its hub in one frame (gateway/abuse_sync.py); the hub counts every worker's digests in one
AbuseMonitor (`HubAbuse`, the same window logic) and answers with the verdict of every key that has a
signal there. A worker's verdict for a key is the more severe of its own and the hub's latest.

The request path does no I/O: one deque append and one dict lookup more than a lone gateway. The hub's
view of the other workers' requests is at most two batch intervals old (their next send, then this
worker's next answer). Without an answer from the hub the worker answers from its own monitor alone.
No clock crosses processes: the hub counts a digest at the time it arrives (at most one interval late).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from aigrid.security.firewall.abuse import (
    SEVERITY,
    AbuseAction,
    AbuseDigest,
    AbuseMonitor,
    AbuseVerdict,
    RequestTraits,
    digest,
)

MAX_PENDING = 100_000
"""Digests a worker holds for its next batch; beyond this (the hub not answering) the oldest are dropped."""

Batch = list[tuple[str, AbuseDigest]]


def merge(local: AbuseVerdict, shared: AbuseVerdict | None) -> AbuseVerdict:
    """The more severe of the two; on a tie the one that counted more requests (usually the hub's)."""
    if shared is None:
        return local
    ls, ss = SEVERITY[local.action], SEVERITY[shared.action]
    if ls > ss or (ls == ss and local.requests_in_window >= shared.requests_in_window):
        return local
    return shared


class SharedAbuseMonitor:
    """A worker's abuse monitor: observe() as AbuseMonitor's, merged with the hub's latest verdicts."""

    def __init__(self, local: AbuseMonitor, max_pending: int = MAX_PENDING) -> None:
        self.local = local
        self._pending: deque[tuple[str, AbuseDigest]] = deque(maxlen=max_pending)
        self._shared: Mapping[str, AbuseVerdict] = {}

    def observe(self, key_id: str, traits: RequestTraits) -> AbuseVerdict:
        d = digest(traits, self.local.rules.prefix_chars)
        self._pending.append((key_id, d))
        return merge(self.local.observe_digest(key_id, d), self._shared.get(key_id))

    def take_batch(self) -> Batch:
        """The digests counted since the last batch, oldest first (the queue is emptied)."""
        batch = list(self._pending)
        self._pending.clear()
        return batch

    def apply(self, verdicts: Mapping[str, AbuseVerdict]) -> None:
        """The hub's answer: every key with a signal over all workers (a key absent has none)."""
        self._shared = dict(verdicts)

    def shared(self, key_id: str) -> AbuseVerdict | None:
        """The hub's latest verdict for the key (None: no signal over all workers, or no answer)."""
        return self._shared.get(key_id)

    def forget_shared(self) -> None:
        """The hub did not answer: local verdicts only until it does."""
        self._shared = {}


class HubAbuse:
    """The hub's side: one AbuseMonitor over every worker's digests, and the keys that have a signal."""

    def __init__(self, monitor: AbuseMonitor) -> None:
        self.monitor = monitor
        self._signalled: dict[str, AbuseVerdict] = {}

    def exchange(self, batch: Iterable[tuple[str, AbuseDigest]]) -> dict[str, AbuseVerdict]:
        """Count a worker's batch; answer the current verdict of every key with a signal (the keys this batch
        touched and those that had one, re-checked: a window that slid past its requests clears them)."""
        touched = self.monitor.count_all(batch)
        for key in touched | set(self._signalled):
            v = self.monitor.verdict(key)
            if v.signals:
                self._signalled[key] = AbuseVerdict(v.action, v.signals, v.requests_in_window, shared=True)
            else:
                self._signalled.pop(key, None)
        return self._signalled


# The wire (hub frames, orjson): a batch is [[key, prompt hash, prefix hash, greedy 0/1, probing 0/1], ...];
# the answer is {key: [action, [signals], requests in window]}.
def batch_to_wire(batch: Batch) -> list[list[Any]]:
    return [[k, d.prompt, d.prefix, int(d.greedy), int(d.probing)] for k, d in batch]


def batch_from_wire(raw: list[list[Any]]) -> Batch:
    return [(str(k), AbuseDigest(str(p), str(x), bool(g), bool(b))) for k, p, x, g, b in raw]


def verdicts_to_wire(verdicts: Mapping[str, AbuseVerdict]) -> dict[str, list[Any]]:
    return {k: [str(v.action), list(v.signals), v.requests_in_window] for k, v in verdicts.items()}


def verdicts_from_wire(raw: Mapping[str, list[Any]]) -> dict[str, AbuseVerdict]:
    return {str(k): AbuseVerdict(AbuseAction(a), tuple(str(s) for s in signals), int(n), shared=True)
            for k, (a, signals, n) in raw.items()}
