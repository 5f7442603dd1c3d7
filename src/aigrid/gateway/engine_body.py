"""What an engine of a given kind is sent of a chat body: the `developer` role as `system`; the deprecated
`functions` and `function_call` only to hosted engines, which serve them.

OpenAI's `developer` role is its newer name for `system` (the openai SDK sends it for o-series models, the Agents
SDK for every model). llama.cpp reads it as `system` only since March 2026 (ggml-org/llama.cpp#20215); older
llama-server builds and vLLM hand it to the model's chat template as a role of its own, which a strict template
refuses (Qwen3.5's "Unexpected message role": the engine's error) and others print as an unknown role. So every
engine but a hosted OpenAI-compatible API (kind `openai`, which knows the role) gets `system` in its place. The
firewall reads both roles alike (model_texts.ROLE_SOURCE), so nothing it read changes.

OpenAI's function calling before `tools` (`functions`, `function_call`) is served by a hosted engine, but vLLM and
llama.cpp ignore both fields: the model answered in prose while the client waited for a function call. A request
with either is refused, naming the field, unless every endpoint that may serve its model is of kind `openai`.
Not translated to `tools` (LiteLLM's way): the client reads the answer's `message.function_call` and
finish_reason `function_call`, which the engines answer as `tool_calls`, and an earlier turn's `function_call`
and `function` messages carry no call id; the answer and the history would need translating too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aigrid.errors import InvalidRequest
from aigrid.spec.models import GridSpec

KNOWS_DEVELOPER = frozenset({"openai"})
"""Engine kinds sent the `developer` role as the client sent it."""
SERVES_FUNCTIONS = frozenset({"openai"})
"""Engine kinds that serve the deprecated `functions` and `function_call`."""
LEGACY_FIELDS = ("functions", "function_call")


def _developer(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "developer"


def for_engine(body: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """`body` as an engine of `kind` is to get it: each `developer` message renamed `system` where the engine does
    not know the role. The body itself where nothing changes (no copy); never modified in place."""
    messages = body.get("messages")
    if kind in KNOWS_DEVELOPER or not isinstance(messages, list) or not any(map(_developer, messages)):
        return body
    return {**body, "messages": [{**m, "role": "system"} if _developer(m) else m for m in messages]}


def serving_kinds(model: str, spec: GridSpec) -> frozenset[str]:
    """The engine kinds of every endpoint that may serve a request for `model` (a model, a family or `auto`):
    its family's, as a family fallback or an escalation may take it to another model of the family."""
    families = {m.family for name, m in spec.models.items() if name == model} | {model}
    return frozenset(e.engine for e in spec.endpoints
                     if model == "auto" or e.model == model or spec.models[e.model].family in families)


def check_legacy_functions(model: str, body: Mapping[str, Any], spec: GridSpec) -> None:
    """A 400 naming `functions` or `function_call` unless every engine that may serve `model` serves them."""
    sent = [f for f in LEGACY_FIELDS if body.get(f) not in (None, [], "none")]
    if not sent or serving_kinds(model, spec) <= SERVES_FUNCTIONS:
        return
    raise InvalidRequest(f"`{sent[0]}` (OpenAI's function calling before `tools`) is not served by the engines of "
                         f"model {model!r}: they ignore it and the model would answer in prose; send `tools` "
                         "(each {\"type\": \"function\", \"function\": ...}) and `tool_choice` instead",
                         param=sent[0])
