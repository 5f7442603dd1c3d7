"""The choke point: every text a model will read passes through `Screen.check` before it reaches an engine.

    texts = [ModelText(text, Source.USER, ("messages", 0, "content")), ...]   # or a tool's result
    screened = await screen.check(tenant, texts)
    screened.raise_if_blocked()      # request texts: 400 firewall_blocked naming the field
    ... forward screened.texts (PII redacted where the tenant's policy says)

Callers: the chat and completion routes (gateway/model_texts.py turns each request shape into texts), the
agent loop for every server-side tool, MCP, retrieval and web result (agents/loop.py), and any new front
door. Cost: scoring is pure Python (about 1 ms per 1,000 characters); inputs up to `inline_chars` in at most
INLINE_TEXTS texts are scored in place (well under a millisecond), others on one worker thread, so the event loop keeps
serving other requests while a 4 MiB body is read (the thread gives the interpreter back every switch
interval). One worker: big inputs queue behind each other instead of multiplying the contention. With the
document cascade on (cascade.py), every text its transformer may read (documents, tool results, pasted parts)
goes to that worker whatever its size; with the prompt cascade on, every prompt of its grey zone (the n-gram
prompt head reads a short prompt here first to know). One call reads at most MAX_TEXTS texts: more is the client's
400 before any is read.

The worker's queue is fair between tenants, by the work read (start-time fair queueing): the next request
is the head of the tenant that has had the least work read since it last became busy, a request's work being
its characters and PART_CHARS for each of its texts (`work`; a request counts at least `inline_chars`: a short
prompt sent here costs a transformer's pass), so one tenant's stream of 4 MiB documents (2-4 s of CPU each)
delays another tenant's 3,000-character request by the request being read and at most one request of each
other busy tenant, not by the whole backlog, as a first-in-first-out queue would. A request whose caller has
gone (cancelled: the client hung up) leaves the queue at once, unread.

The queue's wait comes before routing, so no TTFT figure holds it: `on_waiting` is told the requests waiting (not
the one being read) whenever that changes, `on_wait` each request's wait from queued to its read starting (one
dropped unread is not a wait); the gateway points them at its metrics (aigrid_firewall_queue_waiting and
aigrid_firewall_queue_wait_seconds, docs/observability.md). Texts read in place have no wait and are not told.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aigrid.errors import InvalidRequest
from aigrid.security.firewall.pipeline import Firewall, Screened
from aigrid.security.firewall.texts import ModelText, render

INLINE_CHARS = 2_000
INLINE_TEXTS = 16
"""The most texts scored in place: personal data is read across a request's texts around each seam
(pii.read_together), at up to 2 x 56 characters a seam whatever the texts' length, so 2,000 one-character text parts
of digit groups (1,988 characters with a system prompt) held the event loop 1.56 s (0.51 s before 6c5da48b's
windows); 16 texts of 120 such characters about 20 ms. More texts go to the worker thread, whatever their length."""
MAX_TEXTS = 4_000
"""The most texts one call reads (a request's own texts, or a tool's result): more is the client's 400
`too_many_texts` naming the field the first text past it is in, before any is read (`check_count`). Reading costs
per text (PART_CHARS): at 0.88 ms a text at worst (a system prompt and one-character user parts of digit groups,
scripts/bench_screen_parts.py), 4,000 texts take about 3.5 s of the worker, as long as the longest text a body
may hold (a 4 MiB prompt with a pasted part, 3.3-3.9 s: docs/security.md, "Cost"); at 10,000 (the bound until the
thirtieth session: the gateway's model_texts.MAX_TEXTS, which no other caller of the screen went through) they
took 8.8-8.9 s, and every other tenant's request queued behind them. A request's messages and content parts are
bounded before this, as JSON (gateway.schemas.MAX_PARTS, 10,000)."""
PART_CHARS = 2_000
"""What the fair queue charges for each text of a request beside its characters (`work`): reading costs per text as
well as per character, and the texts' seams most (personal data is read around each seam, pii.read_together, twice
where a system prompt or tool result sits among the user's texts). Measured (scripts/bench_screen_parts.py, 6 Dec
2026, load 2.3-9.5): a system prompt and 9,999 one-character user parts of digit groups took 8.8-8.9 s of CPU in
check_texts, 0.88-0.89 ms a text; one text of 400,000 characters of words 0.33-0.43 us a character as a prompt,
0.50-0.55 as a document: a text's own cost is that of about 1,750 characters. Counted by characters only (until the
thirtieth session), those 10,000 parts cost 10,000 and came before another tenant's 20,000-character document, which
takes about 10 ms."""
log = logging.getLogger(__name__)


def check_count(texts: Sequence[ModelText]) -> None:
    """The client's 400 for more than MAX_TEXTS texts, naming the field the first text past the limit is in."""
    if len(texts) > MAX_TEXTS:
        field = texts[MAX_TEXTS].path[:1]
        where = render(field) if field else None
        raise InvalidRequest(f"this request holds {len(texts):,} separate texts for the model to read"
                             f"{f' (up to {where})' if where else ''}; at most {MAX_TEXTS:,} are read per request: "
                             "join them, or send fewer", param=where, code="too_many_texts")


