"""The legacy Completions fields an engine leaves out: `echo` and OpenAI's `logprobs` shape, served by the gateway.

OpenAI's `/v1/completions` answers `logprobs: N` with four parallel lists per choice: `tokens`,
`token_logprobs`, `top_logprobs` (one `{token: logprob}` map per position) and `text_offset` (each token's
character offset in the choice's text), and `echo: true` puts the prompt before the completion. vLLM and
SGLang serve both. llama.cpp's llama-server ignores `echo` and answers `logprobs` in the chat format
(`logprobs.content[]`, each with `token`, `logprob` and `top_logprobs[]`), so the official SDK's `Logprobs`
fields read None and a client that asked for the prompt back does not get it.

For an engine of such a kind (`ECHOLESS_KINDS`), the chosen endpoint is wrapped in `LegacyCompletionsEngine`,
which asks the engine without `echo`, converts chat-format log-probabilities to the legacy lists and puts the
prompt back in front of the text (of a list of prompts: choice i's own prompt), whole and streamed; streamed,
the prompt goes out as each choice's first chunk, as OpenAI sends it. Nothing else of the answer changes.
Log-probabilities already in the legacy shape pass untouched, so the conversion is harmless on any engine.

`echo` together with `logprobs` asks for the prompt's own log-probabilities, which llama.cpp does not compute:
that request is answered with a 400 naming `echo` (the OpenAI error envelope) rather than a completion whose
lists silently skip the prompt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson

from aigrid.engines.answer_shape import choice_fault
from aigrid.engines.protocol import Engine, UpstreamResponse
from aigrid.engines.sse import encode, rewritten
from aigrid.engines.wrapped import WrappedEngine, once, read_whole

COMPLETIONS_PATH = "/v1/completions"
ECHOLESS_KINDS = frozenset({"llamacpp"})
"""Engine kinds whose `/v1/completions` ignores `echo` and answers log-probabilities in the chat format."""

NO_PROMPT_LOGPROBS = ("echo with logprobs asks for the prompt's log-probabilities, which this model's chosen "
                      "engine (llama.cpp) does not compute: ask without echo, or for a model served by vLLM "
                      "or SGLang")


def needs_legacy(engine: Engine, body: Mapping[str, Any]) -> bool:
    """Does this completion request need the gateway's help on this engine (echo or log-probabilities)?"""
    return engine.kind in ECHOLESS_KINDS and (bool(body.get("echo")) or body.get("logprobs") is not None)


class LegacyCompletionsEngine(WrappedEngine):
    """`inner`'s completions with `echo` and the legacy `logprobs` lists served here; every other path passes."""

    def open(self, path: str, body: bytes) -> AbstractAsyncContextManager[UpstreamResponse]:
        if path.rstrip("/") != COMPLETIONS_PATH:
            return self.inner.open(path, body)
        return self._open(path, body)

    @asynccontextmanager
    async def _open(self, path: str, raw: bytes) -> AsyncIterator[UpstreamResponse]:
        body = orjson.loads(raw)
        echo = bool(body.pop("echo", False))
        if echo and body.get("logprobs") is not None:
            yield UpstreamResponse(400, {"content-type": "application/json"}, once(_error(NO_PROMPT_LOGPROBS, "echo")))
            return
        prompts = _prompts(body.get("prompt")) if echo else None
        async with self.inner.open(path, orjson.dumps(body)) as answer:
            if answer.status >= 400:
                yield answer
            elif body.get("stream"):
                yield UpstreamResponse(answer.status, answer.headers, legacy_stream(answer.body, prompts))
            else:
                whole = await read_whole(answer.body, self.max_bytes)
                yield UpstreamResponse(answer.status, answer.headers, once(legacy_answer(whole, prompts)))


