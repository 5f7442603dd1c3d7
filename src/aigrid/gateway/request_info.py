"""From an HTTP request to the core's RequestInfo: client location, residency asked, token estimates, prefix.

Who the caller is, and what its tenant and key allow, is the guard's (security scopes); this module only
reads what the request itself says."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from math import ceil
from typing import Any

from aigrid.agents.prompt_size import prompt_chars
from aigrid.core.types import GeoPoint, RequestInfo
from aigrid.errors import InvalidRequest, ModelNotFound
from aigrid.gateway.schemas import ChatRequest, CompletionRequest
from aigrid.spec.load import parse_point

CHARS_PER_TOKEN = 4
"""Units of prompt_units a token: an English letter or space is one (English averages about 4.5 characters a token), a
digit, a mark (punctuation, a symbol, a control character, a tab) or a byte of a non-ASCII character's UTF-8 four
(SmolLM2's byte-level BPE: a token each digit, about 1.2 characters a token of marks, 1.1 to 1.9 bytes a token of
CJK, emoji or symbols)."""
_CONSONANT, _VOWEL, _SPACE, _DENSE = b"c", b"v", b"w", b"d"
_CLASSES = bytes(
    (_VOWEL if chr(b) in "aeiouAEIOU" else _CONSONANT if chr(b).isalpha() else _SPACE if chr(b) in " \n" else
     _DENSE)[0] if b < 128 else _DENSE[0] for b in range(256))
"""Each byte's class: a vowel, a consonant, a space or newline (one unit each), or the rest: a mark or digit, a
non-ASCII byte (four).
One bytes.translate and a count a class (C speed: scripts/bench_prompt_estimate.py)."""


def prompt_units(text: str | bytes) -> int:
    """A text's prompt tokens, times CHARS_PER_TOKEN: an estimate a crafted text cannot push far below what a byte-level
    BPE tokenizer reads, and near an English text's (until the thirty-eighth session it was the text's characters:
    1,500 emoji were estimated 375 tokens where SmolLM2 reads 4,499, digits a token each were 4x under, random letters
    3x; brief TOKEST). A letter or space is one unit, a digit, mark or non-ASCII byte four (a token), and consonants
    past 1.6 to each vowel three more each (random letters read about 1.3 to 1.7 characters a token, English words
    about 4.5: English has about 0.6 vowels to each consonant, random letters 0.25). `python
    scripts/measure_token_estimate.py` prints the ratio to the real count per class of text."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    kinds = raw.translate(_CLASSES)
    vowels, consonants = kinds.count(_VOWEL), kinds.count(_CONSONANT)
    dense = len(raw) - vowels - consonants - kinds.count(_SPACE)
    return len(raw) + (CHARS_PER_TOKEN - 1) * dense + 3 * max(0, consonants - (8 * vowels) // 5)
ROOM_MARGIN_TOKENS = 32
"""Tokens added to the request's estimate for the room a prompt leaves its answer in the model's context
(engine_output_limit), and for nothing else: an estimate that must not under-count an ordinary prompt. By prompt_units
(thirty-eighth session) the request's estimate under-counts none of 363 code prompts and 33% of 1,160 chat ones, by
19 tokens at most (short German and Italian ones); with the margin none of either. Until then the room was the
characters at 2 a token (ROOM_CHARS_PER_TOKEN; the estimate by characters under-counted 98% of the code prompts, by up
to 1,646 tokens): by prompt_units, which counts code's marks a token each, twice the estimate read a 14,000-character
code prompt (5,904 real tokens) as past an 8,192 context, and its engine would have had no max_tokens at all. A crafted
text may still be under-counted (random letters, by up to 1.2x): its engine may refuse the max_tokens (vLLM's 400, the
client's own request refused). `python scripts/measure_token_estimate.py`, 7 Dec 2026 (docs/security.md)."""
DEFAULT_OUTPUT_TOKENS = 256
"""What a request that sets no output limit of its own reserves of its quota and is costed at by the router (settled to
what the engine decoded; the engine gets the grid's limit: engine_output_limit), and a tool loop's turn that sets
none (a turn's payload always sets one: agents.loop._turn_base)."""
MIN_OUTPUT_ROOM = 16
"""The fewest tokens engine_output_limit sends as a max_tokens smaller than the grid's limit: below it the engine gets
none and its context bounds the answer. The room was estimated at 2 characters a token until the thirty-eighth
session (ROOM_MARGIN_TOKENS), about twice what an English prompt reads, so a room under 16 tokens was a prompt that
really left about half the context: a max_tokens of a few tokens
would cut an answer of a sentence or more (about 20 tokens) to a word, where the engine's context leaves it room. The
floor moves the line between a bound and none by 30 characters of prompt against a floor of 1, and what is left
unbounded, up to the context less the prompt's real tokens, is about the same for any floor this small
(docs/security.md)."""
CONTEXT_STOPPED_KINDS = frozenset({"llamacpp"})
"""Engine kinds that take any max_tokens and stop at their context's end (finish_reason `length`) rather than refuse
one the prompt leaves no room for: llama-server (the embedded engine's kind too, wiring.EMBEDDED_KIND; 4,400
characters of code and max_tokens 1,000 on a 2,048 context answered 200, 1,853 + 195 tokens, `length`, 7 Dec 2026).
Their engines get the grid's limit whole (engine_output_limit): no answer cut before the context cuts it. Every other
kind is taken to validate `prompt + max_tokens <= context` and gets the room: vLLM and SGLang (their 400), TGI (422,
max_total_tokens) and OpenAI's API (400 context_length_exceeded) do; Ollama and a kind not known are not measured, and
a bound that cuts an answer early is the safer mistake than one the engine refuses (docs/engines.md)."""
TEMPLATE_TOKENS_PER_MESSAGE = 8
"""Chat templates wrap each message in role markers (and often a default system prompt)."""
H_LOCATION = "x-aigrid-client-location"
H_RESIDENCY = "x-aigrid-residency"
H_POLICY = "x-aigrid-policy"
H_SESSION = "x-aigrid-session"


def parse_location(value: str | None, cities: Mapping[str, GeoPoint]) -> GeoPoint | None:
    if value is None or not value.strip():
        return None
    point = parse_point(value, cities)
    if point is None:
        known = ", ".join(sorted(c.title() for c in cities))
        raise InvalidRequest(f"{H_LOCATION}: {value.strip()!r} is neither 'lat,lon' (in range) nor a known city; "
                             f"known cities: {known}", param=H_LOCATION)
    return point


def residency(header: str | None) -> frozenset[str] | None:
    """The jurisdictions this request asks to stay in (x-aigrid-residency), if it asks. The caller's scopes
    then authorize them (403 if they widen the tenant's) and narrow them (security.authorize)."""
    if header is None or not header.strip():
        return None
    return frozenset(j.strip().upper() for j in header.split(",") if j.strip())


def hash_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def estimate_prompt_tokens(body: ChatRequest | CompletionRequest) -> int:
    """A request's prompt tokens before an engine tokenizes it: a chat request's messages as a model reads them and
    the tools it offers, by the one count of a chat prompt (agents.prompt_size.prompt_chars: content, tool calls,
    reasoning, a refusal, the tools' JSON), which a tool loop's later turn gets too (turn_prompt_tokens); a
    completion's prompt. What the front doors' token-count routes answer too (Messages count_tokens, Responses
    input_tokens)."""
    if isinstance(body, ChatRequest):
        return chat_prompt_tokens(prompt_chars(body, prompt_units), len(body.messages))
    return max(1, prompt_units(body.prompt_text()) // CHARS_PER_TOKEN)


def chat_prompt_tokens(units: int, messages: int) -> int:
    """A chat prompt of `units` (prompt_units) in `messages` messages, with what the template adds around them."""
    return max(1, units // CHARS_PER_TOKEN + TEMPLATE_TOKENS_PER_MESSAGE * (messages + 2))


def turn_prompt_tokens(payload: Mapping[str, Any]) -> int:
    """A tool loop's later model turn (the conversation so far, with its tool calls and results, and the tools it
    offers, as JSON) estimated as estimate_prompt_tokens estimates a request: the same count (prompt_chars)."""
    return chat_prompt_tokens(prompt_chars(payload, prompt_units), len(payload.get("messages") or ()))


def usable_models(known: Collection[str], may_use: Callable[[str], bool] | None) -> list[str]:
    """The grid's models and `auto` that a caller whose model scope is `may_use` may use, for a model-not-found
    answer (a key learns no model of the grid it may not use)."""
    return sorted(m for m in {*known, "auto"} if may_use is None or may_use(m))


def engine_output_limit(prompt_tokens: int, context: int | None, grid_limit: int, kind: str) -> int | None:
    """The `max_tokens` an engine of `kind` gets for a request that sets no output limit of its own
    (engine_body.bound_output): the grid's limit (gateway.max_output_tokens), always for a kind that stops at its
    context rather than refuse (CONTEXT_STOPPED_KINDS: llama-server; until the thirty-fourth session it got the room
    too, and answers past the room were cut early: 6.78% of the conversation traces' at a 2,048 context,
    output_bound_cost.py), or the room the `context` of the model the attempt's endpoint serves (OutputBound.limit)
    leaves the longest prompt (`prompt_tokens`, longest_prompt_tokens: with ROOM_MARGIN_TOKENS,
    an estimate that does not under-count) where that is less: within what vLLM and SGLang accept (they refuse a
    max_tokens the real prompt leaves no room for) and within the grid's limit. None only where that room is below
    MIN_OUTPUT_ROOM: the engine's context bounds the answer (a validating kind only; it may decode to the context's
    end), which may run past the grid's limit (docs/security.md). Until the thirty-fourth session any room below the grid's limit
    sent none (with the room at 2 characters a token, every prompt past about 8,200 characters on an 8,192 context,
    free to decode to the context's end: review RV1), and until the thirty-third session every such request reached
    the engine with no limit (issue 12). This bounds the engine only: the router costs, and admission reserves, the
    request's max_output_tokens (the client's limit, else DEFAULT_OUTPUT_TOKENS), settled to what the engine decoded
    (a tenant with token limits: its reservation is then widened to their room and `grid_limit` lowered to it,
    Guard.widen, thirty-seventh session);
    reserving the grid's limit instead (39b802d6, same session) refused every such request of a tenant whose
    tokens_per_min is below it and priced it 16x in `aigrid explain`."""
    if kind in CONTEXT_STOPPED_KINDS or context is None or context - prompt_tokens >= grid_limit:
        return grid_limit
    room = context - prompt_tokens
    return room if room >= MIN_OUTPUT_ROOM else None


@dataclass(frozen=True, slots=True)
class OutputBound:
    """What bounds the output of a request that sets no limit of its own (DecisionRecord.output_bound): its longest
    prompt's tokens with ROOM_MARGIN_TOKENS (longest_prompt_tokens) and the grid's limit. Each attempt's engine gets
    `limit` of its own model's context (Proxy._attempt): `auto` and a family name route to models of different
    contexts, and until the thirty-fourth session every candidate got the smallest's (a prompt the small model left
    no room for reached the large one with no max_tokens, free to decode to its context's end: issue 12's hole)."""

    prompt_tokens: int
    grid_limit: int

    def limit(self, context: int | None, kind: str) -> int | None:
        """The max_tokens an engine of `kind` serving a model of `context` tokens gets (engine_output_limit)."""
        return engine_output_limit(self.prompt_tokens, context, self.grid_limit, kind)


def longest_prompt_tokens(body: ChatRequest | CompletionRequest, prompt_tokens: int) -> int:
    """The tokens of the longest prompt the request's engine requests each read with the whole context, with
    ROOM_MARGIN_TOKENS (`prompt_tokens`: the request's estimate, prompt_units), for the room
    engine_output_limit looks at. A completion's list of prompts is an engine request a prompt (engines/fan_out.py),
    each with its own context, so the room is the longest one's, not their sum's (until the review of 39b802d6,
    7 Dec 2026, 16 prompts of 500 tokens left 189 of an 8,192 context and the engine got no max_tokens: issue 12's
    hole). At CHARS_PER_TOKEN (until the thirty-fourth session) a code prompt of 14,000 characters (about 4,100
    tokens) was estimated at 3,524 and sent max_tokens 4,096 on an 8,192 context, past it: vLLM's 400."""
    if isinstance(body, CompletionRequest) and isinstance(body.prompt, list):
        return max(1, max(prompt_units(p) for p in body.prompt) // CHARS_PER_TOKEN) + ROOM_MARGIN_TOKENS
    return prompt_tokens + ROOM_MARGIN_TOKENS


def build_request_info(request_id: str, body: ChatRequest | CompletionRequest, headers: Mapping[str, str],
                       cities: Mapping[str, GeoPoint], known_models: frozenset[str],
                       max_output_tokens: int, default_location: GeoPoint | None = None, *,
                       may_use: Callable[[str], bool] | None = None) -> RequestInfo:
    """`may_use`: the caller's model scope; a model not found is answered with the models it may use only."""
    if body.model != "auto" and body.model not in known_models:
        raise ModelNotFound(f"The model '{body.model}' does not exist on this grid. "
                            f"Available: {', '.join(usable_models(known_models, may_use))}", param="model")
    budget = body.output_budget()
    if budget is not None and budget > max_output_tokens:
        # the field the client sent (output_budget reads max_completion_tokens first): a 400 naming max_tokens for a
        # max_completion_tokens pointed at a field the body did not have (the Responses door renames it
        # max_output_tokens, the Messages door's is max_tokens)
        field = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise InvalidRequest(f"{field} {budget} exceeds this grid's limit of {max_output_tokens}", param=field)
    if budget is None and body.min_tokens is not None and body.min_tokens > max_output_tokens:
        # a body with no limit of its own is sent the grid's as max_tokens (engine_body.bound_output): vLLM refuses a
        # min_tokens past it, its 400 without a param after the routing (one past the body's own limit: the schema's)
        raise InvalidRequest(f"min_tokens ({body.min_tokens:,}) is more than the answer's output limit "
                             f"({max_output_tokens:,}, this grid's, which a request without max_tokens is sent)",
                             param="min_tokens")
    session = headers.get(H_SESSION) or body.user
    conversation = body.conversation_text()  # None unless the prefix is a system prompt
    prefix = body.prefix_text()
    prompt_tokens = estimate_prompt_tokens(body)
    return RequestInfo(
        id=request_id,
        model=body.model,
        prompt_tokens=prompt_tokens,
        max_output_tokens=budget or DEFAULT_OUTPUT_TOKENS,
        client_location=parse_location(headers.get(H_LOCATION), cities) or default_location,
        allowed_jurisdictions=residency(headers.get(H_RESIDENCY)),
        prefix_hash=hash_key(prefix),
        # a system prompt is what its owner caches, whole; a first user turn names a conversation, whose
        # owner holds its history (warm_cache's share of the prompt)
        prefix_tokens=ceil(prompt_units(prefix) / CHARS_PER_TOKEN) if conversation is not None else None,
        # the client's session, else (with a system prompt) the conversation's head: both keys find their
        # warm endpoint (core.predict.warm_cache), the app's shared prompt and this conversation's history
        session=f"s:{session}" if session else (f"c:{hash_key(conversation)}" if conversation else None),
    )
