"""`n` choices, and a list of prompts, from any engine: one engine request per answer, the answers merged as one.

OpenAI's `n` asks for several sampled answers to one prompt. vLLM and SGLang sample them in one request;
llama.cpp, Ollama and TGI's chat route answer one. So the gateway asks the chosen endpoint n times at once,
each request without `n` (and, when the client gave a `seed`, with seed + i, so the answers differ as a
native `n` would), and merges the answers: choice i of the result is answer i (its `index` rewritten), the
usage counts the prompt once and every answer's completion tokens, as OpenAI bills it. Streamed, the
answers' chunks are relayed as they arrive, each re-indexed, the engines' usage chunks held back and sent
once, summed, before the one `[DONE]`.

A completion's list of prompts is served the same way: one request per prompt (times `n`), each with its prompt
alone, choice p x n + i the answer to prompt p's i-th request, the usage every prompt once and every answer's
completion. llama-server answers a list in one request with one choice per prompt but the usage of one prompt
(two prompts of 4 tokens, 5 tokens each: prompt_tokens 4, completion_tokens 5), so a list sent on whole was
charged as one prompt; one request per prompt is counted by every engine the same way. At most
MAX_FANNED_REQUESTS engine requests per call (the Batch API is for more). The n requests are opened together: one that fails before its first
byte fails the attempt (the proxy tries the next candidate with all n); one that fails mid-stream, or ends
without its [DONE] and without a finish_reason (cut short: gateway/relay.py's rule for one stream), breaks
the merged stream (EngineStreamBroken: the relay's `stream_interrupted` error event, no [DONE]) after what
the answers already sent. Whole, an answer that is not whole JSON or holds no choice fails the attempt like a
failed read: the client never gets fewer choices than it asked for; so do answers past the bound the proxy reads
one whole answer within (Proxy.most_bytes, for all the answers together: `max_bytes`), read no further. An engine's own 4xx is passed on as it came.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import orjson

from aigrid.engines.protocol import Engine, UpstreamResponse
from aigrid.engines.sse import CUT_SHORT, DONE, Event, Quiet, SseDecoder
from aigrid.engines.token_counts import bad_count
from aigrid.engines.wrapped import WrappedEngine, once, read_whole
from aigrid.errors import EngineError, EngineStreamBroken

MAX_CHOICES = 8
"""The most choices one request may ask for (each is a full request to the engine)."""
MAX_FANNED_REQUESTS = 32
"""The most engine requests one call may become: a list of prompts times `n`."""
FANNED_PATHS = ("/v1/chat/completions", "/v1/completions")
HEAD = ("id", "object", "created", "model", "system_fingerprint")
"""A stream chunk's keys that name its completion: one merged stream is one completion, every chunk the first
answer's values (each engine numbers its own answer: `cmpl-A...`, `cmpl-B...`)."""
MAX_QUEUED = 64
"""The most events of a merged stream held for its client: past it the answers are read no faster than the client
reads (as one stream's engine connection is, the transport's high water)."""
_END = object()

log = logging.getLogger("aigrid.proxy")


