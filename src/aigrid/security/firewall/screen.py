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
prompt head reads a short prompt here first to know). One call reads at most MAX_TOGETHER texts read together across
their seams, or MAX_OTHERS other texts, or a mix in that proportion (`check_count`, under the tenant's policy): more is
the client's 400 before any is read.

The worker's queue is fair between tenants, by the work read (start-time fair queueing): the next request
is the head of the tenant that has had the least work read since it last became busy, a request's work being
its characters, PART_CHARS for each text its tenant's policy reads across its seams and TEXT_CHARS for each other
(`work`; a request counts at least `inline_chars`: a short prompt sent here costs a transformer's pass), so one
tenant's stream of 4 MiB documents (2-4 s of CPU each) delays another tenant's 3,000-character request by the request
being read and at most one request of each other busy tenant, not by the whole backlog, as a first-in-first-out queue
would. A request whose caller has
gone (cancelled: the client hung up) leaves the queue at once, unread.

The queue's wait comes before routing, so no TTFT figure holds it: `on_waiting` is told the requests waiting (not
the one being read) whenever that changes, `on_wait` each request's wait from queued to its read starting (one
dropped unread is not a wait); the gateway points them at its metrics (aigrid_firewall_queue_waiting and
aigrid_firewall_queue_wait_seconds, docs/observability.md). Texts read in place have no wait and are not told.
A hook must not raise (one raising on the worker thread would leave its job's caller waiting for ever, one raising
under the lock in check() a job queued without its turn): the gateway hands them wrapped in its one guarded metrics
writer (app.build_gateway, gateway/observe.MetricsWrites: a failed write counted and logged, rate-limited).
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
from aigrid.field_names import field_name
from aigrid.security.firewall.pipeline import (
    Action,
    Firewall,
    FirewallPolicy,
    Screened,
    WeighedTexts,
    pii_runs,
    read_across,
)
from aigrid.security.firewall.texts import Mark, ModelText, Source

INLINE_CHARS = 2_000
INLINE_TEXTS = 16
"""The most texts scored in place: personal data is read across a request's texts around each seam
(pii.read_together), at up to 2 x 56 characters a seam whatever the texts' length, so 2,000 one-character text parts
of digit groups (1,988 characters with a system prompt) held the event loop 1.56 s (0.51 s before 6c5da48b's
windows); 16 texts of 120 such characters about 20 ms. More texts go to the worker thread, whatever their length."""
PART_CHARS = 2_000
"""What reading a text costs beside its characters, in characters, where the tenant's policy reads it across its
seams with others (pipeline.read_across: personal data read around each seam of a user's texts, and of the system
prompt and tool results among them; pii.read_together, twice where a user's text is in both runs). Measured
(scripts/bench_screen_parts.py, 6 Dec 2026, load 2.3-9.5): a system prompt and 9,999 one-character user parts of
digit groups took 8.8-8.9 s of CPU in check_texts, 0.88-0.89 ms a text; one text of 400,000 characters of words
0.33-0.43 us a character as a prompt, 0.50-0.55 as a document: such a text's own cost is that of about 1,750
characters. Counted by characters only (until the thirtieth session), those 10,000 parts cost 10,000 and came before
another tenant's 20,000-character document, which takes about 10 ms."""
TEXT_CHARS = 400
"""What reading any other text costs beside its characters (where the policy reads anything): a pass of the injection
heads and of the personal-data detectors, 0.13-0.17 ms at most for a short distinct text (documents, template
variables or tool definitions of distinct words, the last a mean over a tool's two texts, base64 of them, look-alike
letters, one-character documents; a tool's definition alone costs about twice that: TOOL_CHARS):
300-320 characters of the dearest long text (scripts/bench_screen_parts.py 7000, two runs, 6 Dec 2026, load 12-15;
a text read together 0.45-0.46 ms read once, 0.88-0.90 ms twice, 1,680-1,790 characters). An agent's conversation is
mostly such texts (its calls' names and arguments, the model's turns) beside one tool result a step: 1,000 tool
steps, 7,012 texts, 774,195 characters, took 1.02-1.12 s there (review RV1's, 7,038 texts, 0.53 s), charged 5.2 million characters (at
2,000 a text, until the thirtieth session's review RV1, 14.8 million)."""
TOOL_CHARS = 2 * TEXT_CHARS
"""What reading a tool's definition (Source.TOOL_DESCRIPTION: a client's tool, a response_format's schema) costs
beside its characters where the policy reads injection: it is scored twice, as a prompt and as a document
(InjectionModel.score_tool). 19,999 client tools of distinct short names and no description (20,000 texts with the
user's "hi") took 5.09 s of CPU in check_texts, 0.254 ms a text, against 2.83 s for 20,000 documents of the same
words (a scratch of review RV7, thirtieth session, load ~6; its case is now bench_screen_parts.py's "tools of
distinct names and no description": `.venv/bin/python scripts/bench_screen_parts.py 20000`, 5.22 s, 0.261 ms a text,
against 2.90 s for the documents, load 2.4-3.3, final review F2); charged TEXT_CHARS they passed the bound
(MAX_OTHERS) and held the worker longer than it means to (bench_screen_parts.py's "tool definitions" case is two texts
a tool, the description's own text the cheap one, so its mean hid it). Now at most 10,000
such definitions are read in one call, about 2.5 s at that rate."""
MAX_TOGETHER = 4_000
"""The most texts read together across their seams (PART_CHARS) that one call reads, a request's own texts or a tool's
result; other texts (TEXT_CHARS) count PART_CHARS / TEXT_CHARS to one of them, so a call of no such text reads at most
MAX_OTHERS. More is the client's 400 `too_many_texts` naming the field the bound is passed at, before any text is read
(`check_count`). At 0.88 ms a text read together at worst, 4,000 take about 3.5 s of the worker (`.venv/bin/python
scripts/bench_screen_parts.py 4000`: 3.50 s, load 7.3), as long as the longest text a body may hold (a 4 MiB prompt
with a pasted part, 3.3-3.9 s: docs/security.md, "Cost"); 20,000 other texts at 0.17 ms about 3.4 s (10,000 tools' definitions, TOOL_CHARS, about 2.5 s). A tenant whose
policy reads nothing (injection and personal data off) is not bounded here: its messages and content parts are bounded
before this, as JSON (gateway.schemas.MAX_PARTS, 10,000), as everyone's are. Until the thirtieth session's review RV1
the bound was 4,000 texts of any kind for every tenant: an agent's conversation of about 570 tool steps (1,140
messages; OpenAI's API takes 2,048) was refused, its texts costing the worker about 0.3 s."""
MAX_OTHERS = MAX_TOGETHER * PART_CHARS // TEXT_CHARS
assert INLINE_TEXTS <= MAX_TOGETHER  # Screen.check reads that many in place without check_count
log = logging.getLogger(__name__)


