"""Forward one routed request to its endpoint and stream the answer back, without losing it on failure.

1. Before the first byte: for each candidate of the decision's ranking (at most max_attempts), wait half the
   emulated network round trip (demo only), open the upstream request, read its first chunk and wait the other
   half (the prompt is booked as arriving at the engine between the two, where the predictor places it). Any failure
   is invisible to the client: the endpoint is charged a failure (circuit breaker) and the next is tried.
2. Hedging (optional, per policy): when the first byte is late against the prediction, a second attempt
   starts at the next candidate; the first to answer wins, the loser is cancelled, both are counted.
   A request with a deadline fails over (or hedges, or escalates) only to a candidate predicted to answer within
   what is left of it (DecisionRecord.deadline); when none is left, 503 deadline_unmeetable.
3. After the first byte the response is committed (relay.py): SSE is relayed in whole events, the engine's
   own bytes whenever no check changes them. If the engine dies mid-stream, the answer continues on the
   next candidate of the same model family (same decision, so same residency and tenant rules) from
   exactly where the client is (continuation.py); if that cannot be done exactly, the stream ends with an
   OpenAI-style error event, never silently.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import Counter
from starlette.responses import Response

from aigrid.agents.engine_refusal import raise_for_server_error
from aigrid.content_coding import coded
from aigrid.core.types import Candidate, Decision
from aigrid.engines.legacy_completions import COMPLETIONS_PATH
from aigrid.engines.protocol import Engine, UpstreamResponse
from aigrid.engines.sse import encode
from aigrid.engines.trace_context import TRACE_HEADERS
from aigrid.engines.wrapped import WrappedEngine, read_whole
from aigrid.errors import (
    RETRY_WAIT_MAX_S,
    ApiError,
    DeadlineUnmeetable,
    EngineError,
    EngineFailedAfterActing,
    EngineStreamBroken,
    EngineUnavailable,
    UpstreamFailed,
    retry_after_s,
)
from aigrid.gateway.background import CANCELLED as BACKGROUND_CANCELLED
from aigrid.gateway.cache_salt import CacheSalt
from aigrid.gateway.continuation import Delivered, continuation_body, why_not_continuable
from aigrid.gateway.decisions import DecisionRecord, attempt_error
from aigrid.gateway.engine_body import bound_output, for_engine
from aigrid.gateway.engine_errors import engine_refusal
from aigrid.gateway.engine_names import EngineNames
from aigrid.gateway.escalation import (
    H_CONFIDENCE,
    H_ESCALATED_FROM,
    Escalation,
    confidence,
    parse,
    without_logprobs,
)
from aigrid.gateway.metrics import GatewayMetrics, add_child, observe_child
from aigrid.gateway.observe import MetricsWrites
from aigrid.gateway.output_filter import OutputFilter
from aigrid.gateway.relay import StreamRelay, completion_ids, model_named
from aigrid.gateway.relay_response import CLIENT_GONE, RelayResponse
from aigrid.gateway.request_info import CONTEXT_STOPPED_KINDS, OutputBound
from aigrid.gateway.schemas import output_limit
from aigrid.gateway.usage import NotAnAnswer, whole_answer, whole_max_bytes
from aigrid.logs import fields
from aigrid.spec.models import GatewaySpec
from aigrid.telemetry.store import TelemetryStore

Sleep = Callable[[float], Awaitable[None]]
Wrap = Callable[[Engine, Candidate], Engine]
"""Wraps the chosen endpoint's engine for one request (the agent tool loop runs beside it)."""
_PASS_HEADERS = ("retry-after",)
"""The engine's headers a client gets with its answer: when a hosted engine refuses for its own rate limit (429), when
to try again. Not its content-type: the client gets the type the gateway checked (_not_an_answer) or wrote, an event
stream's `text/event-stream` or JSON's `application/json` (passed on as the engine wrote it, `text/html; x=json` or
`text/event-stream, text/html`, which a browser reads as its last type, made an answer a page of the gateway's
origin)."""
log = logging.getLogger("aigrid.proxy")


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """Start a second attempt when the first byte is later than factor x predicted TTFT (+ min_ms); for an answer
    sent whole, whose first byte comes once it is whole, factor x (TTFT + its output limit's decode time)."""

    factor: float = 2.0
    min_ms: float = 150.0

    def delay_s(self, cand: Candidate, whole_tokens: int | None = None) -> float:
        """`whole_tokens`: the output limit of an answer sent whole (the model's context when it sets none)."""
        expected_s = cand.prediction.ttft_ms / 1000.0 + (0.0 if whole_tokens is None else whole_tokens * tpot_s(cand))
        return self.factor * expected_s + self.min_ms / 1000.0


@dataclass(frozen=True, slots=True)
class FirstByteDeadline:
    """How long an attempt may wait for its first byte before the next candidate is tried: factor x the
    predicted TTFT, within [min_s, max_s]. It catches what no connect timeout can: a pooled connection to a
    site whose network went dark, or an engine that accepts requests and never answers.

    A non-streamed answer's first byte comes with the whole answer (engines send nothing before), so its
    deadline adds the time to decode its output tokens (whole()) and has a ceiling of its own, whole_max_s;
    at the TTFT deadline alone every non-streamed answer of more than 5 s of decoding failed on every
    candidate in turn, and at max_s every one of more than 120 s."""

    factor: float = 10.0
    min_s: float = 5.0
    max_s: float = 120.0
    whole_max_s: float = 600.0
    """The ceiling of an answer sent whole and of a tool loop: the OpenAI and Anthropic SDKs' default client
    timeout, so no client that kept its defaults is still waiting after it."""

    def seconds(self, cand: Candidate) -> float:
        return min(self.max_s, max(self.min_s, self.factor * cand.prediction.ttft_ms / 1000.0))

    def whole(self, cand: Candidate, max_tokens: int | None) -> float:
        """A non-streamed answer's deadline: seconds() plus DECODE_FACTOR x `max_tokens` x the endpoint's
        recent time per output token (DEFAULT_TPOT_S when unknown), within whole_max_s; whole_max_s when
        nothing bounds its output (the caller passes the model's context when the request sets no limit)."""
        if max_tokens is None:
            return self.whole_max_s
        return min(self.whole_max_s, self.seconds(cand) + DECODE_FACTOR * max_tokens * tpot_s(cand))


REFUSAL_MAX_BYTES = 64 * 1024
"""The most bytes of an engine's refusal read (engine_errors keeps 2,000 characters of its message)."""

STREAM_IDLE_S: float = GatewaySpec.model_fields["stream_idle_s"].default
"""gateway.stream_idle_s's default (the spec's, one number)."""
STREAM_MAX_S: float = GatewaySpec.model_fields["stream_max_s"].default
"""gateway.stream_max_s's default (the spec's, one number; why an hour: its description)."""
DECODE_FACTOR = 3.0
"""Slack on the decode time of a non-streamed answer: a busy engine's steps slow down as its batch grows."""
DEFAULT_TPOT_S = 0.1
"""Time per output token assumed where the endpoint's is not known yet (a TPOT SLO's usual 100 ms)."""