class FanOutEngine(WrappedEngine):
    """The chosen engine asked once per answer: `n` per prompt, each prompt of a list apart."""

    def __init__(self, inner: Engine, n: int, quiet_s: float | None = None) -> None:
        """`quiet_s` (gateway.stream_idle_s): the longest each streamed answer may send reads without a data event."""
        super().__init__(inner)
        self.n = n
        self.quiet_s = quiet_s

    def bound(self, max_bytes: int) -> None:
        """The answers' bytes, read whole, at most `max_bytes` together; each within its share of them when what it
        wraps reads it whole first (LegacyCompletionsEngine: _open)."""
        self.max_bytes = max_bytes

    def open(self, path: str, body: bytes) -> AbstractAsyncContextManager[UpstreamResponse]:
        if path.rstrip("/") not in FANNED_PATHS:
            return self.inner.open(path, body)
        return self._open(path, body)

    @asynccontextmanager
    async def _open(self, path: str, raw: bytes) -> AsyncIterator[UpstreamResponse]:
        body = orjson.loads(raw)
        bodies = requests(body, self.n)
        if self.max_bytes is not None and isinstance(self.inner, WrappedEngine):
            self.inner.bound(max(1, self.max_bytes // len(bodies)))
        async with AsyncExitStack() as stack:
            try:
                async with asyncio.TaskGroup() as group:
                    opening = [group.create_task(stack.enter_async_context(self.inner.open(path, one)))
                               for one in bodies]
            except ExceptionGroup as failed:  # the first engine error, as a single open raises it
                raise failed.exceptions[0] from None
            answers = [task.result() for task in opening]
            refused = next((a for a in answers if a.status >= 400), None)
            if refused is not None:
                yield refused
            elif body.get("stream"):
                yield UpstreamResponse(200, answers[0].headers, merged_stream(answers, self.n, self.quiet_s))
            else:
                held = [0]  # the bytes of every answer read so far: together within max_bytes
                try:  # the first failed read (an answer past max_bytes too) fails the attempt, the others' are cancelled
                    async with asyncio.TaskGroup() as group:
                        reading = [group.create_task(read_whole(a.body, self.max_bytes, held)) for a in answers]
                except ExceptionGroup as failed:
                    raise failed.exceptions[0] from None
                yield UpstreamResponse(200, answers[0].headers,
                                       once(merged_answer([t.result() for t in reading], self.n)))


def prompts_of(body: Mapping[str, Any]) -> list[Any] | None:
    """A completion's list of several prompts (None for one prompt, or a chat)."""
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, list) and len(prompt) > 1 else None


def requests(body: Mapping[str, Any], n: int) -> list[bytes]:
    """The bodies, prompt by prompt (a list's each alone), n for each: without `n`, each with its own seed when
    the client set one."""
    out = []
    for prompt in prompts_of(body) or [body.get("prompt")]:
        for i in range(n):
            one = {k: v for k, v in body.items() if k != "n"}
            if prompt is not None:
                one["prompt"] = prompt
            if isinstance(body.get("seed"), int):
                one["seed"] = body["seed"] + i
            out.append(orjson.dumps(one))
    return out


def merged_answer(answers: list[bytes], n: int = 1) -> bytes:
    """Whole answers as one (n of them per prompt): choice i is answer i's, usage each prompt once and every
    answer's completion. An answer cut short (not whole JSON) or without a choice is the engine's failure
    (EngineStreamBroken)."""
    docs = [_whole(j, a) for j, a in enumerate(answers)]
    merged = dict(docs[0])
    merged["choices"] = sorted(({**c, "index": _index(c, len(docs), j)} for j, doc in enumerate(docs)
                                for c in doc.get("choices") or () if isinstance(c, dict)), key=lambda c: c["index"])
    usages = {j: doc["usage"] for j, doc in enumerate(docs) if isinstance(doc.get("usage"), dict)}
    if usages and (usage := _merged_usage(usages, n)) is not None:
        merged["usage"] = usage
    return orjson.dumps(merged)


def _merged_usage(usages: Mapping[int, dict[str, Any]], n: int) -> dict[str, Any] | None:
    """summed_usage, when every answer's counts can be charged (engines/token_counts.py `bad_count`, the gateway's
    rule). When one answer's cannot (a string, -5, 1e300, past 64 bits: summed, they raised, a 502 or a stream cut
    with a traceback), None, logged: the merged answer has no usage, its count unknown, as the gateway takes one
    engine's count that cannot be charged."""
    for u in usages.values():
        bad = bad_count(u)
        if bad is not None:
            log.warning("an engine's answer counted %s %r: the %d answers' count is unknown", *bad, len(usages))
            return None
    return summed_usage(usages, n)


def _whole(j: int, answer: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        raise EngineStreamBroken(f"choice {j}: the engine's answer is cut short (not whole JSON)") from None
    if not isinstance(doc, dict) or not any(isinstance(c, dict) for c in doc.get("choices") or ()):
        raise EngineStreamBroken(f"choice {j}: the engine's answer has no choice")
    return doc


def _index(choice: dict[str, Any], n: int, answer: int) -> int:
    """OpenAI's place of answer `answer`'s choice for prompt `choice["index"]`: the n choices of prompt p are
    p x n to p x n + n - 1 (one prompt: the answer's own number)."""
    prompt = choice.get("index")
    return (prompt if isinstance(prompt, int) and prompt >= 0 else 0) * n + answer


def summed_usage(usages: Mapping[int, dict[str, Any]], n: int = 1) -> dict[str, Any]:
    """The usage of answers by number, n per prompt (answer j is prompt j // n's): each prompt's tokens once (the
    largest count its answers gave) and its `prompt_tokens_details` (cached tokens, ...) once, every answer's
    completion tokens and `completion_tokens_details` (reasoning tokens, ...)."""
    per_prompt: dict[int, dict[str, Any]] = {}
    prompt_details: dict[int, Mapping[str, Any]] = {}
    for j, u in usages.items():
        held = per_prompt.get(j // n)
        if held is None or int(u.get("prompt_tokens") or 0) > int(held.get("prompt_tokens") or 0):
            per_prompt[j // n] = u
        details = u.get("prompt_tokens_details")
        if isinstance(details, Mapping) and (j // n not in prompt_details or u is per_prompt[j // n]):
            prompt_details[j // n] = details  # the counted answer's, else any of the prompt's answers'
    prompt = sum(int(u.get("prompt_tokens") or 0) for u in per_prompt.values())
    completion = sum(int(u.get("completion_tokens") or 0) for u in usages.values())
    out = {**usages[min(usages)], "prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion}
    completion_details = [d for u in usages.values() if isinstance(d := u.get("completion_tokens_details"), Mapping)]
    for key, details in (("prompt_tokens_details", list(prompt_details.values())),
                         ("completion_tokens_details", completion_details)):
        if details:
            out[key] = _summed(details)
    return out


def _summed(details: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Usage details summed key by key, nested ones too; a null is no count; a value that is not a number is the
    first answer's."""
    out: dict[str, Any] = {}
    for d in details:
        for k, v in d.items():
            held = out.get(k)
            if held is None:
                out[k] = _summed([v]) if isinstance(v, Mapping) else v
            elif isinstance(held, dict) and isinstance(v, Mapping):
                out[k] = _summed([held, v])
            elif _count(held) and _count(v):
                out[k] = held + v
    return out


def _count(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


async def merged_stream(answers: list[UpstreamResponse], n: int = 1, quiet_s: float | None = None
                        ) -> AsyncIterator[bytes]:
    """The answers' SSE events (n per prompt) as they arrive, answer i's choices re-indexed (`_index`), every event
    one completion's (HEAD: the first answer's id, model, ...); one summed usage chunk, its head that too (llama-server
    puts its usage on the finish chunk: no usage-only chunk to take it from), and one [DONE] at the end. Events that are not JSON objects (llama.cpp opens a stream of several prompts
    with `data: null`) are skipped. An answer that fails, or ends without its [DONE] and without a
    finish_reason, raises EngineStreamBroken once the events queued before it are out (no usage, no [DONE]); so does
    one that sends reads without a data event (keep-alives) for more than `quiet_s` (sse.Quiet, as the relay bounds
    one stream: the read timeout sees reads, not events). At most MAX_QUEUED events wait for the client: the answers
    are read no faster than it reads."""
    queue: asyncio.Queue[object] = asyncio.Queue()  # events take `room` (MAX_QUEUED); an end or a failure never waits
    room = asyncio.Semaphore(MAX_QUEUED)
    usages: dict[int, dict[str, Any]] = {}
    last: dict[str, Any] = {}
    head: dict[str, Any] = {}  # HEAD's values, the first event's that has each: every event's, the usage chunk's

    async def relay(i: int, answer: UpstreamResponse) -> None:
        async def forward(ev: Event) -> bool:
            """Answer i's event on to the client, re-indexed; True when it says the answer ended ([DONE], a
            finish_reason)."""
            if ev.data is None or ev.data == DONE:
                return ev.data == DONE
            event = orjson.loads(ev.data)
            if not isinstance(event, dict):
                return False
            for k in HEAD:
                if event.get(k) is not None:
                    event[k] = head.setdefault(k, event[k])
            if isinstance(event.get("usage"), dict):
                usages[i] = event.pop("usage")
                if not event.get("choices"):
                    last.update(event)
                    return False
            event["choices"] = choices = [{**c, "index": _index(c, count, i)} for c in event.get("choices") or ()
                                          if isinstance(c, dict)]
            await room.acquire()
            queue.put_nowait(b"data: " + orjson.dumps(event) + b"\n\n")
            return any(c.get("finish_reason") for c in choices)

        decoder = SseDecoder()
        silence = None if quiet_s is None else Quiet(quiet_s, time.monotonic)
        ended = False  # relay.EventPipe.ended's rule for one stream: its [DONE] or a finish_reason
        try:
            async for chunk in answer.body:
                events = decoder.feed(chunk)
                if silence is not None:
                    silence.after(events)
                for ev in events:
                    ended = await forward(ev) or ended
            final = decoder.flush()  # an event that lacked only its blank line ([DONE] written without it)
            try:
                ended = (final is not None and await forward(final)) or ended
            except orjson.JSONDecodeError:
                pass  # half an event: cut inside it
            if not ended:  # closed cleanly but cut short: not a shorter choice that looks whole
                raise EngineStreamBroken(CUT_SHORT)
        except Exception as e:  # noqa: BLE001 -- put on the queue: any failure breaks the merged stream, never ends it
            reason = str(e) if isinstance(e, EngineError | ValueError) else f"{type(e).__name__}: {e}"
            queue.put_nowait(EngineStreamBroken(f"choice {i}: {reason}"))
        finally:
            queue.put_nowait(_END)

    count = len(answers)
    tasks = [asyncio.ensure_future(relay(i, a)) for i, a in enumerate(answers)]
    try:
        ended = 0
        while ended < len(tasks):
            item = await queue.get()
            if item is _END:
                ended += 1
            elif isinstance(item, EngineStreamBroken):
                raise item
            else:
                assert isinstance(item, bytes)
                room.release()
                yield item
        if usages and (usage := _merged_usage(usages, n)) is not None:
            yield b"data: " + orjson.dumps({**last, **head, "choices": [], "usage": usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

