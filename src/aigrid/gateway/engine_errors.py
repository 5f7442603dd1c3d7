"""An engine's own error answer (a 4xx it refused with, a 5xx passed on) as the client's API writes errors.

Engines write errors each their own way: vLLM `{"error": {"message", "type": "BadRequestError", "param",
"code": 400}}` (older: the same fields at the top level, with `"object": "error"`), SGLang the latter,
llama-server `{"error": {"code": 400, "message", "type": "invalid_request_error"}}`, TGI `{"error": "...",
"error_type": "..."}`, a proxy in front an HTML page. Passed on as sent, the OpenAI SDKs read vLLM's
`type` and its integer `code` as the error's (`err.type == "BadRequestError"`, `err.code == "400"`) and an HTML
page as no error body at all. The gateway answers OpenAI's envelope instead: the engine's message (engine
addresses named by endpoint), OpenAI's type for the status, its `param` and `code` where they are strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from aigrid.errors import ApiError, InvalidRequest

OPENAI_TYPES = frozenset({"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                          "rate_limit_error", "server_error", "api_error"})
"""Error types a client of OpenAI's API may see (the ones the gateway writes too), kept when an engine sends one."""
MAX_MESSAGE = 2_000
"""The most characters of an engine's message passed on."""


CUT_SCAN_CHARS = 65_536
"""The most characters of a body that is not JSON searched for its message (a refusal read only in part)."""
_CUT_MESSAGE = re.compile(rf'"(?:message|error)"\s*:\s*"((?:[^"\\]|\\.){{0,{2 * MAX_MESSAGE}}})')
"""An error's message string (TGI's: `error`) in a body cut short, from its opening quote: at most 2 x MAX_MESSAGE
characters or escapes of it (the message is hidden, then cut to MAX_MESSAGE, in engine_refusal)."""


def _cut_message(text: str) -> str | None:
    """The `message` string of an error body that is not valid JSON (cut at proxy.REFUSAL_MAX_BYTES: a 400 echoing a
    long request), decoded up to where it ends or was cut; None when it has none."""
    found = _CUT_MESSAGE.search(text, 0, CUT_SCAN_CHARS)
    if found is None:
        return None
    part = found.group(1)
    for cut in range(7):  # the cut may fall inside an escape (at most 6 characters: \uXXXX)
        try:
            message = json.loads(f'"{part[:len(part) - cut]}"', strict=False)
        except ValueError:
            continue
        return str(message).encode("utf-8", "replace").decode("utf-8")  # a lone surrogate cut from its pair: '?'
    return None


def _fields(body: bytes, hide: Callable[[str], str] = lambda m: m) -> Mapping[str, Any]:
    """The fields of an engine's error `body`. One that is not JSON (cut short) is hidden before its message is pulled
    out and cut to 2 x MAX_MESSAGE: an address cut in two there is not matched by `hide`, and would show in part
    where hiding shortened the text before it (an adapter's repr dropped) below MAX_MESSAGE."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = hide(body.decode("utf-8", "replace"))
        message = _cut_message(text)
        return {"message": text if message is None else message}
    if not isinstance(obj, dict):
        return {"message": str(obj)}
    err = obj.get("error")
    if isinstance(err, dict):
        return err
    if isinstance(err, str):  # TGI
        return {"message": err}
    return obj  # SGLang's and older vLLM's: the fields at the top level


HIDE_CHARS = 4 * MAX_MESSAGE
"""The most characters of an engine's message hidden (EngineNames.hide) before it is cut to MAX_MESSAGE."""
_LAST_SPACE = re.compile(r"\s\S*\Z")


def _hide_cut(message: str) -> str:
    """`message` cut before it is hidden, at the last whitespace within HIDE_CHARS: an address is never cut in two
    there (it holds none), so it is still hidden wherever hiding (an adapter's repr dropped) brings the cut edge within
    MAX_MESSAGE. One with no whitespace there is hidden whole, as before the thirtieth session (at most
    proxy.REFUSAL_MAX_BYTES)."""
    if len(message) <= HIDE_CHARS:
        return message
    edge = _LAST_SPACE.search(message, 0, HIDE_CHARS)
    return message if edge is None else message[:edge.start()]


