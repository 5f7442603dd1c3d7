"""Refuse, at the gateway, a prompt that cannot fit the model's context (OpenAI's own 400), before any
engine or the firewall reads it.

The gateway does not run the model's tokenizer, so it refuses only when even a generous lower bound on the
token count exceeds the context: MAX_CHARS_PER_TOKEN characters per token (BPE tokenizers average about
4 characters per token on English and fewer on code or other scripts). A prompt that fits is never refused;
one between about 4 and 8 characters per context token passes and meets the engine's own limit.
"""

from __future__ import annotations

from collections.abc import Mapping

from aigrid.errors import InvalidRequest
from aigrid.spec.models import ModelSpec

MAX_CHARS_PER_TOKEN = 8


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


def check_context(model: str, prompt_chars: int, models: Mapping[str, ModelSpec], param: str) -> None:
    context = model_context(model, models)
    if context is None:
        return
    at_least = prompt_chars // MAX_CHARS_PER_TOKEN
    if at_least > context:
        raise InvalidRequest(f"This model's maximum context length is {context} tokens. However, your prompt "
                             f"has at least {at_least} tokens ({prompt_chars} characters). Please reduce the "
                             "length of the prompt.", param=param, code="context_length_exceeded")
