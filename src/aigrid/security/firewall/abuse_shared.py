"""Abuse signals over every worker's requests of a key (`aigrid up|gateway --workers N`).

Each worker keeps its own AbuseMonitor for an immediate verdict and queues the digest of every request it
counted (key id, prompt and prefix hashes, two flags: no text). Once per batch interval the worker sends the
queue to its hub in one frame (gateway/abuse_sync.py); the hub counts every worker's digests in one
AbuseMonitor (`HubAbuse`, the same window logic) and answers what changed since that worker's previous
answer (a key's new verdict, or that it has no signal any more), or the whole set of keys with a signal
when the worker is new or too far behind. A worker's verdict for a key is the more severe of its own and
the hub's latest. An exchange costs the batch and the keys whose verdict changed, not every key with a
signal; a key whose window slides past its requests is re-checked within RECHECK_S.

The request path does no I/O: one deque append and one dict lookup more than a lone gateway. The hub's
view of the other workers' requests is at most two batch intervals old (their next send, then this
worker's next answer). Those are each worker's own intervals, not one clock: a worker whose event loop runs late
(starved of CPU, or busy) sends its digests late, and every worker learns of its requests that much later; it
takes its own verdicts late too. A key's requests on the workers that keep time are counted on time whatever
one worker does (tests/gateway/test_workers.py counts each worker's exchanges apart). Without an answer from the
hub the worker answers from its own monitor alone.
No clock crosses processes: the hub counts a digest at the time it arrives (at most one interval late).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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

RECHECK_S = 1.0
"""How often the hub re-checks every key with a signal (a window that slid past its requests clears it)."""
KEEP_CHANGES_S = 30.0
"""How long the hub remembers a change for workers' next answers; a worker further behind gets all."""

Batch = list[tuple[str, AbuseDigest]]


@dataclass(frozen=True, slots=True)
class SharedVerdicts:
    """The hub's answer to one batch."""

    seq: int
    """The hub's change counter now: the worker's `since` in its next batch."""
    full: bool
    """True: `verdicts` is every key with a signal (replace); False: the changes since `since` (apply)."""
    verdicts: Mapping[str, AbuseVerdict | None]
    """key -> its verdict over all workers, or None: no signal any more."""


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
        self._shared: dict[str, AbuseVerdict] = {}
        self.since = 0
        """The hub's change counter at its last answer (0: none yet, or lost: ask for everything)."""

    def observe(self, key_id: str, traits: RequestTraits) -> AbuseVerdict:
        d = digest(traits, self.local.rules.prefix_chars)
        self._pending.append((key_id, d))
        return merge(self.local.observe_digest(key_id, d), self._shared.get(key_id))

    def take_batch(self) -> Batch:
        """The digests counted since the last batch, oldest first (the queue is emptied)."""
        batch = list(self._pending)
        self._pending.clear()
        return batch

    def apply(self, answer: SharedVerdicts) -> None:
        if answer.full:
            self._shared = {k: v for k, v in answer.verdicts.items() if v is not None}
        else:
            for key, v in answer.verdicts.items():
                if v is None:
                    self._shared.pop(key, None)
                else:
                    self._shared[key] = v
        self.since = answer.seq

    def shared(self, key_id: str) -> AbuseVerdict | None:
        """The hub's latest verdict for the key (None: no signal over all workers, or no answer)."""
        return self._shared.get(key_id)

    def forget_shared(self) -> None:
        """The hub did not answer: local verdicts only until it does (then everything again)."""
        self._shared = {}
        self.since = 0


