"""The event log of a background Response created with `stream: true`: its Responses events (SSE, each with
its `sequence_number`, which is its index in the log), so that the create's own stream and any later
`GET /v1/responses/{id}?stream=true&starting_after=N` (on any worker or gateway replica) read the same
events, while the run goes on whoever listens (responses_api.py writes and follows it).

The log is one of the ResponseBook's records (stores.py): `events_append`, `events_read`, `events_delete`,
kept in this process's memory (`EventLogs`, below: a gateway's, or with --workers N the hub's), or in a
Redis (stores_redis.py: one Redis Stream per response). It is written only by the run that owns the
response, in order; readers poll it (`FOLLOW_POLL_S`) until its last event. One exception: when that run's
process died (its owner's lease ended, background.py), the reader that fails the response writes the log's
last event (`response.failed`) in its place.

Bounds, the same everywhere:
- per response, `MAX_EVENTS` events and `MAX_BYTES` bytes (`LogWriter` counts): past either, the log ends
  with an `error` event (code `event_log_full`) and takes nothing more; the run goes on and its answer is
  stored as usual (GET without stream reads it);
- in memory in all, `MAX_TOTAL_BYTES` (each log weighing LOG_OVERHEAD more than its events), the oldest log
  of the tenant holding the most out first (fair_lru.py; a reader of an evicted log gets an `error` event,
  code `event_log_gone`, and its stream ends; the run's next append is refused and logged); in Redis each stream
  expires with the placeholder and stored responses (`gateway.store_ttl_days`, renewed by every append),
  counts in its tenant's bound there (`gateway.store_tenant_max_bytes`, the tenant's oldest records out first),
  and the Redis's `maxmemory` bounds them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from aigrid.engines.sse import encode
from aigrid.errors import StoreUnavailable
from aigrid.gateway.fair_lru import FairLru

log = logging.getLogger("aigrid.gateway")

MAX_EVENTS = 32_768
"""Events one response's log holds at most (an answer of a few thousand tokens is as many deltas)."""
MAX_BYTES = 8 * 1024 * 1024
"""Bytes of events one response's log holds at most."""
MAX_TOTAL_BYTES = 256 * 1024 * 1024
"""What one process's memory (a gateway's, the hub's) holds of all logs."""
LOG_OVERHEAD = 512
"""What a log weighs besides its events (so that the budget bounds their number too: 524,288 at most)."""
READ_MAX = 512
"""Events one read returns at most."""
FOLLOW_POLL_S = 0.05
"""How often a reader asks for new events while the log has none."""
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
"""The events that end a Response's stream."""


def split(chunk: bytes) -> list[str]:
    """The SSE events of one chunk of responses_stream's output (LF-framed, one data line each: JSON)."""
    return [part.decode() + "\n\n" for part in chunk.split(b"\n\n") if part.strip()]


def kind_of(event: str) -> str:
    """An event's type, from its `event:` line."""
    return event.split("\n", 1)[0].removeprefix("event: ")


def event(kind: str, seq: int, **data: object) -> str:
    return encode(orjson.dumps({"type": kind, "sequence_number": seq, **data}), event=kind.encode()).decode()


@dataclass(slots=True)
class _Log:
    events: list[str] = field(default_factory=list)
    ended: bool = False


class EventLogs:
    """The logs kept in this process's memory (MemoryResponses, the hub): at most `max_bytes` in all, each log
    weighing its events' bytes and LOG_OVERHEAD; over budget the tenant holding the most loses its oldest log
    first (fair_lru.FairLru: one tenant's streams cannot evict the others')."""

    def __init__(self, max_bytes: int = MAX_TOTAL_BYTES) -> None:
        self._logs: FairLru[_Log] = FairLru(max_bytes)

    def append(self, tenant: str, rid: str, first: int, events: list[str], ended: bool) -> None:
        """`events` as numbers first, first + 1...; `ended`: the last of them is the log's last. A number
        out of order (a log evicted meanwhile) is refused: ValueError."""
        log = self._logs.get(tenant, rid)
        if log is None:
            if first != 0:
                raise ValueError(f"the event log of {rid} is gone (evicted)")
            log = _Log()
            self._logs.put(tenant, rid, log, LOG_OVERHEAD)
        if first != len(log.events) or log.ended:
            raise ValueError(f"event {first} of {rid} out of order (the log has {len(log.events)}, "
                             f"{'ended' if log.ended else 'open'})")
        size = sum(len(e) for e in events)
        log.events += events
        log.ended = ended
        self._logs.resize(tenant, rid, size)

    def read(self, tenant: str, rid: str, after: int, limit: int = READ_MAX) -> tuple[list[str], bool] | None:
        """The events numbered after `after` (at most `limit`), and whether they reach the log's end; None: no
        log."""
        log = self._logs.get(tenant, rid)
        if log is None:
            return None
        got = log.events[after + 1: after + 1 + limit]
        return got, log.ended and after + 1 + len(got) >= len(log.events)

    def next(self, tenant: str, rid: str) -> tuple[int, bool] | None:
        """The number its next event would take, and whether it has ended; None: no log."""
        log = self._logs.get(tenant, rid)
        return None if log is None else (len(log.events), log.ended)

    def delete(self, tenant: str, rid: str) -> bool:
        return self._logs.pop(tenant, rid) is not None


class Appender(Protocol):
    async def events_append(self, tenant: str, rid: str, first: int, events: list[str], ended: bool) -> None: ...


class LogWriter:
    """The one writer of a response's log (its run): numbers the events, keeps the bounds. A store that does
    not take an append is logged and the log written no further (its readers end it from the response's
    final status: responses_api.ResponsesApi._follow)."""

    def __init__(self, store: Appender, tenant: str, rid: str, max_events: int = MAX_EVENTS,
                 max_bytes: int = MAX_BYTES) -> None:
        self.store, self.tenant, self.rid = store, tenant, rid
        self.next = 0
        self.size = 0
        self.ended = False
        self._max_events, self._max_bytes = max_events, max_bytes

    async def open(self, events: list[str]) -> None:
        """The log's first events, written before its response is announced: a store that does not take
        them refuses the create (StoreUnavailable, 503)."""
        await self.store.events_append(self.tenant, self.rid, 0, events, False)
        self.next, self.size = len(events), sum(len(e) for e in events)

    async def write(self, events: list[str], *, last: bool = False) -> None:
        """Append `events` (numbered from self.next: their sequence_numbers must be those); `last`: the log
        ends with them. Past the bounds, an `error` event (code event_log_full) ends the log instead."""
        if self.ended or not events:
            return
        size = sum(len(e) for e in events)
        if self.next + len(events) > self._max_events or self.size + size > self._max_bytes:
            log.warning("background response %s: its event log is full (%d events, %d bytes; at most %d, %d): "
                        "it ends here, the run goes on and its answer is stored", self.rid, self.next, self.size,
                        self._max_events, self._max_bytes)
            events, last = [event("error", self.next, code="event_log_full", param=None,
                                  message="this response's event log is full; retrieve the response without "
                                          "stream once it has ended")], True
            size = len(events[0])
        try:
            await self.store.events_append(self.tenant, self.rid, self.next, events, last)
        except (StoreUnavailable, ConnectionError, ValueError) as e:
            log.error("background response %s: its event log could not be written (%s): it is written no further; "
                      "its readers end with its final status", self.rid, e)
            self.ended = True
            return
        self.next += len(events)
        self.size += size
        self.ended = last