def tpot_s(cand: Candidate) -> float:
    """The endpoint's recent time per output token, in seconds (DEFAULT_TPOT_S where not known yet)."""
    return DEFAULT_TPOT_S if cand.prediction.tpot_ms is None else cand.prediction.tpot_ms / 1000.0


class Held:
    """The engine's open answer: aclose() leaves its context once, the engine released (what an AsyncExitStack
    holding one context did, for a fifth of its cost per request)."""

    __slots__ = ("_cm",)

    def __init__(self) -> None:
        self._cm: AbstractAsyncContextManager[UpstreamResponse] | None = None

    async def enter(self, cm: AbstractAsyncContextManager[UpstreamResponse]) -> UpstreamResponse:
        upstream = await cm.__aenter__()
        self._cm = cm
        return upstream

    async def aclose(self) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            await cm.__aexit__(None, None, None)


@dataclass(slots=True)
class Opened:
    cand: Candidate
    upstream: UpstreamResponse
    stack: Held
    first: bytes
    sent_at: float
    first_at: float
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    """The attempt's W3C trace context (tracing on): later requests of the same answer carry it too."""
    engine_first_at: float | None = None
    """When the engine's first byte arrived, before the emulated way back (demo only) that ends at `first_at`
    (None: at `first_at`). The engine's TTFT ends here: however long the way back took, it is not the engine's."""

    @property
    def engine_ttft_s(self) -> float:
        """The engine's own time to its first byte, the emulated network excluded (it calibrates the endpoint)."""
        return (self.first_at if self.engine_first_at is None else self.engine_first_at) - self.sent_at


