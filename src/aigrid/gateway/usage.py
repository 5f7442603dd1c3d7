"""Tell an engine's whole answer and token counts the gateway can pass on and charge from what a broken engine sent
instead (a stream's usage chunk is read by relay.py and chat_events.py)."""

from __future__ import annotations

from typing import Any

import orjson

from aigrid.engines.answer_shape import choice_fault
from aigrid.engines.token_counts import count_fault
from aigrid.json_depth import MAX_DEPTH, deeper_than, few_brackets, written

BYTES_PER_TOKEN = 4096
"""The most bytes one token of a whole answer takes: its text, and its log-probabilities with the 20 alternatives
an engine gives at most (about 2 KiB in JSON); a larger answer is not an engine's answer (Proxy.most_bytes)."""
WHOLE_MAX_BYTES = 256 << 20
"""The most bytes of a whole answer of an endpoint whose context is not known (whole_max_bytes)."""


def whole_max_bytes(tokens: int | None) -> int:
    """The most bytes a whole answer of at most `tokens` tokens can be (BYTES_PER_TOKEN a token; at least 1 MiB;
    WHOLE_MAX_BYTES where not known): more is an engine that does not stop, read no further."""
    return WHOLE_MAX_BYTES if tokens is None else max(1 << 20, tokens * BYTES_PER_TOKEN)


class NotAnAnswer(ValueError):
    """An engine's 2xx whole answer that is not a completion: not JSON (an HTML page, a body cut short or compressed),
    or JSON without a `choices` list."""


CACHE_FIELDS = ("timings", "prompt_progress", "__verbose")
"""llama-server's fields of an answer that say how much of the prompt its cache held (`timings.cache_n`; the
`prompt_progress` of `return_progress`, `cache`; `__verbose`'s `tokens_cached`, with the slot and the operator's
settings), with its times: taken out of every answer (cache_counts_out)."""


def cache_counts_out(doc: dict[str, Any], isolated: bool = False) -> dict[str, Any] | None:
    """`doc` (a whole answer or one streamed chunk) without what tells a client how many of its prompt's tokens the
    engine read from its prefix cache, or None where it tells nothing (the usual chunk: no copy). An engine keeps one
    cache for every tenant it serves where the grid cannot salt it (llama-server's slots, cache_salt.py): a tenant
    sending a guess of another tenant's recent prompt read from the count how far the guess matched, token by
    token (docs/security.md, thirty-fourth session). CACHE_FIELDS are left out; `usage.prompt_tokens_details.
    cached_tokens` is written 0 (OpenAI's shape kept: the Messages door's `cache_read_input_tokens`, the Responses
    door's `cached_tokens` read it) unless `isolated`: the answering endpoint keeps each tenant's prefix cache apart
    (the grid salts it: Proxy.isolates), so the count is the overlap of the tenant's own prompts only, which clients
    read for their costs and prompt-cache tuning (OpenAI's answers carry it): kept as the engine sent it. `doc` is
    not changed: the usage a relay metered stays the engine's."""
    out = None
    for key in CACHE_FIELDS:
        if key in doc:
            out = {k: v for k, v in (out or doc).items() if k != key}
    if isolated:
        return out
    usage = doc.get("usage")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    if isinstance(details, dict) and details.get("cached_tokens"):  # (0, absent: nothing told)
        out = dict(out or doc)
        out["usage"] = {**usage, "prompt_tokens_details": {**details, "cached_tokens": 0}}  # type: ignore[dict-item]
    return out


def whole_answer(answer: bytes, most: int | None, *, isolated: bool = False,
                 ) -> tuple[bytes, dict[str, Any] | None, str | None]:
    """An engine's 2xx whole (non-streamed) answer as the gateway passes it on: its bytes, its usage, and why that
    usage was taken out (its counts cannot be charged: token_counts.count_fault; then the answer's count is unknown);
    its cache counts written out (cache_counts_out; `isolated`: its endpoint keeps each tenant's cache apart). Raises
    NotAnAnswer when it is not a completion (a choice of another shape: engines/answer_shape.choice_fault; a list as
    finish_reason raised in a front door, a list as `content` or an object as `arguments` passed the tenant's
    redaction). Written at most once: an answer whose usage is taken out is checked for depth as it is written
    without it (json_depth.written; until 6 Dec 2026 written twice, `scripts/bench_json_depth.py`)."""
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        raise NotAnAnswer(f"not JSON: {answer[:60]!r}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
        raise NotAnAnswer(f"JSON without a list of choices: {answer[:60]!r}")
    # orjson reads 1,024 levels and writes 254: re-written (a redaction, a usage taken out, a front door's
    # translation, a batch's line) it raised, a 500 with the engine's slot never released. The usage first (one level
    # down), which its verdict quotes; then the answer, written once: checked as it is, or written without its usage.
    # An answer of no more brackets than MAX_DEPTH (most) nests no deeper: nothing written to check it
    shallow = few_brackets(answer)
    usage = doc.get("usage")
    if usage is not None and not shallow and written(usage, MAX_DEPTH - 1) is None:
        raise NotAnAnswer(_DEEP)
    if usage is None or isinstance(usage, dict):
        why = None if usage is None else count_fault(usage, most)
    else:
        why = f"usage is {str(usage)[:40]}, not an object"
    stripped = None
    if why is None:
        if not shallow and deeper_than(answer, doc):
            raise NotAnAnswer(_DEEP)
        if (told := cache_counts_out(doc, isolated)) is not None:  # (no deeper than MAX_DEPTH: written as is)
            stripped = orjson.dumps(told)
    else:
        del doc["usage"]
        doc = cache_counts_out(doc, isolated) or doc
        stripped = orjson.dumps(doc) if shallow else written(doc)
        if stripped is None:
            raise NotAnAnswer(_DEEP)
    for choice in doc["choices"]:
        fault = choice_fault(choice, whole=True)
        if fault is not None:
            raise NotAnAnswer(f"{fault}: {str(choice)[:60]}")
    if stripped is None:
        return answer, usage, None
    return stripped, (usage if why is None else None), why


_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels (or that JSON's writer cannot write again)"