MAX_FIELD = 256
"""The most characters of an engine's `param` or `code` passed on."""


def _message(fields: Mapping[str, Any]) -> str:
    message = fields.get("message")
    return message if isinstance(message, str) else str(message if message is not None else dict(fields))


def engine_error_message(body: bytes) -> str:
    """The message of an engine's own error answer (any of the shapes above, or whatever it sent)."""
    return _message(_fields(body))[:MAX_MESSAGE]


CONTEXT_EXCEEDED = re.compile(
    r"exceeds the available context size(?: \((?P<llama>\d+) tokens\))?"  # llama.cpp's (older: no figure)
    r"|maximum context length (?:is|of) (?P<vllm>\d+) tokens"  # vLLM's (and SGLang's newer)
    r"|is longer than the model's context length \((?P<sglang>\d+) tokens\)")  # SGLang's
"""The engines' own words for a prompt longer than their context (matched narrowly: any other 400 is passed on)."""
CONTEXT_CODE = "context_length_exceeded"


def context_exceeded(fields: Mapping[str, Any], status: int) -> tuple[int | None] | None:
    """None unless the engine's 400 says the request exceeded its context; else (its context, when it named one)."""
    if status != 400:
        return None
    found = CONTEXT_EXCEEDED.search(_message(fields)[:MAX_MESSAGE])
    if found is None and fields.get("type") != "exceed_context_size_error":
        return None
    n_ctx = fields.get("n_ctx")  # llama.cpp's exceed_context_size_error carries its slot's context
    if isinstance(n_ctx, int) and not isinstance(n_ctx, bool) and n_ctx > 0:
        return (n_ctx,)
    figure = next((g for g in found.groups() if g is not None), None) if found is not None else None
    return (int(figure) if figure is not None else None,)


def context_message(context: int | None, param: str) -> str:
    """The gateway's own words for an engine's refusal of a request longer than its context: the prompt, or the prompt
    and the output it may write (vLLM counts max_tokens in: '376 in the messages, 2096 in the completion')."""
    said = f"This model's maximum context length is {context} tokens." if context is not None else \
        "The request exceeds the model's context length."
    return f"{said} The engine refused the request as longer than that: please reduce the length of the {param} " \
        "or lower max_tokens."


def engine_refusal(body: bytes, status: int, hide: Callable[[str], str] = lambda m: m,
                   param: str = "messages") -> tuple[bytes, ApiError | None]:
    """The engine's error `body` in OpenAI's envelope, for a client of `status`, and the gateway's own error it is, when
    it is one (else None); `hide` rewrites its texts (engine addresses named by endpoint) before they are cut (a long
    message first cut at a space, _hide_cut), so an address is never cut in two and half shown. An engine's 400 saying
    the context was exceeded (llama.cpp's, vLLM's, SGLang's words) is the gateway's own `context_length_exceeded` on
    `param`, as its own check
    (context_window.py) answers, whoever the engine: the same envelope, and the same error, which the exchange's
    outcome, status and audited message are made of (Exchange.failure): until the twenty-ninth session the engine's
    was audited and counted `http_400`, the gateway's own `error:context_length_exceeded`."""
    fields = _fields(body, hide)
    exceeded = context_exceeded(fields, status)
    if exceeded is not None:
        err = InvalidRequest(context_message(exceeded[0], param), param=param, code=CONTEXT_CODE)
        return orjson.dumps(err.envelope()), err
    kind = fields.get("type")
    if kind not in OPENAI_TYPES:
        kind = "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"

    def short(value: Any) -> str | None:
        return hide(value)[:MAX_FIELD] if isinstance(value, str) else None

    message = hide(_hide_cut(_message(fields)))[:MAX_MESSAGE].strip() or f"the engine answered {status}"
    return orjson.dumps({"error": {"message": message, "type": kind, "param": short(fields.get("param")),
                                   "code": short(fields.get("code"))}}), None
