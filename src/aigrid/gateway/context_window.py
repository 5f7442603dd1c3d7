"""Refuse, at the gateway, a prompt that cannot fit the model's context (OpenAI's own 400), before any
engine or the firewall reads it.

The gateway does not run the model's tokenizer, so it refuses only when even a generous lower bound on the
token count exceeds the context: MAX_CHARS_PER_TOKEN characters per token (BPE tokenizers average about
4 characters per token on English and fewer on code or other scripts), a run of whitespace counted as one character
(a tokenizer reads a long run of spaces in a few tokens: whitespace_excess). A prompt that fits is never refused;
one between about 4 and 8 characters per context token passes and meets the engine's own limit.

`auto` and a family name route to models of different contexts: the check lets through what the largest can hold,
and the router's context filter (core/filters/context.py, by the same bound: RequestInfo.min_prompt_tokens) keeps
the prompt from the others; where that leaves no candidate, the request is answered this check's 400
(refuse_too_long), not a 503.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aigrid.core.filters.context import HoldsPrompt, holds
from aigrid.core.types import Decision, GridView
from aigrid.errors import InvalidRequest
from aigrid.spec.models import ModelSpec

MAX_CHARS_PER_TOKEN = 8
CONTEXT = HoldsPrompt().name
"""The router's filter of a model that cannot hold the prompt."""


def model_context(model: str, models: Mapping[str, ModelSpec]) -> int | None:
    """The largest context any model the name can route to has (a model, a family, or "auto")."""
    if model in models:
        return models[model].context
    fits = [m.context for name, m in models.items() if model == "auto" or m.family == model]
    return max(fits) if fits else None


def smallest_context(model: str, models: Mapping[str, ModelSpec]) -> int | None:
    """The smallest context any model the name can route to has (a model, a family, or "auto")."""
    if model in models:
        return models[model].context
    fits = [m.context for m in models.values() if model == "auto" or m.family == model]
    return min(fits) if fits else None


def check_context(model: str, prompt_chars: int, models: Mapping[str, ModelSpec], param: str,
                  prompt: str = "") -> int:
    """The prompt's tokens at least (RequestInfo.min_prompt_tokens: the router's context filter keeps the request
    from a model that cannot hold them, core/filters/context.py); a 400 naming `param` where no model the name
    routes to can hold them and an answer's first token. `prompt` is the text of `prompt_chars` whose runs of
    whitespace are counted as one character where the bound could keep the prompt from a model (whitespace_excess)."""
    at_least = prompt_chars // MAX_CHARS_PER_TOKEN
    smallest = smallest_context(model, models)
    if prompt and smallest is not None and not holds(smallest, at_least):
        at_least = (prompt_chars - whitespace_excess(prompt)) // MAX_CHARS_PER_TOKEN
    context = model_context(model, models)
    if context is not None and not holds(context, at_least):
        raise too_long(context, at_least, prompt_chars, param)
    return at_least


_WHITESPACE_RUN = re.compile(r"\s{2,}")


def whitespace_excess(text: str) -> int:
    """The characters of `text`'s runs of whitespace past each run's first: a tokenizer reads a run of spaces as one
    token or a few (SmolLM2: one `a`, 1,500 spaces and one `b` are 27 tokens), so at 8 characters a token the bound
    counted such a prompt far above its tokens (187) and could refuse one that fits (brief TOKEST, review RV6). A
    regular-expression scan (about 1.3 ms on 100 KB): run only for a prompt whose characters alone could keep it from
    a model (check_context)."""
    return sum(m.end() - m.start() - 1 for m in _WHITESPACE_RUN.finditer(text))


def too_long(context: int, at_least: int, prompt_chars: int, param: str) -> InvalidRequest:
    return InvalidRequest(f"This model's maximum context length is {context} tokens. However, your prompt has at "
                          f"least {at_least} tokens ({prompt_chars} characters). Please reduce the length of the "
                          "prompt.", param=param, code="context_length_exceeded")


def refuse_too_long(decision: Decision, view: GridView, at_least: int, prompt_chars: int, param: str,
                    final: frozenset[str]) -> None:
    """The gateway's context check's 400 for a decision with no candidate where some endpoint's model could not hold
    the prompt (the context filter) and every other was rejected by a rule no retry changes (`final`: the model, the
    caller's residency or sites, ...): a user's too-long prompt, not a grid with no eligible site (a 503). The
    context named is the largest of the models the filter rejected, each one the caller can reach (the filter
    runs after the residency and tenant ones: core/registry.py). Where an endpoint that could hold it is down or
    full, the 503 stands: a retry may find it."""
    if decision.chosen is not None:
        return
    filters = {r.filter for r in decision.rejected}
    if CONTEXT not in filters or not filters <= final:
        return
    model_of = {e.id: e.model for e in view.endpoints}
    contexts = [info.context for r in decision.rejected if r.filter == CONTEXT
                if (info := view.models.get(model_of.get(r.endpoint_id, ""))) is not None and info.context is not None]
    if contexts:
        raise too_long(max(contexts), at_least, prompt_chars, param)