def _prompts(prompt: Any) -> list[str]:
    """The prompt of each choice index the engine answers (a list of prompts: one per prompt)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    return []


def _error(message: str, param: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": None}})


class Offsets:
    """Per choice index: where its next token starts in the text the client receives (after an echoed prompt)."""

    def __init__(self, prompts: list[str] | None) -> None:
        self.prompts = prompts
        self._at: dict[int, int] = {}

    def prompt(self, index: int) -> str:
        prompts = self.prompts
        return prompts[index] if prompts and 0 <= index < len(prompts) else (prompts[0] if prompts else "")

    def legacy(self, choice: dict[str, Any]) -> None:
        """The choice's chat-format log-probabilities replaced, in place, by the legacy lists."""
        lp = choice.get("logprobs")
        content = lp.get("content") if isinstance(lp, dict) else None
        if not isinstance(content, list):
            return  # none asked for, or already legacy
        index = choice.get("index")
        if not isinstance(index, int):
            index = 0
        at = self._at.get(index)
        if at is None:
            at = len(self.prompt(index)) if self.prompts is not None else 0
        tokens: list[str] = []
        logprobs: list[float | None] = []
        tops: list[dict[str, float]] = []
        offsets: list[int] = []
        for item in content:
            if not isinstance(item, dict):
                continue
            token = item.get("token")
            token = token if isinstance(token, str) else ""
            tokens.append(token)
            logprob = item.get("logprob")
            logprobs.append(float(logprob) if isinstance(logprob, (int, float)) else None)
            alternatives = item.get("top_logprobs")  # a list; anything else (an engine's `5`) raised here
            tops.append({t["token"]: float(t["logprob"])
                         for t in (alternatives if isinstance(alternatives, list) else ())
                         if isinstance(t, dict) and isinstance(t.get("token"), str)
                         and isinstance(t.get("logprob"), (int, float))})
            offsets.append(at)
            at += len(token)
        self._at[index] = at
        choice["logprobs"] = {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops,
                              "text_offset": offsets}


def legacy_answer(answer: bytes, prompts: list[str] | None) -> bytes:
    """A whole completion with the legacy log-probabilities and, with `prompts`, each choice's prompt in front of its
    text. A choice of another shape (answer_shape.choice_fault: a list as `text`, no text) is left as the engine sent
    it, for the gateway's check of the whole answer to refuse (usage.whole_answer): until the twenty-sixth session its
    text was written out as Python shows it (`str()`), a list's `['...']` after the prompt passing as the answer."""
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return answer  # not JSON: passed as the engine sent it
    if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
        return answer
    offsets = Offsets(prompts)
    echoed: set[int] = set()
    for choice in doc["choices"]:
        if isinstance(choice, dict):
            offsets.legacy(choice)
            index = _index(choice)
            if prompts is not None and choice_fault(choice, whole=True) is None and _echoes(index, prompts, echoed):
                choice["text"] = offsets.prompt(index) + (choice.get("text") or "")
    return orjson.dumps(doc)


def _echoes(index: int, prompts: list[str], echoed: set[int]) -> bool:
    """Is choice `index` echoed (its prompt put in front), once each and only for the choices asked for? An engine that
    named a new index in each chunk (or answered 100,000 choices) had the prompt sent again for each: 40-byte chunks of
    a 10 KB prompt came out 250 times larger than the engine sent them."""
    if index in echoed or not 0 <= index < max(len(prompts), 1):
        return False
    echoed.add(index)
    return True


def _index(choice: Mapping[str, Any]) -> int:
    index = choice.get("index")
    return index if isinstance(index, int) else 0


async def legacy_stream(body: AsyncIterator[bytes], prompts: list[str] | None) -> AsyncIterator[bytes]:
    """The engine's completion events with the legacy log-probabilities; with `prompts`, each choice's prompt as
    its first chunk (the first event of that choice carries it, in a chunk of its own before it)."""
    offsets = Offsets(prompts)
    echoed: set[int] = set()

    def rewrite(data: bytes, name: bytes) -> bytes | None:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(event, dict) or not isinstance(event.get("choices"), list):
            return None
        out: list[bytes] = []
        for choice in event["choices"]:
            if not isinstance(choice, dict):
                continue
            index = _index(choice)
            if prompts is not None and _echoes(index, prompts, echoed):
                first = {"index": index, "text": offsets.prompt(index), "logprobs": None, "finish_reason": None}
                out.append(encode(orjson.dumps({**event, "choices": [first], "usage": None})))
            offsets.legacy(choice)
        out.append(encode(orjson.dumps(event), event=name))
        return b"".join(out)

    async for chunk in rewritten(body, rewrite):
        yield chunk