def work(texts: Sequence[ModelText]) -> int:
    """What reading `texts` costs the worker, in characters: their characters and PART_CHARS a text."""
    return sum(len(t.text) for t in texts) + PART_CHARS * len(texts)


@dataclass(eq=False, slots=True)
class _Job:
    tenant: str
    texts: list[ModelText]
    work: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Screened]
    seq: int
    queued: float


class Screen:
    def __init__(self, firewall: Firewall, *, inline_chars: int = INLINE_CHARS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.firewall = firewall
        self.inline_chars = inline_chars
        self.clock = clock
        self.on_waiting: Callable[[int], None] | None = None
        """Told the requests waiting for the worker (not the one it reads) whenever that changes, under the lock."""
        self.on_wait: Callable[[float], None] | None = None
        """Told each request's wait in seconds, from queued to its read starting, on the worker thread."""
        self._waiting = 0
        self._pool: ThreadPoolExecutor | None = None  # threads start on first use, not here
        self._lock = threading.Lock()
        self._jobs: dict[str, deque[_Job]] = {}
        """Tenant -> its texts waiting to be read, first in first out; a tenant with none has no entry."""
        self._read: dict[str, float] = {}
        """Tenant -> virtual work read (`work`, in characters): its place in the fair order."""
        self._clock = 0.0
        """Virtual time: the start of the job read last (never decreases)."""
        self._seq = 0
        self._reading = False

    async def check(self, tenant: str, texts: Sequence[ModelText]) -> Screened:
        """The verdicts on `texts` (Firewall.check_texts), read in place or on the worker thread; more than MAX_TEXTS
        of them, the client's 400 (InvalidRequest, `too_many_texts`) before any is read."""
        check_count(texts)
        chars = sum(len(t.text) for t in texts)
        if chars <= self.inline_chars and len(texts) <= INLINE_TEXTS and not self.firewall.reads_slowly(tenant, texts):
            return self.firewall.check_texts(tenant, texts)
        loop = asyncio.get_running_loop()
        with self._lock:
            self._seq += 1
            job = _Job(tenant, list(texts), work(texts), loop, loop.create_future(), self._seq, self.clock())
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aigrid-firewall")
            if not self._reading and not self._jobs:
                self._clock = max([self._clock, *self._read.values()])  # idle: every tenant is caught up
            waiting = self._jobs.get(tenant)
            if waiting is None:
                # busy again: from now, not from its idle past (nor ahead of the tenants already waiting)
                self._read[tenant] = max(self._read.get(tenant, 0.0), self._clock)
                waiting = self._jobs[tenant] = deque()
            waiting.append(job)
            self._count(1)
            self._pool.submit(self._read_next)  # one turn per job: each turn reads the fairest head
        try:
            return await job.future
        except asyncio.CancelledError:
            self._drop(job)  # its caller has gone: the text leaves the queue now, unread and uncharged
            raise

    def _drop(self, job: _Job) -> None:
        with self._lock:
            waiting = self._jobs.get(job.tenant)
            if waiting is not None and job in waiting:
                waiting.remove(job)
                self._count(-1)
                if not waiting:
                    del self._jobs[job.tenant]

    def _count(self, change: int) -> None:
        """The requests waiting moved by `change` (under the lock)."""
        self._waiting += change
        if self.on_waiting is not None:
            self.on_waiting(self._waiting)

    def _read_next(self) -> None:
        with self._lock:
            if not self._jobs:
                return  # its job was dropped (caller gone) or the screen closed
            tenant = min(self._jobs, key=lambda t: (self._read[t], self._jobs[t][0].seq))
            waiting = self._jobs[tenant]
            job = waiting.popleft()
            self._count(-1)
            if not waiting:
                del self._jobs[tenant]
            self._clock = max(self._clock, self._read[tenant])
            # at least inline_chars: a short prompt of the cascade's grey zone costs a transformer's pass
            self._read[tenant] += max(job.work, self.inline_chars)
            self._reading = True
        if self.on_wait is not None:
            self.on_wait(self.clock() - job.queued)
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
            pending = [job for waiting in self._jobs.values() for job in waiting]
            self._jobs.clear()
            self._count(-len(pending))
            pool, self._pool = self._pool, None
        for job in pending:
            try:
                job.loop.call_soon_threadsafe(job.future.cancel)
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