def weights(policy: FirewallPolicy, texts: Sequence[ModelText], runs: list[list[int]] | None = None) -> list[int]:
    """What reading each of `texts` under `policy` costs beside its characters, in characters: PART_CHARS for a text
    read across its seams (pipeline.read_across), TOOL_CHARS for a tool's definition where injection is read,
    TEXT_CHARS for another; nothing where the policy reads nothing. `runs`: pipeline.pii_runs(policy, texts), where
    the caller has them."""
    if not policy.reads_input:
        return [0] * len(texts)
    together = read_across(policy, texts, runs)
    tool = TOOL_CHARS if policy.injection != Action.OFF else TEXT_CHARS
    described = Source.TOOL_DESCRIPTION  # looked up once, compared by identity: an enum's == and lookup per text
    weighed = [tool if t.source is described else TEXT_CHARS for t in texts]
    for i in together:
        weighed[i] = PART_CHARS
    return weighed


def check_count(policy: FirewallPolicy, texts: Sequence[ModelText], runs: list[list[int]] | None = None) -> list[int]:
    """The texts' `weights`, unless they pass MAX_TOGETHER texts read together (MAX_OTHERS others): then the client's
    400, naming the field of the text at which they pass it (a chat message by its index, which each front door
    names by its own field: gateway/front_door.name_own_field)."""
    weighed = weights(policy, texts, runs)
    bound, total = MAX_TOGETHER * PART_CHARS, 0
    # the cheap checks first (no text weighs more than PART_CHARS; then the sum): the walk below, naming where the
    # bound is passed, only for a request over it (this check runs on the event loop, for every request)
    if len(texts) * PART_CHARS <= bound or sum(weighed) <= bound:
        return weighed
    for i, weight in enumerate(weighed):
        total += weight
        if total > bound:
            together = sum(1 for w in weighed if w == PART_CHARS)
            path = texts[i].path
            field = tuple(p for p in (path[:2] if path[:1] == ("messages",) and len(path) > 1 else path[:1])
                          if not isinstance(p, Mark))
            where = field_name(field) or None
            raise InvalidRequest(f"{f'{where}: ' if where else ''}this request holds {len(texts):,} separate texts "
                                 f"for the model to read, {together:,} of them read together across their seams (a "
                                 "user's text parts and turns, and the system prompt and tool results among them); at "
                                 f"most {MAX_TOGETHER:,} such texts, or {MAX_OTHERS:,} others (a tool's definition "
                                 "counts as two), or a mix in that proportion, are read per request: join them, or "
                                 "send fewer", param=field or None, code="too_many_texts")
    return weighed


def work(texts: Sequence[ModelText], weighed: Sequence[int]) -> int:
    """What reading `texts` costs the worker, in characters: their characters and each one's weight (`weights`)."""
    return sum(len(t.text) for t in texts) + sum(weighed)


@dataclass(eq=False, slots=True)
class _Job:
    tenant: str
    texts: WeighedTexts
    """With their pii_runs under the tenant's policy (worked out once, to weigh them, and read by check_texts)."""
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
        """Told the requests waiting for the worker (not the one it reads) whenever that changes, under the lock;
        never raises (the module's docstring)."""
        self.on_wait: Callable[[float], None] | None = None
        """Told each request's wait in seconds, from queued to its read starting, on the worker thread; never
        raises (the module's docstring)."""
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
        """The verdicts on `texts` (Firewall.check_texts), read in place or on the worker thread; more than the
        tenant's policy reads in one call (MAX_TOGETHER), the client's 400 (InvalidRequest, `too_many_texts`) before
        any is read."""
        chars = sum(len(t.text) for t in texts)
        # read in place: at most INLINE_TEXTS texts, never past the bound (each weighs at most PART_CHARS), so
        # their weights are not worked out on the event loop for them
        if chars <= self.inline_chars and len(texts) <= INLINE_TEXTS and not self.firewall.reads_slowly(tenant, texts):
            return self.firewall.check_texts(tenant, texts)
        policy = self.firewall.policy(tenant)
        runs = pii_runs(policy, texts)
        weighed = check_count(policy, texts, runs)
        loop = asyncio.get_running_loop()
        with self._lock:
            self._seq += 1
            job = _Job(tenant, WeighedTexts(texts, runs), work(texts, weighed), loop, loop.create_future(), self._seq,
                       self.clock())
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