class HubAbuse:
    """The hub's side: one AbuseMonitor over every worker's digests, the keys that have a signal, and the
    recent changes of their verdicts (the workers' answers)."""

    def __init__(self, monitor: AbuseMonitor) -> None:
        self.monitor = monitor
        self._signalled: dict[str, AbuseVerdict] = {}
        self._changes: OrderedDict[str, tuple[int, float]] = OrderedDict()
        """key -> (seq, time) of its verdict's last change, oldest first."""
        self._seq = 0
        self._floor = 0
        """Changes up to this seq are forgotten: a worker that has seen less gets the full set."""
        self._rechecked_at = float("-inf")

    def exchange(self, since: int, batch: Iterable[tuple[str, AbuseDigest]]) -> SharedVerdicts:
        """Count a worker's batch; answer what changed after `since` (the worker's last answer), or every
        key with a signal when the worker has seen nothing yet or is behind what is remembered."""
        self.absorb(batch)
        if since <= 0 or since < self._floor or since > self._seq:
            return SharedVerdicts(self._seq, True, dict(self._signalled))
        changed: dict[str, AbuseVerdict | None] = {}
        for key, (seq, _) in reversed(self._changes.items()):
            if seq <= since:
                break
            changed[key] = self._signalled.get(key)
        return SharedVerdicts(self._seq, False, changed)

    def absorb(self, batch: Iterable[tuple[str, AbuseDigest]]) -> None:
        """Count digests (a worker's batch, or other gateways' through Redis) and record the verdicts they
        change."""
        now = self.monitor.clock()
        touched = self.monitor.count_all(batch)
        if now - self._rechecked_at >= RECHECK_S:
            touched |= set(self._signalled)
            self._rechecked_at = now
        for key in touched:
            self._update(key, now)
        while self._changes:
            key, (seq, at) = next(iter(self._changes.items()))
            if at > now - KEEP_CHANGES_S:
                break
            del self._changes[key]
            self._floor = seq

    def _update(self, key: str, now: float) -> None:
        v = self.monitor.verdict(key)
        if v.signals:
            new = AbuseVerdict(v.action, v.signals, v.requests_in_window, shared=True)
            if self._signalled.get(key) == new:
                return
            self._signalled[key] = new
        elif self._signalled.pop(key, None) is None:
            return  # no signal before, none now
        self._seq += 1
        self._changes[key] = (self._seq, now)
        self._changes.move_to_end(key)


# The wire (hub frames, orjson): a request is {"since": seq, "batch": [[key, prompt hash, prefix hash,
# greedy 0/1, probing 0/1], ...]}; the answer {"seq": seq, "full": bool, "verdicts": {key: [action,
# [signals], requests in window] or null}}.
def batch_to_wire(batch: Batch) -> list[list[Any]]:
    return [[k, d.prompt, d.prefix, int(d.greedy), int(d.probing)] for k, d in batch]


def batch_from_wire(raw: Any) -> Batch:
    """Raises ValueError for anything but a list of [key, prompt hash, prefix hash, 0/1, 0/1] (a batch no
    gateway or worker wrote)."""
    if not isinstance(raw, list):
        raise ValueError(f"a batch is a list, not {type(raw).__name__}")
    batch: Batch = []
    for row in raw:
        if not (isinstance(row, list) and len(row) == 5 and all(isinstance(v, str) for v in row[:3])
                and all(type(v) in (int, bool) and v in (0, 1) for v in row[3:])):
            raise ValueError("a digest is [key, prompt hash, prefix hash, 0/1, 0/1]")
        k, p, x, g, b = row
        batch.append((k, AbuseDigest(p, x, bool(g), bool(b))))
    return batch


def request_to_wire(since: int, batch: Batch) -> dict[str, Any]:
    return {"since": since, "batch": batch_to_wire(batch)}


def request_from_wire(raw: Mapping[str, Any]) -> tuple[int, Batch]:
    return int(raw["since"]), batch_from_wire(raw["batch"])


def answer_to_wire(answer: SharedVerdicts) -> dict[str, Any]:
    return {"seq": answer.seq, "full": answer.full, "verdicts": {
        k: None if v is None else [str(v.action), list(v.signals), v.requests_in_window]
        for k, v in answer.verdicts.items()}}


def answer_from_wire(raw: Mapping[str, Any]) -> SharedVerdicts:
    return SharedVerdicts(int(raw["seq"]), bool(raw["full"]), {
        str(k): None if v is None else AbuseVerdict(AbuseAction(v[0]), tuple(str(s) for s in v[1]), int(v[2]),
                                                    shared=True)
        for k, v in raw["verdicts"].items()})