class Proxy:
    def __init__(self, engines: Mapping[str, Engine], served_models: Mapping[str, str], store: TelemetryStore,
                 metrics: GatewayMetrics, clock: Callable[[], float], *, emulate_network: bool,
                 max_attempts: int, family_of: Mapping[str, str] | None = None,
                 deadline: FirstByteDeadline = FirstByteDeadline(), sleep: Sleep = asyncio.sleep,
                 contexts: Mapping[str, int] | None = None, salt: CacheSalt | None = None,
                 stream_idle_s: float = STREAM_IDLE_S, stream_max_s: float = STREAM_MAX_S) -> None:
        """`contexts`: endpoint id -> its model's context in tokens, the most a non-streamed answer without an
        output limit can decode (its deadline's bound). `salt`: each tenant's prefix-cache salt, added to what
        the engines that read it get (security.isolate_prefix_cache; None: nothing added). `stream_idle_s`
        (gateway.stream_idle_s, the engine connections' read timeout): the longest a stream may also send reads
        without a data event (comments, keep-alives), which the read timeout cannot see (relay.EventPipe).
        `stream_max_s` (gateway.stream_max_s): the most seconds one streamed answer may take from its first byte,
        all its engines together (relay.StreamRelay)."""
        self.stream_idle_s = stream_idle_s
        self.stream_max_s = stream_max_s
        self._salt = salt
        self._engines = engines
        self.names = EngineNames(engines)
        """How a client's error names an engine (by its endpoint's id; routes.py hides /v1/grid's and decisions' too)."""
        self._contexts = dict(contexts or {})
        self._family_of = dict(family_of or {})
        self._deadline = deadline
        self._served = served_models
        self._store = store
        self._metrics = metrics
        self.written = MetricsWrites()  # metrics writes that may fail, never the request's settlement (observe.py)
        self._clock = clock
        self._emulate = emulate_network
        self._max_attempts = max_attempts
        self._sleep = sleep

    async def forward(self, path: str, body: dict[str, Any], decision: Decision, record: DecisionRecord,
                      stream: bool, hedge: HedgePolicy | None = None, *, output: OutputFilter | None = None,
                      redact_answer: Callable[[bytes], bytes] | None = None, wrap: Wrap | None = None,
                      escalate: Escalation | None = None) -> Response:
        """Serve the request from the decision's ranking. `output` filters a stream's events (firewall,
        usage metering), `redact_answer` a whole answer (and an engine's refusal, streamed or not). The outcome, the
        serving endpoint and the usage end up on `record` (the caller settles and audits once the response is over). `escalate`: a whole
        answer its model is unsure of is asked again of a larger model (escalation.py)."""
        started = self._clock()
        ranked = list(decision.ranked[: self._max_attempts])
        try:
            opened = await self._open_first(path, body, ranked, record, hedge, wrap)
        except EngineFailedAfterActing as e:  # its tools acted: no other engine runs the loop again, nor the client
            record.status = "failed"
            self.written(path, lambda: self._metrics.rejected.labels("upstream_failed").inc())
            raise UpstreamFailed(f"{self.names.hide(str(e))}; not tried again on another engine, which would "
                                 "run the request's server-side tools again", retry=False,
                                 headers={"x-aigrid-decision": decision.request_id}) from e
        except DeadlineUnmeetable as e:  # those tried failed; the others are predicted past what is left of it
            record.status = e.code or "deadline_unmeetable"
            self.written(path, lambda: self._metrics.rejected.labels(record.status).inc())
            raise
        if opened is not None and opened.trace_headers:  # a tool loop's later turns run in this task
            TRACE_HEADERS.set(opened.trace_headers)
        if opened is None:
            record.status = "failed"
            self.written(path, lambda: self._metrics.rejected.labels("upstream_failed").inc())
            raise UpstreamFailed(f"every candidate failed before answering ({self._tried(record)})",
                                 headers={"x-aigrid-decision": decision.request_id})
        cand = opened.cand
        # The engine's own time to first token (emulated network excluded) feeds the routing model; a
        # non-streamed answer's first byte comes after the whole generation, so it says nothing of TTFT.
        # A tool loop's first byte comes after whole model turns and tool runs: not a TTFT either.
        # An engine's 4xx (it refused the request) is neither its failure (5xx failed in _attempt) nor a success of
        # serving: its quick first byte is no TTFT, and it closes no circuit (_escalated and continue_stream alike)
        # A streamed refusal's first byte (the engine's 4xx, read whole) is no first token either (until OPS2 item 2
        # of the thirty-fourth session explain, the dashboard and the GenAI metric showed it as a TTFT).
        # The one fact, read by calibration, the TTFT metrics, explain, the dashboard, the access log and the GenAI
        # metric (docs/observability.md, "What counts as a time to first token")
        measured = stream and wrap is None and opened.upstream.status < 400
        if opened.upstream.status < 400:  # a refusal warms no cache either: the prefix and session keep their endpoint
            self._store.record_success(cand.endpoint_id, opened.engine_ttft_s if measured else None, cand.prediction)
            self._store.remember_affinity(record.affinity_keys, cand.endpoint_id)
        client_ttft = opened.first_at - started
        record.served_by, record.ttft_ms, record.status = cand.endpoint_id, client_ttft * 1000, "streaming"
        record.ttft_is_first_token = measured  # explain compares only a first token's time with the prediction
        headers = self._headers(cand, decision, opened.upstream)
        if measured:  # a write that fails is logged: raised here it left the engine's request open, never released
            self._count_ttft(path, cand, client_ttft)  # (a streamed tool loop's first byte was counted until OPS2)
        if stream and opened.upstream.status < 400:  # an engine's error is read whole (bounded) and rewritten
            spare = [c for c in decision.ranked if c.endpoint_id != cand.endpoint_id
                     and self._family(c) == self._family(cand)]
            return RelayResponse(StreamRelay(self, path, body, opened, spare, record, output, direct=wrap is None),
                                 opened.upstream.status, headers)
        try:
            if opened.upstream.status >= 400:  # a refusal: bounded in size and time (_read_refusal)
                rest = await self._read_refusal(opened)
            else:
                rest = await read_whole(opened.upstream.body, self.most_bytes(cand, record) if wrap is None else None)
            await opened.stack.aclose()  # in this try: a close that fails is the read's failure, not the client's 499
        except Exception as e:  # engine errors and anything else: release the engine, say why, never leak
            if not isinstance(e, EngineError):
                log.warning("endpoint %s: unexpected error while reading or closing the answer", cand.endpoint_id,
                            exc_info=e)
            await self.abandon(opened, record, f"broke before the answer was complete: {e!r}")
            record.status = "failed"
            raise UpstreamFailed(f"{cand.endpoint_id} failed while answering: {self.names.hide(str(e), cand.endpoint_id)}",
                                 headers={"x-aigrid-decision": decision.request_id}) from e
        except BaseException as e:  # cancelled (client gone, shutdown) in the read or the close: release the engine
            try:
                await opened.stack.aclose()  # nothing left to close when the cancel cut the close itself
            finally:  # booked even when a cancel cuts the close short: in flight never stays one high
                self.book_cut(cand, record, e)
            raise
        answer, status, usage, refusal = opened.first + rest, opened.upstream.status, None, None
        if status < 400:
            answer, usage = await self._whole(opened, record, answer)
        if escalate is not None and status < 400:
            return await self._escalated(path, body, decision, record, escalate, cand, status, answer, usage, headers,
                                         self._clock() - opened.sent_at, redact_answer)
        if redact_answer is not None and status < 400:
            answer = redact_answer(answer)
        if status >= 400:  # the engine's refusal in OpenAI's envelope (engine_errors.py), its addresses hidden
            answer, refusal = engine_refusal(answer, status, lambda m: self.names.hide(m, cand.endpoint_id),
                                             "prompt" if path.rstrip("/") == COMPLETIONS_PATH else "messages")
            record.refusal = refusal
            if redact_answer is not None:  # its texts are the engine's: read as its answer's are (a stream's too)
                answer = redact_answer(answer)
            headers = {**headers, "content-type": "application/json"}
            headers.pop("cache-control", None)
        elif path.rstrip("/") == COMPLETIONS_PATH:
            answer = completion_ids(answer)
        record.usage = self.finish(cand, record, status, usage,
                                   outcome=None if refusal is None else f"error:{refusal.code}")
        return Response(answer, status_code=status, headers=headers)

    async def _whole(self, opened: Opened, record: DecisionRecord, answer: bytes) -> tuple[bytes, dict[str, Any] | None]:
        """A 2xx whole answer and its usage (usage.whole_answer); one that is not a completion fails the attempt, the
        engine charged a failure (its answer read, no other candidate is asked): UpstreamFailed, a 502."""
        cand = opened.cand
        try:
            answer, usage, dropped = whole_answer(answer, self.most_tokens(cand, record),
                                                  isolated=self.isolates(cand))
        except NotAnAnswer as e:
            await self.abandon(opened, record, f"answered HTTP {opened.upstream.status} with what is not a completion: {e}")
            record.status = "failed"
            raise UpstreamFailed(f"{cand.endpoint_id} answered with what is not a completion ({e})",
                                 headers={"x-aigrid-decision": record.decision.request_id}) from e
        if dropped is not None:
            self._untrusted_usage(cand, record, dropped)
        return model_named(answer, orjson.dumps(cand.model), orjson.dumps(self.served_name(cand))), usage

    def _untrusted_usage(self, cand: Candidate, record: DecisionRecord, why: str) -> None:
        log.warning("endpoint %s reported token counts that cannot be charged (%s): its count taken as unknown",
                    cand.endpoint_id, why, extra=fields(endpoint=cand.endpoint_id, decision=record.decision.request_id,
                                                        reason=why))

    def served_name(self, cand: Candidate) -> str:
        """The model name `cand`'s engine is sent (its endpoint's served_model, else the grid's model), which it writes
        in its answers' `model`: the client reads the grid's there (relay.model_named)."""
        return self._served[cand.endpoint_id]

    def isolates(self, cand: Candidate) -> bool:
        """Does `cand`'s engine keep each tenant's prefix cache apart (the grid salts what it is sent:
        security.isolate_prefix_cache, cache_salt.py)? Then an answer's cached-token count is the overlap of the
        tenant's own prompts and reaches the client; elsewhere (llama-server, an engine not salted) it is written 0,
        a read of other tenants' recent prompts (usage.cache_counts_out: whole_answer and the relay's usage chunk)."""
        return self._salt is not None and self._salt.isolates(cand.endpoint_id)

    def most_tokens(self, cand: Candidate, record: DecisionRecord) -> int | None:
        """The most tokens an answer of `cand` can count: its model's context for each of its engine requests (None:
        the context is not known)."""
        context = self._contexts.get(cand.endpoint_id)
        return None if context is None else context * max(record.width, 1)

    def most_bytes(self, cand: Candidate, record: DecisionRecord) -> int:
        """The most bytes a whole answer of `cand` can be (usage.BYTES_PER_TOKEN a token of its contexts; at least
        1 MiB); more is an engine that does not stop, read no further (it held the gateway's memory unbounded)."""
        return whole_max_bytes(self.most_tokens(cand, record))

    async def _read_refusal(self, opened: Opened) -> bytes:
        """The rest of an engine's refusal (a 4xx), its first REFUSAL_MAX_BYTES (with `opened.first`) read within the
        attempt's first-byte deadline (FirstByteDeadline.seconds): read with a whole answer's bound, a refusal that
        drips held the client up to 1 MiB x the read timeout; engine_errors keeps 2,000 characters of it. A longer
        refusal (an engine echoing a long request in its 400) is still the client's refusal: the rest is left unread
        (the close drops it), not the engine's failure. Past the deadline: EngineStreamBroken, the read's break
        (booked as a read that broke off is)."""
        limit = self._deadline.seconds(opened.cand)
        room = REFUSAL_MAX_BYTES - len(opened.first)
        parts: list[bytes] = []
        try:
            async with asyncio.timeout(limit):
                while room > 0 and (chunk := await anext(opened.upstream.body, None)) is not None:
                    parts.append(chunk[:room])
                    room -= len(chunk)
        except TimeoutError as e:
            raise EngineStreamBroken(f"its refusal was not read whole within {limit:.1f} s") from e
        if room <= 0:
            log.info("endpoint %s: its refusal reached %d bytes; any rest is left unread",
                     opened.cand.endpoint_id, REFUSAL_MAX_BYTES)
        return b"".join(parts)

    async def _escalated(self, path: str, body: dict[str, Any], decision: Decision, record: DecisionRecord,
                         esc: Escalation, cand: Candidate, status: int, answer: bytes, usage: dict[str, Any] | None,
                         headers: dict[str, str], took_s: float,
                         redact_answer: Callable[[bytes], bytes] | None) -> Response:
        """The whole answer of `cand` (`usage`: its count), or, when it is unsure of it, the next model up's
        (escalation.py)."""
        doc = parse(answer)
        conf = None if doc is None else confidence(doc)
        record.usage = usage = self.finish(cand, record, status, usage)  # charged on any way out
        record.attempts[-1]["confidence"] = None if conf is None else round(conf, 4)
        if conf is not None:
            headers[H_CONFIDENCE] = f"{conf:.4f}"
        larger = esc.larger(decision.ranked, cand.model) if esc.unsure(conf) and took_s <= esc.within_s else []
        late: list[str] = []  # the deadline's budget: only a larger model predicted to answer within what is left
        in_time = [c for c in larger if not self._left_out(c, record, late)]
        if larger and not in_time:
            log.warning("escalation of %s from %s: no larger candidate in time (%s); the first answer stands",
                        decision.request_id, cand.model, late[0])
        larger = in_time
        if larger:
            why = "every larger candidate failed"
            try:
                opened = await self._open_first(path, body, larger[: self._max_attempts], record, None, None)
            except ApiError as e:  # a larger model's engine could not read it (agents/engine_refusal.py): the first one could
                opened, why = None, str(e)
            if opened is None:
                log.warning("escalation of %s from %s: %s; the first answer stands", decision.request_id, cand.model,
                            why)
            else:
                try:
                    if opened.upstream.status >= 400:  # a refusal: bounded in size and time (_read_refusal)
                        better = opened.first + await self._read_refusal(opened)
                    else:
                        better = opened.first + await read_whole(opened.upstream.body,
                                                                 self.most_bytes(opened.cand, record),
                                                                 [len(opened.first)])
                    await opened.stack.aclose()  # in this try: a close that fails is the read's failure, not a 499
                except Exception as e:  # the first answer stands; the engine is released and charged
                    if not isinstance(e, EngineError):
                        log.warning("endpoint %s: unexpected error while reading or closing an escalated answer",
                                    opened.cand.endpoint_id, exc_info=e)
                    await self.abandon(opened, record, f"broke before the escalated answer was complete: {e!r}")
                except BaseException as e:  # cancelled (client gone, shutdown) in the read or the close: release the
                    try:  # engine
                        await opened.stack.aclose()  # nothing left to close when the cancel cut the close itself
                    finally:  # booked even when a cancel cuts the close short: in flight never stays one high
                        self.book_cut(opened.cand, record, e)
                    raise
                else:
                    if opened.upstream.status < 400:  # a refusal is no success of serving (forward's rule)
                        self._store.record_success(opened.cand.endpoint_id, None, opened.cand.prediction)
                    escalated = counted = dropped = None
                    if opened.upstream.status < 400:
                        try:  # an answer that is not a completion leaves the first one standing
                            better, counted, dropped = whole_answer(better, self.most_tokens(opened.cand, record),
                                                                    isolated=self.isolates(opened.cand))
                            better = model_named(better, orjson.dumps(opened.cand.model),
                                                 orjson.dumps(self.served_name(opened.cand)))
                            escalated = parse(better)
                        except NotAnAnswer:
                            pass
                    if escalated is not None:
                        record.attempts[-1]["escalated_from"] = cand.endpoint_id
                        record.served_by = f"{cand.endpoint_id} -> {opened.cand.endpoint_id}"
                        if dropped is not None:
                            self._untrusted_usage(opened.cand, record, dropped)
                        more = self.finish(opened.cand, record, opened.upstream.status, counted)
                        usage = _added(usage, more)
                        headers = {**self._headers(opened.cand, decision, opened.upstream),
                                   H_ESCALATED_FROM: cand.model, H_CONFIDENCE: headers[H_CONFIDENCE]}
                        doc, answer, status = escalated, better, opened.upstream.status
                    else:  # an engine's context 400 booked as the gateway's own error (_refused_as), not http_400
                        self.finish(opened.cand, record, opened.upstream.status, None,
                                    outcome=_refused_as(better, opened.upstream.status))
                        record.status = "ok"  # what the client gets: the first answer
                        log.warning("escalation of %s: %s answered HTTP %d; the first answer stands",
                                    decision.request_id, opened.cand.endpoint_id, opened.upstream.status)
        record.usage = usage
        if esc.strip and doc is not None:
            answer = without_logprobs(doc)
        if redact_answer is not None:
            answer = redact_answer(answer)
        return Response(answer, status_code=status, headers=headers)

    # --- before the first byte ------------------------------------------------------------------------
    async def _open_first(self, path: str, body: dict[str, Any], ranked: Sequence[Candidate],
                          record: DecisionRecord, hedge: HedgePolicy | None, wrap: Wrap | None) -> Opened | None:
        """The first candidate of `ranked` to answer (its first byte read), or None when each failed. A candidate
        after the first (a failover, a hedge) is tried only when it is predicted to answer within what is left of
        the request's deadline: DeadlineUnmeetable when none is left that is."""
        late: list[str] = []
        if hedge is None:  # one attempt at a time, each awaited in this task: no task and wait per request
            for i, cand in enumerate(ranked):
                if i and self._left_out(cand, record, late):
                    continue
                try:
                    return await self._attempt(path, body, cand, record, False, wrap)
                except EngineFailedAfterActing:
                    raise  # _attempt booked the failure; no next candidate (forward)
                except EngineError:
                    continue  # _attempt booked the failure: the next candidate
            self._refuse_if_late(record, late)
            return None
        queue = list(ranked)
        running: dict[asyncio.Task[Opened], tuple[Candidate, bool]] = {}

        def start(hedged: bool) -> bool:
            """The next candidate in time started (the first as decided); False when none is left."""
            while queue:
                cand = queue.pop(0)
                if cand is not ranked[0] and self._left_out(cand, record, late):
                    continue
                running[asyncio.ensure_future(self._attempt(path, body, cand, record, hedged, wrap))] = (cand, hedged)
                return True
            return False

        why: str | None = None  # why the attempts still running are cancelled: one answered first, unless ...
        won: Opened | None = None
        try:
            while queue or running:
                if not running and not start(hedged=False):
                    break
                lone = next(iter(running.values()))[0] if len(running) == 1 else None
                timeout = None
                if hedge is not None and queue and lone is not None:
                    if body.get("stream") is True:
                        timeout = hedge.delay_s(lone)
                    elif (whole := output_limit(self._bounded(body, record, lone.endpoint_id))
                          or self._contexts.get(lone.endpoint_id)) is not None:
                        timeout = hedge.delay_s(lone, whole)  # (nothing bounds its length: slow or long, no telling)
                done, _ = await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:  # the first byte is late against its prediction: hedge on the next candidate
                    if start(hedged=True):
                        self.written(path, self._metrics.hedges.inc)
                    continue
                for task in done:
                    _, hedged = running.pop(task)
                    failed = task.exception()
                    if isinstance(failed, (ApiError, EngineFailedAfterActing)):  # the client's error (an engine could
                        why = f"refused: {failed}"  # not read the request): no other engine would answer it either;
                        raise failed                # tools that acted: no other engine may run them again
                    if failed is None:
                        if any(a.get("hedge") for a in record.attempts):
                            self.written(path, _inc, self._metrics.hedge_wins, "hedge" if hedged else "first")
                        won = task.result()
                        break
                if won is not None:
                    break
        except asyncio.CancelledError as e:  # ... the request itself was cancelled (its client gone, a shutdown)
            why = _why(e, "the request was cancelled")
            raise
        finally:
            await self._close_losers(running, why, record, won)
        if won is None:
            self._refuse_if_late(record, late)
        return won

    def _left_out(self, cand: Candidate, record: DecisionRecord, late: list[str]) -> bool:
        """Whether `cand` is predicted to answer after what is left of the request's deadline (why, onto `late`)."""
        if record.deadline is None:
            return False
        why = record.deadline.too_late(cand.prediction.ttft_ms, self._clock())
        if why is not None:
            late.append(f"{cand.endpoint_id}: {why}")
        return why is not None

    def _refuse_if_late(self, record: DecisionRecord, late: list[str]) -> None:
        """Every candidate tried failed: DeadlineUnmeetable when others were left out as too late (else forward's
        502)."""
        if not late or record.deadline is None:
            return
        raise DeadlineUnmeetable(
            f"the deadline ({record.deadline.ms:.0f} ms to the first token) cannot be met: every candidate tried "
            f"failed ({self._tried(record)}), and no other is predicted to answer in time ({late[0]})",
            param=record.deadline.field, headers={"x-aigrid-decision": record.decision.request_id})

    def _tried(self, record: DecisionRecord) -> str:
        """The attempts that failed, each with its error (its engine's addresses hidden)."""
        return "; ".join(f"{a['endpoint']}: {self.names.hide(str(a.get('error')), a['endpoint'])}"
                         for a in record.attempts if not a.get("ok"))

    async def _close_losers(self, running: Mapping[asyncio.Task[Opened], tuple[Candidate, bool]], why: str | None,
                            record: DecisionRecord, won: Opened | None) -> None:
        """Cancel the attempts still running and wait for each to close. The request's own cancel (its client
        hung up, a shutdown) that comes while they close is not taken for theirs: the losers still closing are
        cut short with it, the winner's answer is closed unsent, and it is raised on (asyncio hands a task's
        cancel to the task it awaits, whose CancelledError was swallowed here as the loser's; the request then
        went on with the winner, for nobody). A loser that answered in the same turn as the winner is closed. A loser
        that raises a BaseException that is no cancel (KeyboardInterrupt, SystemExit), awaited or in its close, cuts
        the request alike: every other loser still closed, the winner closed and booked error:internal (Proxy.book_cut),
        nothing left in flight, and it is raised on after (until the thirtieth session the others were skipped and the
        winner left open, one in flight for good). A loser's close that fails (an Exception) is logged: the winner
        goes on."""
        if not running:
            return
        me = asyncio.current_task()
        before = me.cancelling() if me is not None else 0
        cut: BaseException | None = None

        def cutting(e: BaseException) -> None:  # the request's own cancel, or another BaseException: the losers still
            # closing cut short
            nonlocal cut
            if cut is None:
                cut = e
                reason = _why(e, "the request was cancelled") if isinstance(e, asyncio.CancelledError) \
                    else f"the request was cut by {type(e).__name__}"
                for other in running:
                    other.cancel(reason)

        for task in running:
            task.cancel(why)
        for task in running:
            try:
                late = await task
            except asyncio.CancelledError as e:
                if me is not None and me.cancelling() > before:  # ours, not the loser's
                    cutting(e)
            except (EngineError, ApiError):
                pass  # the losing hedge, cancelled on purpose or refused (a tool loop's check); _attempt released it
            except BaseException as e:  # noqa: BLE001 -- no cancel (KeyboardInterrupt, SystemExit, or a bug's Exception;
                cutting(e)  # _attempt released it): a cut, raised on once the others are closed
            else:  # it had its first byte too: released unread
                for entry in record.attempts:
                    if entry["endpoint"] == late.cand.endpoint_id and entry.get("ok"):
                        entry.update(ok=False, error="cancelled: another attempt answered first")
                try:
                    await late.stack.aclose()
                except asyncio.CancelledError as e:  # the loser is done: a cancel now is the request's own
                    cutting(e)
                except Exception as e:  # the loser's engine, not the request's failure: the winner goes on
                    log.warning("endpoint %s: closing an attempt that lost failed", late.cand.endpoint_id, exc_info=e)
                except BaseException as e:  # noqa: BLE001 -- no cancel (KeyboardInterrupt, SystemExit): a cut, raised
                    cutting(e)  # on once the others are closed
                finally:  # its slot given back even when the close was cut short
                    self._store.request_finished(late.cand.endpoint_id, record.prompt_tokens, True, count=record.width)
        if cut is not None:
            if won is not None:  # nobody to send it to; its engine had the prompt (Exchange.used_tokens)
                record.left_at = won.cand.endpoint_id
                try:
                    await won.stack.aclose()
                finally:  # a cancel is the client's 499; another BaseException, or a loser's bug, error:internal
                    if isinstance(cut, Exception):  # (book_cut reads an Exception as a close's after the client left)
                        self.finish(won.cand, record, 500, None, outcome="error:internal")
                    else:
                        self.book_cut(won.cand, record, cut)
            raise cut

    async def _attempt(self, path: str, body: dict[str, Any], cand: Candidate, record: DecisionRecord,
                       hedged: bool, wrap: Wrap | None = None, *, bounded: bool = False) -> Opened:
        """One engine request for `cand`; `bounded`: the body's output bound is set already (a continuation's,
        continue_stream), else it gets the max_tokens this endpoint's model's context leaves (_bounded)."""
        attempt_start = self._clock()
        stack = Held()
        got_first = sent = undue = False
        request = record.decision.request_id
        # the emulated network (demo only): half the round trip there, the prompt arriving at its end (where the
        # predictor places a request's arrival: a prompt sent a moment before the next is ahead of it), the other
        # half back before the first byte is relayed
        half = cand.prediction.rtt_ms / 2000.0 if self._emulate else 0.0
        self._store.request_started(cand.endpoint_id, record.prompt_tokens, request, half, record.width)
        entry: dict[str, Any] = {"endpoint": cand.endpoint_id, "ok": False}
        if hedged:
            entry["hedge"] = True
        record.attempts.append(entry)
        span = record.trace.attempt(cand, hedged, self._engines[cand.endpoint_id].base_url)
        try:
            if self._emulate:
                await self._sleep(half)
            sent_at = self._clock()
            if not bounded:
                body = self._bounded(body, record, cand.endpoint_id)  # max_tokens by this endpoint's model's context
            sent_body = for_engine(body, self._engines[cand.endpoint_id].kind)  # `developer` as `system`
            if self._salt is not None:
                sent_body = self._salt.apply(sent_body, cand.endpoint_id, record.tenant)
            payload = orjson.dumps({**sent_body, "model": self._served[cand.endpoint_id]})
            engine = self._engines[cand.endpoint_id]
            if wrap is not None:
                engine = wrap(engine, cand)
                if isinstance(engine, WrappedEngine):  # what it reads of the engine whole, within a whole answer's bound
                    engine.bound(self.most_bytes(cand, record))
            # a tool loop answers after whole model turns and tool runs: only the whole answer's ceiling applies
            expected_s = 0.0  # the predicted wait for the first byte (none known for a tool loop)
            if wrap is not None:
                limit = self._deadline.whole_max_s
            elif body.get("stream") is True:
                limit, expected_s = self._deadline.seconds(cand), cand.prediction.ttft_ms / 1000.0
            else:  # an engine sends a non-streamed answer's first byte once the answer is whole
                tokens = output_limit(body) or self._contexts.get(cand.endpoint_id)
                limit = self._deadline.whole(cand, tokens)
                expected_s = cand.prediction.ttft_ms / 1000.0 + (tokens or 0) * tpot_s(cand)
            try:
                async with asyncio.timeout(limit):
                    sent = True
                    upstream = await stack.enter(engine.open(path, payload))
                    if upstream.status >= 500:
                        await raise_for_server_error(upstream)
                    elif upstream.status < 400 and (odd := _not_an_answer(upstream, body.get("stream") is True)):
                        raise EngineUnavailable(odd)
                    first = await anext(upstream.body, b"")
                    self._store.first_token(cand.endpoint_id, record.prompt_tokens, request, record.width)
                    got_first = True
                    engine_first_at = self._clock()
            except TimeoutError as e:
                # a deadline its ceiling (max_s, whole_max_s) held under the request's own predicted wait (a long
                # prompt's prefill behind a queue): the miss is the request's size, not the engine's failure, so it
                # opens no circuit for the others (review RV6: a few long but legal prompts opened it)
                undue = limit < expected_s
                raise EngineUnavailable(f"no first byte within {limit:.1f} s" + (
                    f", under the {expected_s:.1f} s predicted for this request" if undue else "")) from e
            if self._emulate:  # the time actually slept counts as the way back, an oversleep included
                await self._sleep(half)
        except BaseException as e:  # every way out before the first byte frees the slot (until review RV5 of the
            # thirtieth session a KeyboardInterrupt or SystemExit left the engine's request open, one in flight for good)
            elapsed = self._clock() - attempt_start
            unexpected = False
            if not isinstance(e, Exception | asyncio.CancelledError):  # no act of the engine's: not its failure
                log.error("endpoint %s: the attempt was cut by %s before the first byte: its engine released",
                          cand.endpoint_id, type(e).__name__)  # its traceback where it ends (as book_cut's)
                entry.update(error=attempt_error(f"cut: {type(e).__name__}"), ms=round(elapsed * 1000, 1))
            elif isinstance(e, EngineError):
                self._fail(cand, entry, str(e) or type(e).__name__, elapsed, counts=not undue)
            elif isinstance(e, asyncio.CancelledError):
                why = _why(e, "another attempt answered first")
                entry.update(error=attempt_error(f"cancelled: {why}"), ms=round(elapsed * 1000, 1))
                if why == CLIENT_GONE:  # the engine's request closed unanswered (relay_response.Hangup)
                    self.written(cand.endpoint_id, lambda: self._metrics.requests.labels(
                        cand.site_id, cand.endpoint_id, "client_closed").inc())  # raised, left it in flight
                # its client gone or its background response's cancel (the tenant's act) while its engine held it:
                # the engine read the prompt, charged (Exchange.used_tokens); the grid's own cuts (the stop's, a
                # lease lapse's) charge nothing beyond what was delivered (docs/reliability.md)
                if sent and why in _CHARGED_CUTS and record.left_at is None:
                    record.left_at = cand.endpoint_id
            elif isinstance(e, ApiError):  # the client's mistake found late (a tool loop's check): not the engine's
                entry.update(error=attempt_error(f"refused: {e}"), ms=round(elapsed * 1000, 1))
            else:  # a bug or an unmapped library error: counted against the engine, logged with its traceback
                log.warning("endpoint %s: unexpected error before the first byte", cand.endpoint_id, exc_info=e)
                self._fail(cand, entry, f"unexpected {type(e).__name__}: {e}", elapsed)
                unexpected = True
            span.fail(entry["error"])  # booked before the close: a cancel that cuts the close short skips nothing
            try:
                await stack.aclose()
            finally:  # even when a hang-up lands inside the close: the in-flight count never stays one high
                self._store.request_finished(cand.endpoint_id, record.prompt_tokens, got_first, request, record.width)
            if unexpected:
                raise EngineUnavailable(f"unexpected {type(e).__name__}: {e}") from e
            raise
        span.ok()
        first_at = self._clock()
        entry.update(ok=True, ms=round((first_at - attempt_start) * 1000, 1))
        return Opened(cand, upstream, stack, first, sent_at, first_at, span.headers, engine_first_at)

    def _fail(self, cand: Candidate, entry: dict[str, Any], reason: str, elapsed: float, *, counts: bool = True) -> None:
        """An attempt failed before its first byte: logged, counted, and (`counts`) a failure toward the endpoint's
        circuit; not where its first-byte deadline was under the request's own predicted wait (_attempt)."""
        log.warning("endpoint %s failed before the first byte: %s", cand.endpoint_id, reason,
                    extra=fields(endpoint=cand.endpoint_id, site=cand.site_id, reason=reason))
        if counts:
            self._store.record_failure(cand.endpoint_id, reason)
        self._count_failed(cand)  # each write guarded: one raising here left the attempt in flight
        entry.update(error=attempt_error(reason), ms=round(elapsed * 1000, 1))

    def _bounded(self, body: dict[str, Any], record: DecisionRecord, endpoint_id: str) -> dict[str, Any]:
        """`body` with the max_tokens the context of the endpoint's model leaves (engine_body.bound_output,
        DecisionRecord.output_bound; the grid's limit for an engine of a kind that stops at its context) where the
        client set no limit; the body itself otherwise."""
        if record.output_bound is None:
            return body
        return bound_output(body, self._limit(record.output_bound, endpoint_id))

    def _limit(self, bound: OutputBound, endpoint_id: str) -> int | None:
        """The max_tokens the endpoint's engine gets where the client set no limit (OutputBound.limit: by its model's
        context and its engine's kind)."""
        return bound.limit(self._contexts.get(endpoint_id), self._engines[endpoint_id].kind)

    def _continued(self, body: dict[str, Any], record: DecisionRecord, served: str | None,
                   spare: str) -> dict[str, Any]:
        """`body` as a continuation on endpoint `spare` of the answer `served` broke off starts from: where the client
        set no limit, the smaller of the max_tokens the two endpoints' models' contexts leave the prompt
        (OutputBound.limit; continuation_body takes off what was delivered) where both leave one, else none (the
        spare's context bounds it). Bounding afresh at the spare (review RV1 of a19baf06) sent a small model's engine
        the large one's 4,096 less what was delivered, past its context with the prompt, and a large model's the
        grid's whole limit where the broken attempt's engine had been sent none. The spare's kind decides: one that
        stops at its context (llama-server, request_info.CONTEXT_STOPPED_KINDS) never refuses a max_tokens and gets
        the served engine's bound, else the grid's limit (none would let it decode to its context's end)."""
        bound = record.output_bound
        if bound is None or served is None:
            return body
        first, here = self._limit(bound, served), self._limit(bound, spare)
        if here is None or (first is None and self._engines[spare].kind not in CONTEXT_STOPPED_KINDS):
            return body
        return bound_output(body, here if first is None else min(first, here))

    # --- after the first byte (relay.py drives these) -------------------------------------------------
    async def continue_stream(self, path: str, body: dict[str, Any], delivered: Delivered,
                              spare: list[Candidate], record: DecisionRecord) -> tuple[Opened | None, str]:
        """Open a continuation of a broken stream on a spare endpoint: (opened, "") or (None, why not)."""
        reason = why_not_continuable(body, delivered)
        if reason is not None:
            return None, reason
        served = None if record.served_by is None else record.served_by.rsplit(" -> ", 1)[-1]
        tried = {a["endpoint"] for a in record.attempts}
        refused: list[str] = []
        for cand in [c for c in spare if c.endpoint_id not in tried][: self._max_attempts]:
            cont = continuation_body(self._continued(body, record, served, cand.endpoint_id), delivered,
                                     self._engines[cand.endpoint_id].kind)
            try:
                opened = await self._attempt(path, cont, cand, record, hedged=False, bounded=True)
            except (EngineError, ApiError):  # ApiError: the spare could not read the continuation (agents/engine_refusal.py)
                continue
            if opened.upstream.status >= 400:  # it refused the continuation (a 5xx failed in _attempt): its body went
                # into the client's event stream as it came, unread and unframed, until review RV3 of the
                # twenty-eighth session; now released (not its failure: a refusal, booked so) and the next one tried.
                # Its body is read (bounded) for what the refusal is: the continuation's prompt holds the text already
                # sent, and a spare's context 400 is booked as the gateway's own error (_refused_as), not http_400
                said = opened.first
                try:
                    said += await self._read_refusal(opened)
                except Exception as e:  # booked by what it sent before it broke off; an unexpected error (a bug) is
                    # logged with its traceback as the main path's read logs one, not raised into the client's stream
                    log.warning("endpoint %s: its refusal of a continuation broke off: %r", cand.endpoint_id, e,
                                exc_info=None if isinstance(e, EngineError) else e)
                except BaseException as e:  # cancelled (client gone, shutdown): release the engine
                    try:
                        await opened.stack.aclose()
                    finally:
                        self.book_cut(cand, record, e)
                    raise
                try:
                    await opened.stack.aclose()
                finally:  # booked even when a cancel cuts the close short: the in-flight count never stays one high
                    self.finish(cand, record, opened.upstream.status, None,
                                outcome=_refused_as(said, opened.upstream.status))
                record.attempts[-1].update(ok=False, error=f"refused the continuation: HTTP {opened.upstream.status}")
                refused.append(f"{cand.endpoint_id}: HTTP {opened.upstream.status}")
                continue
            record.attempts[-1]["continuation_after_chars"] = len(delivered.sent_text())
            self.written(cand.endpoint_id, _inc, self._metrics.continuations, cand.site_id)
            record.served_by = f"{record.served_by} -> {cand.endpoint_id}"
            return opened, ""
        if refused:
            return None, f"the continuation was refused ({'; '.join(refused)})"
        return None, "no other endpoint of the same model family could take over"

    async def abandon(self, opened: Opened, record: DecisionRecord, reason: str) -> None:
        log.warning("endpoint %s %s", opened.cand.endpoint_id, reason,
                    extra=fields(endpoint=opened.cand.endpoint_id, site=opened.cand.site_id, reason=reason,
                                 decision=record.decision.request_id))
        try:
            await opened.stack.aclose()
        finally:  # booked even when a cancel (the client gone, a shutdown) cuts the close short
            self._store.request_finished(opened.cand.endpoint_id, record.prompt_tokens, True, count=record.width)
            self._store.record_failure(opened.cand.endpoint_id, reason)
            self.written(opened.cand.endpoint_id, lambda: self._metrics.requests.labels(
                opened.cand.site_id, opened.cand.endpoint_id, "broke_mid_stream").inc())
            record.attempts.append({"endpoint": opened.cand.endpoint_id, "ok": False, "error": attempt_error(reason)})

    def error_event(self, record: DecisionRecord, message: str) -> bytes:
        record.status = "interrupted"
        message = self.names.hide(message)  # the decision and the log keep the engine's address
        err = {"error": {"message": f"the answer was interrupted: {message}", "type": "upstream_error",
                         "param": None, "code": "stream_interrupted"}}
        return encode(orjson.dumps(err))

    def finish(self, cand: Candidate, record: DecisionRecord, status: int,
               usage: dict[str, Any] | None, *, outcome: str | None = None) -> dict[str, Any] | None:
        """Book one finished answer with the usage the engine reported (None: not known); returns it. An engine's 4xx
        (it refused the request: generated nothing) counts no tokens: it was charged the whole reservation, as an
        answer whose count is unknown, until 2026-12-05 (a hosted engine's 429 cost the tenant its max_tokens).
        `outcome`: an answer the gateway stopped itself, booked so (`steered`: relay.StreamRelay.steer; its length
        is not the engine's, so not recorded as one), or an engine's refusal that is one of the gateway's own errors
        (`error:context_length_exceeded`, engine_errors.engine_refusal), booked as the gateway's own check books it."""
        if usage is None and 400 <= status != 499:
            usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self._store.request_finished(cand.endpoint_id, record.prompt_tokens, True, count=record.width)
        stopped = outcome is not None
        if outcome is None:
            outcome = "ok" if status < 400 else ("client_closed" if status == 499 else f"http_{status}")
        if record.status != "interrupted":
            record.status = outcome
        if usage and isinstance(usage.get("completion_tokens"), int) and status < 400 and not stopped:
            self._store.record_usage(cand.endpoint_id, usage["completion_tokens"])
        # a write that fails is logged: raised here it lost the usage the quota is settled with
        self._count_finished(cand, outcome, usage)
        return usage

    # each write its own call through `written`: one that fails skips none of the others (one guarded call each until
    # the thirty-first session: a failing aigrid_retries_total left the attempt's failed_before_first_byte uncounted)
    def _count_finished(self, cand: Candidate, outcome: str, usage: dict[str, Any] | None) -> None:
        written, m, site, endpoint = self.written, self._metrics, cand.site_id, cand.endpoint_id
        written(endpoint, add_child, m.requests, 1, site, endpoint, outcome)
        if usage:
            written(endpoint, add_child, m.tokens, usage.get("prompt_tokens", 0), site, "prompt")
            written(endpoint, add_child, m.tokens, usage.get("completion_tokens", 0), site, "completion")

    def _count_failed(self, cand: Candidate) -> None:
        written, m, site, endpoint = self.written, self._metrics, cand.site_id, cand.endpoint_id
        written(endpoint, add_child, m.retries, 1, endpoint)
        written(endpoint, add_child, m.requests, 1, site, endpoint, "failed_before_first_byte")

    def _count_ttft(self, path: str, cand: Candidate, client_ttft: float) -> None:
        self.written(path, observe_child, self._metrics.ttft, client_ttft, cand.site_id)
        if cand.prediction.ttft_ms > 0:
            self.written(path, observe_child, self._metrics.ttft_ratio,
                         client_ttft * 1000.0 / cand.prediction.ttft_ms, cand.endpoint_id)

    def book_cut(self, cand: Candidate, record: DecisionRecord, e: BaseException | None) -> None:
        """Book an engine request released because `e` cut its read or close short (the caller re-raises it): a cancel
        (the client gone, a shutdown), none (StreamRelay.aclose: the client gone) or an Exception of the close there is
        the client's 499 (`client_closed`); any other BaseException (KeyboardInterrupt, SystemExit, GeneratorExit: no
        act of the client's) is booked `error:internal`, logged in one line (its traceback where it ends; charged as a
        499 is: its usage unknown). Until the thirtieth session each of them was booked 499, as if the client had left."""
        if e is None or isinstance(e, Exception | asyncio.CancelledError):
            self.finish(cand, record, 499, None)
            return
        # one line naming the endpoint: the traceback is logged once, where the exception ends (routes.Audited for
        # a route, own_exchange for the gateway's own work); logged here too, it came twice (until Z item 3)
        log.error("endpoint %s: the answer was cut by %s: its engine released, booked error:internal",
                  cand.endpoint_id, type(e).__name__)
        self.finish(cand, record, 500, None, outcome="error:internal")

    def _family(self, cand: Candidate) -> str:
        return self._family_of.get(cand.endpoint_id, cand.model)

    @staticmethod
    def _headers(cand: Candidate, decision: Decision, upstream: UpstreamResponse) -> dict[str, str]:
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in _PASS_HEADERS and _a_time(v)}
        sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
        headers["content-type"] = "text/event-stream" if sse else "application/json"
        headers.update({"x-aigrid-site": cand.site_id, "x-aigrid-endpoint": cand.endpoint_id,
                        "x-aigrid-model": cand.model,
                        "x-aigrid-decision": decision.request_id, "x-aigrid-jurisdiction": cand.jurisdiction})
        if sse:
            headers["cache-control"] = "no-cache"
        wait = retry_after_s(headers)
        if wait is not None and not 0 <= wait <= RETRY_WAIT_MAX_S:  # the gateway's own rule for a hosted
            headers["x-should-retry"] = "false"  # engine's 429 too: an SDK that honours any wait would sleep hours
        return headers


