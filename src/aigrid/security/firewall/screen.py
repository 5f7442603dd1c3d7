"""The choke point: every text a model will read passes through `Screen.check` before it reaches an engine.

    texts = [ModelText(text, Source.USER, ("messages", 0, "content")), ...]   # or a tool's result
    screened = await screen.check(tenant, texts)
    screened.raise_if_blocked()      # request texts: 400 firewall_blocked naming the field
    ... forward screened.texts (PII redacted where the tenant's policy says)

Callers: the chat and completion routes (gateway/model_texts.py turns each request shape into texts), the
agent loop for every server-side tool, MCP, retrieval and web result (agents/loop.py), and any new front
door. Cost: scoring is pure Python (about 1 ms per 1,000 characters); inputs up to `inline_chars` are
scored in place (well under a millisecond), larger ones on one worker thread, so the event loop keeps
serving other requests while a 4 MiB body is read (the thread gives the interpreter back every switch
interval). One worker: big inputs queue behind each other instead of multiplying the contention. With the
document cascade on (cascade.py), every text its transformer may read (documents, tool results, pasted parts)
goes to that worker whatever its size; with the prompt cascade on, every prompt of its grey zone (the n-gram
prompt head reads a short prompt here first to know).

The worker's queue is fair between tenants, by characters read (start-time fair queueing on the admission
queue's structure, core.fair_queue): the next job is the head of the tenant that has had the fewest characters
read, counted from the virtual time at which it last became busy, so one tenant's stream of 4 MiB documents
(7 s of CPU each) delays another tenant's 3,000-character request by at most the one job being read, not by
the whole backlog, as a first-in-first-out queue would. A job whose caller has gone (cancelled, e.g. the
client hung up) is dropped unread when its turn comes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aigrid.core.fair_queue import FairQueue
from aigrid.security.firewall.pipeline import Firewall, Screened
from aigrid.security.firewall.texts import ModelText

INLINE_CHARS = 2_000
log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class _Job:
    tenant: str
    texts: list[ModelText]
    chars: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Screened]


class Screen:
    def __init__(self, firewall: Firewall, *, inline_chars: int = INLINE_CHARS) -> None:
        self.firewall = firewall
        self.inline_chars = inline_chars
        self._pool: ThreadPoolExecutor | None = None  # threads start on first use, not here
        self._lock = threading.Lock()
        self._queue: FairQueue[_Job] = FairQueue(capacity=1 << 62)  # what requests in flight send; none is shed
        self._read: dict[str, float] = {}
        """Tenant -> virtual characters read: its place in the fair order."""
        self._clock = 0.0
        """Virtual time: the start of the job read last (never decreases)."""
        self._waiting: dict[str, int] = {}
        self._reading = False

    async def check(self, tenant: str, texts: Sequence[ModelText]) -> Screened:
        chars = sum(len(t.text) for t in texts)
        if chars <= self.inline_chars and not self.firewall.reads_slowly(tenant, texts):
            return self.firewall.check_texts(tenant, texts)
        loop = asyncio.get_running_loop()
        job = _Job(tenant, list(texts), chars, loop, loop.create_future())
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aigrid-firewall")
            if not self._reading and not len(self._queue):
                self._clock = max([self._clock, *self._read.values()])  # idle: every tenant is caught up
            if not self._waiting.get(tenant):
                # busy again: from now, not from its idle past (nor ahead of the tenants already waiting)
                self._read[tenant] = max(self._read.get(tenant, 0.0), self._clock)
            self._waiting[tenant] = self._waiting.get(tenant, 0) + 1
            self._queue.push(job, tenant, 0, time.monotonic(), float("inf"))
            self._pool.submit(self._read_next)  # one turn per job: each turn reads the fairest head
        return await job.future

    def _read_next(self) -> None:
        with self._lock:
            heads = self._queue.order(self._read.__getitem__)
            if not heads:
                return  # closed meanwhile
            item = heads[0]
            self._queue.remove(item)
            job = item.payload
            self._waiting[job.tenant] -= 1
            self._clock = max(self._clock, self._read[job.tenant])
            self._read[job.tenant] += job.chars
            if job.future.cancelled():
                return  # its caller has gone: nobody reads the verdict
            self._reading = True
        try:
            outcome: Screened | BaseException = self.firewall.check_texts(job.tenant, job.texts)
        except Exception as exc:  # noqa: BLE001 - the caller raises it, as if it had run in place
            outcome = exc
        finally:
            self._reading = False
        try:
            job.loop.call_soon_threadsafe(_settle, job.future, outcome)
        except RuntimeError:  # its event loop has closed
            log.warning("firewall: a verdict for tenant %s had no event loop left to go to", job.tenant)

    def close(self) -> None:
        with self._lock:
            pending = self._queue.items()
            for item in pending:
                self._queue.remove(item)
            self._waiting.clear()
            pool, self._pool = self._pool, None
        for item in pending:
            try:
                item.payload.loop.call_soon_threadsafe(item.payload.future.cancel)
            except RuntimeError:
                pass  # its event loop has closed: nobody waits on it
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _settle(future: asyncio.Future[Screened], outcome: Screened | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
