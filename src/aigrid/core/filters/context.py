"""Holds the prompt: the context of the model an endpoint serves (ModelInfo.context) can take the request's prompt
and the answer's first token. `auto` and a family name route to models of different contexts, and the gateway's
own check (gateway/context_window.py) lets a prompt through when the largest of them can take it; this filter keeps
it from the others (whose engine would refuse it, vLLM's 400, or cut it, llama-server).

The prompt is counted by a lower bound (RequestInfo.min_prompt_tokens, the gateway's characters over 8), so an
endpoint is never rejected for a prompt that could fit; a model whose context is not known, and a request with no
bound, pass."""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import PASS, Context, Verdict
from aigrid.core.types import Endpoint

MIN_OUTPUT_TOKENS = 1
"""The answer's room a context must leave beside the prompt: an engine refuses a prompt that fills it."""


def holds(context: int, prompt_tokens: int) -> bool:
    """Whether a context of `context` tokens holds a prompt of `prompt_tokens` and MIN_OUTPUT_TOKENS of answer."""
    return prompt_tokens + MIN_OUTPUT_TOKENS <= context


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class HoldsPrompt:
    name: str = "context"

    def applies(self, ctx: Context) -> bool:
        return ctx.request.min_prompt_tokens > 0

    def check(self, ctx: Context, endpoint: Endpoint) -> Verdict:
        info = ctx.view.models.get(endpoint.model)
        if info is None or info.context is None:
            return PASS
        at_least = ctx.request.min_prompt_tokens
        if holds(info.context, at_least):
            return PASS
        return Verdict(False, f"context {info.context:,} tokens < the prompt's at least {at_least:,} "
                              f"+ {MIN_OUTPUT_TOKENS} of answer")