def _refused_as(body: bytes, status: int) -> str | None:
    """The outcome an engine's refusal is booked as when it is one of the gateway's own errors (engine_refusal: a
    context 400 is `error:context_length_exceeded`, as the main path and the gateway's own check book it), else None
    (`http_<status>`)."""
    if status < 400:
        return None
    refusal = engine_refusal(body, status)[1]
    return None if refusal is None else f"error:{refusal.code}"


_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_A_TIME = re.compile(
    r"\d{1,10}(?:\.\d{1,6})?"  # seconds (RFC 9110's delay-seconds, and a fraction as e6f9b419 took)
    rf"|{_DAY}, \d\d {_MONTH} \d{{4}} \d\d:\d\d:\d\d GMT"  # an HTTP date (IMF-fixdate)
    rf"|(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, \d\d-{_MONTH}-\d\d \d\d:\d\d:\d\d GMT"  # (RFC 850's form)
    rf"|{_DAY} {_MONTH} [ \d]\d \d\d:\d\d:\d\d \d{{4}}", re.ASCII)  # (asctime's form)


def _a_time(value: str) -> bool:
    """Whether a `retry-after` is one (seconds, or an HTTP date in one of RFC 9110's three forms): an engine's other
    text there went out as written, to a tenant whose answers are redacted too, until the twenty-eighth session. Read
    by its grammar, not email.utils.parsedate_to_datetime (e6f9b419, review RV3): that takes any word as a time zone
    or a day's name and ignores words after the time (`21 Oct 2026 07:28:00 jo@example.com` went out), and raised
    OverflowError on a long number as the zone, a 500 for an engine's header."""
    return _A_TIME.fullmatch(value) is not None


def _not_an_answer(upstream: UpstreamResponse, stream: bool) -> str | None:
    """Why an engine's answer (a 2xx or 3xx) cannot be the one asked for (None: it can): a 3xx never is, a streamed
    one must be an event stream, a whole one JSON, and neither compressed (the gateway asks for `accept-encoding:
    identity`: it reads the bytes). Passed on, an HTML page, a gzip body or a whole answer to a stream reached the
    client as a 200 and was audited `ok`, the engine never counted as failing (docs/reliability.md, "Failing before the first byte")."""
    if upstream.status >= 300:  # a redirect (or another 3xx) is no answer: passed on, a 302 reached the client, `ok`
        return f"answered HTTP {upstream.status}, not an answer"
    headers = upstream.headers
    encoding = coded(headers)
    if encoding is not None:
        return f"answered HTTP {upstream.status} with content-encoding {encoding} (identity asked)"
    ctype = headers.get("content-type", "")
    if ctype.startswith("text/event-stream") if stream else "json" in ctype:
        return None
    return (f"answered HTTP {upstream.status} with content-type {ctype or '(none)'}, not "
            f"{'an event stream' if stream else 'JSON'}")


_CHARGED_CUTS = frozenset({CLIENT_GONE, BACKGROUND_CANCELLED})
"""The cancels of a request that charge it its prompt when an engine held it (docs/reliability.md): the tenant pays
for engine work its own act threw away: its client gone, its client's cancel of its background response. Work the grid
throws away (the stop's cut, stopping.CUT and GRACE_END; another attempt's win; a run whose owner's lease lapsed) is charged
nothing beyond what was delivered."""


def _inc(counter: Counter, *labels: str) -> None:
    """One more in `counter`'s child of `labels` (through Proxy.written)."""
    counter.labels(*labels).inc()


def _why(e: BaseException, default: str) -> str:
    """A CancelledError's reason (its message), or `default`."""
    return e.args[0] if e.args and isinstance(e.args[0], str) else default


def _added(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """Two answers' token counts as one (what the tenant is charged for an escalated request)."""
    if not a or not b:
        return a or b
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {**b, **{k: int(a.get(k) or 0) + int(b.get(k) or 0) for k in keys}}
