"""The parts of the OpenAI request schema the gateway checks before routing.

Unknown fields are allowed and passed to the engine untouched (engines accept many extensions); the
fields routing depends on are validated strictly so that a bad request gets a 400 naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from aigrid.agents.prompt_size import PART_TEXTS
from aigrid.engines.fan_out import MAX_CHOICES
from aigrid.json_depth import MAX_DEPTH, deeper_than

CALL_ID = r"^[A-Za-z0-9_.:-]*$"
"""A tool call's id: OpenAI's `call_...`, Anthropic's `toolu_...`, vLLM's `chatcmpl-tool-...`, Kimi's
`functions.NAME:0`, a UUID; empty (some llama.cpp builds answered `"id": ""`); never a sentence."""
_CALL_ID = re.compile(CALL_ID)
TEXT_PARTS = frozenset({"text", "input_text", "output_text", None})
"""The content part types that carry text (OpenAI's, the Responses API's; a part with no type: its `text`)."""
IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
"""The content part types that carry an image (OpenAI's, the Responses API's and Anthropic's names)."""


TOOL_CALL_TYPES = ("function", "custom")
"""OpenAI's kinds of tool call (a function's, with `function`; a custom tool's, with `custom`)."""


def _call_id(field: str, cid: Any) -> None:
    if cid is not None and not (isinstance(cid, str) and len(cid) <= 128 and _CALL_ID.match(cid)):
        raise ValueError(f"{field}: a call's id is up to 128 letters, digits and _ - . : (templates print it into "
                         "the prompt, which the firewall reads only as text it knows)")


def _unread(what: str) -> ValueError:
    return ValueError(f"{what} is not served by this grid: the AI firewall cannot read what it puts into the prompt")


MAX_PARTS = 10_000
"""The most messages (input items) and content parts one request holds, counted on the raw JSON before any is
validated, the same on every front door: chat `messages` with their content parts and tool calls, Anthropic
`messages` with their blocks and a tool result's, the Responses API's `input` items with their parts (a batch's
lines too: each is validated as its route's request). OpenAI's API takes at most 2,048 messages; 10,000 is about
five parts each. The firewall reads each part, and where short user parts follow each other their seams, so its
cost is per part: 100,000 parts of "12 " (3.2 MB) were validated before the firewall's own bound refused them
(the firewall's own bound: 0.9-4.1 s of the event loop, load 1.8-4.5; now 0.15-0.4 s, the JSON's parse), and
the Anthropic and Responses front doors, which join a turn's text parts, served them. The firewall's own bound
(`screen.MAX_TOGETHER`, under the tenant's policy: 4,000 texts read together across their seams, up to 0.88 ms
each, or 20,000 others) still holds the texts it reads, the parts and those beside them (documents, template
variables, tool definitions)."""


def bounded_parts(items: Any) -> Any:
    """`items` (a request's messages or input items) as they are, unless they and their parts number more than
    MAX_PARTS: then the client's 400 naming the field. Read on the raw JSON, before each item is validated."""
    count = counted_parts(items)
    if count > MAX_PARTS:
        raise ValueError(f"{count:,} messages and content parts in one request, more than the {MAX_PARTS:,} one "
                         "request may hold: join the text parts, or send fewer")
    return items


def bounding(field: str) -> Any:
    """The validator that holds a model's `field` (its messages or input items) to MAX_PARTS (bounded_parts)."""
    return field_validator(field, mode="before")(classmethod(lambda cls, v: bounded_parts(v)))


def counted_parts(items: Any) -> int:
    """The items (messages, input items) and their parts (_parts), as MAX_PARTS counts them: on the raw JSON
    (bounded_parts) or on the models validated from it (an Anthropic request's system blocks, counted with its
    validated messages). Past MAX_PARTS items their parts are not counted."""
    count = len(items) if isinstance(items, list) else 0
    if 0 < count <= MAX_PARTS:
        count += sum(_parts(item) for item in items)
    return count


def _field(item: Any, key: str) -> Any:
    """A raw JSON object's `key`, or a validated model's field (or extra) of that name; None if neither."""
    if isinstance(item, dict):
        return item.get(key)
    return getattr(item, key, None) if isinstance(item, BaseModel) else None


def _parts(item: Any) -> int:
    """A message's (item's) parts: its content list, tool calls, a function call output's list, and each block's own
    content list (an Anthropic tool result's)."""
    count = 0
    for key in ("content", "tool_calls", "output"):
        inner = _field(item, key)
        if isinstance(inner, list):
            count += len(inner) + sum(len(c) for b in inner if isinstance(c := _field(b, "content"), list))
    return count


Refused = SkipJsonSchema[Any]
"""An engine's own field the gateway refuses whatever its value (a validator of _Common): declared so that it is
read and refused, and left out of /openapi.json, which offered it as a field served."""
Dropped = SkipJsonSchema[Any]
"""An engine's own field the gateway takes out of the body it sends (drop_unserved), whatever its value: declared so
that it is documented here and left out of /openapi.json, as it is not served."""


def served_tier(v: str | None) -> str | None:
    """OpenAI's `service_tier` as the chat and Responses doors take it: the grid has one tier, so `auto` and
    `default` (and null) pass, and `flex`, `scale` and `priority` are refused on both doors (the Responses API took
    them and served the grid's one tier, the client told nothing: twenty-eighth session)."""
    if v not in (None, "auto", "default"):
        raise ValueError(f"the service tier {v!r} is not served by this grid: it has no tiers (send 'auto' or "
                         "'default', or leave it out; a request's urgency is the x-aigrid-priority header)")
    return v


ASKS_NOTHING: dict[str, Any] = {
    "return_hidden_states": False, "vllm_xargs": {}, "mm_processor_kwargs": {}, "media_io_kwargs": {},
    "grammar_triggers": []}
"""Refused fields' values that ask nothing of the engine, its own default (SGLang's client sends
`return_hidden_states: false`): they pass, as a null does (review RV3 of 53bdd543)."""


def asks_nothing(name: str, v: Any) -> bool:
    """Whether `v`, the value of field `name`, is that field's ASKS_NOTHING value (of its type: 0 is not false)."""
    nothing = ASKS_NOTHING.get(name, None)
    return nothing is not None and type(v) is type(nothing) and v == nothing


def _refusing(reasons: dict[str, str]) -> Any:
    """The one validator of a model's refused fields: any value of a field named in `reasons` is refused with
    its reason (declare the field `Refused`, or `Any` where /openapi.json shows it); a null, or a value in
    ASKS_NOTHING, passes."""
    def refused(cls: type, v: Any, info: ValidationInfo) -> Any:
        field = str(info.field_name)
        if v is not None and not asks_nothing(field, v):
            raise ValueError(reasons[field])
        return v
    return field_validator(*reasons)(classmethod(refused))


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    """OpenAI's rule for a participant's or a function's name: templates and the tool loop print it into the
    prompt (a legacy `function` message's, as the tool's name), and the firewall does not read it."""
    tool_call_id: str | None = None
    """The call a tool result answers. Templates print it into the prompt (Mistral's: `"call_id": "..."` beside the
    result) and the firewall does not read it: an id, not a sentence (CALL_ID)."""

    audio: Refused = None
    """An assistant turn's earlier audio answer (OpenAI's `{"id": "audio_..."}`): this grid writes text only, so the
    audio is none of its answers, and the engine dropped it (the model did not read what it had said). Refused."""
    tool_calls: list[dict[str, Any]] | None = None
    """An assistant turn's tool calls: the firewall reads every string of each (model_texts._call) but its `id`,
    held as `tool_call_id` is, and its `type`, one of TOOL_CALL_TYPES."""

    _refused = _refusing({"audio": "an earlier audio answer is not served by this grid (its models answer in text "
                                   "only): send what it said as the message's content"})

    @field_validator("tool_call_id")
    @classmethod
    def _answered_id(cls, v: str | None) -> str | None:
        _call_id("tool_call_id", v)
        return v

    @field_validator("tool_calls")
    @classmethod
    def _calls(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for k, call in enumerate(v or ()):
            _call_id(f"tool_calls[{k}].id", call.get("id"))
            if call.get("type", "function") not in TOOL_CALL_TYPES:
                raise ValueError(f"tool_calls[{k}].type: a tool call is of type 'function' or 'custom', not "
                                 f"{call.get('type')!r}")
        return v

    @field_validator("content")
    @classmethod
    def _parts_the_firewall_reads(cls, v: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        """A content part is text (a string `text`, typed as OpenAI's, the Responses API's or not at all), an
        assistant's refusal (a string `refusal`), or an image (served to models with `vision: true`:
        modalities.py). Any other part (a file or PDF, audio, video, vLLM's `image_embeds`, a part of the client's
        own kind, with a `text` beside it or not) puts into the prompt what the firewall cannot read: refused,
        naming the part (it went to the engine unread). An image part's `uuid` (vLLM's, PR 23449: the key of the
        engine's multimodal caches in place of the image's hash) is refused: vLLM uses it as written, in caches every
        tenant's requests share, so a request naming another tenant's uuid was answered about that tenant's image
        (vllm-project/vllm issue 55439; PR 53471, which scoped it, closed unmerged); until the thirty-third session
        it was passed on."""
        for j, part in enumerate(v if isinstance(v, list) else ()):
            kind = part.get("type")
            if not isinstance(kind, str | None):
                raise _unread(f"content[{j}]: a content part whose type is not a string")
            if kind in IMAGE_PARTS and part.get("uuid") is not None:
                raise ValueError(f"content[{j}].uuid is not served by this grid: vLLM keys the encoder cache every "
                                 "tenant's requests share by it as written, and serves another's image to whoever "
                                 "names its uuid (send the image without one)")
            if kind in IMAGE_PARTS or (kind == "refusal" and isinstance(part.get("refusal"), str)) or (
                    kind in TEXT_PARTS and isinstance(part.get("text"), str)):
                continue
            raise _unread(f"content[{j}]: a content part of type {kind!r}" if kind not in TEXT_PARTS
                          else f"content[{j}]: a text part without a string `text`")
        return v

    @model_validator(mode="after")
    def _has_content(self) -> Message:
        """OpenAI's rule for `content` (the SDK's message types): a system, developer, user or tool message carries
        it, a string or a list of parts, not null; a legacy `function` message carries the key (null allowed); an
        assistant message may leave it out only when it calls tools (`tool_calls`, or a legacy `function_call`) or
        refused (a string `refusal`: the openai SDK's assistant message type; OpenAI's Agents SDK sends a refused
        answer back as history so, with no content; engine_body.for_engine gives the engine its refusal as content).
        `{"role": "user"}` went to the engine, and llama.cpp's 400 ("All non-assistant messages must contain
        'content'") reached the client without a `param`. Refused naming `messages.N.content`: a ValidationError
        raised here keeps its location under the message's (pydantic-core adds the outer `messages.N`)."""
        given = "content" in self.model_fields_set
        if self.role == "assistant":
            extra = self.model_extra or {}
            calls = self.tool_calls or extra.get("function_call")
            missing = not given and not calls and not isinstance(extra.get("refusal"), str)
            why = ("an assistant message carries `content` unless it calls tools (`tool_calls` or `function_call`) "
                   "or is a refusal (a string `refusal`)")
        elif self.role == "function":
            missing = not given
            why = "a `function` message carries `content` (the function's result; null if it returned none)"
        else:
            missing = self.content is None
            why = (f"a {self.role} message carries `content`, a string or a list of content parts"
                   f"{', not null' if given else ''}")
        if missing:
            raise ValidationError.from_exception_data("Message", [InitErrorDetails(
                type=PydanticCustomError("missing", why), loc=("content",), input=self.content)])
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = Field(default=None, strict=True)
    """A boolean (`"yes"` was taken as true, and was llama.cpp's own 400: number_fields)."""


def number_fields(*fields: str) -> Any:
    """The validator that refuses a string or a boolean for a number field: a 400 naming the field, as OpenAI's
    ("Invalid type for 'temperature'") and Anthropic's ("temperature: Input should be a valid number") APIs refuse
    it, on every door that has the field (chat, completions, Responses, Messages). Pydantic's lax int and float took `"0"` as 0 and `true` as 1, and the body
    went on to the engine as sent: llama.cpp answered its own 400 ("[json.exception.type_error.302] type must be
    number, but is string", no `param`) after the request was routed and counted. (A strict int would refuse 100.0,
    which engines read as 100: still served.) The booleans of these requests are strict for the same reason:
    `"stream": "true"` was a stream to the schema and none to the proxy, which reads the body as sent."""
    def number(cls: type, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, str | bool):
            kind = "a string" if isinstance(v, str) else "a boolean"
            raise ValueError(f"expected a number, got {kind} ({str(v).lower() if isinstance(v, bool) else repr(v)})")
        return v
    return field_validator(*fields, mode="before")(classmethod(number))


def null_is_default(*fields: str) -> Any:
    """The validator that reads a null as the field's default (`"stream": null`: not streamed; `"store": null` on the
    Responses API: stored), on every door: OpenAI's "boolean or null", and the openai SDK's own `stream=None` and
    `store=None`, sent as nulls. Before it, pydantic's "Input should be a valid boolean"."""
    def default(cls: type[BaseModel], v: Any, info: ValidationInfo) -> Any:
        return cls.model_fields[str(info.field_name)].default if v is None else v
    return field_validator(*fields, mode="before")(classmethod(default))


_INSTEAD = {"n_probs": "ask with logprobs and top_logprobs (at most 20; a completion's logprobs, at most 20)",
            "n_predict": "set max_tokens (or max_completion_tokens)", "n_cmpl": "ask for n choices"}
"""What to send instead of llama-server's own fields (_Common): each asks every engine the same, counted."""
_STATE = "it names engine state of other requests (the grid places each request itself)"
_CODE = "it is code the engine would run for the client"
_ADAPTER = ("it picks an adapter on the engine beside the model the grid routed, priced and scoped (an adapter the grid "
            "serves is a model of its own: name it as the model)")
_REFUSED = {
    **{name: f"llama-server's {name} is not served by this grid: {instead}" for name, instead in _INSTEAD.items()},
    **{name: f"{name} is not served by this grid: {_STATE}" for name in (
        "kv_transfer_params", "id_slot", "bootstrap_host", "bootstrap_port", "bootstrap_room", "session_params", "rid",
        "request_id", "data_parallel_rank", "decode_dp_rank")},
    **{name: f"{name} is not served by this grid: {_CODE}" for name in ("custom_logit_processor", "logits_processors")},
    **{name: f"{name} is not served by this grid: {_ADAPTER}" for name in ("lora_path", "lora")},
    "return_hidden_states": "return_hidden_states is not served by this grid: it answers the model's internal states "
                            "beside its text (what distils the model), unbounded and uncounted",
    "vllm_xargs": "vllm_xargs is not served by this grid: its keys reach the engine's extensions and connectors as "
                  "the operator's own settings (a kv_transfer_params among them crashed vLLM's engine)",
    "mm_processor_kwargs": "mm_processor_kwargs is not served by this grid: it overrides how the engine processes "
                           "images, which its operator set for the memory the engine reserved",
    "media_io_kwargs": "media_io_kwargs is not served by this grid: it overrides how the engine loads images and "
                       "videos (how many frames it decodes), which its operator set for the memory the engine reserved",
    **{name: f"llama-server's {name} is not served by this grid: it sets how the engine shifts a full context, "
             "which a value past the context's crashes (the grid holds every answer within the model's context)"
       for name in ("n_keep", "n_discard")},
    **{name: f"llama-server's {name} is not served by this grid: it is the engine's own parser of the answer, which "
             "its chat template sets (one sent by the client is read unchecked)" for name in ("chat_format",
                                                                                               "chat_parser")},
    "n_cache_reuse": "llama-server's n_cache_reuse is not served by this grid: it turns on the engine's reuse of "
                     "cached chunks by KV shifting, which its operator sets (--cache-reuse)",
    "verbose": "llama-server's verbose is not served by this grid: its `__verbose` answer holds the engine's slot, "
               "settings and cache count (how many of the prompt's tokens the engine's cache held, a read of other "
               "tenants' recent prompts) (leave it out)",
    "guided_decoding_backend": "vLLM's guided_decoding_backend is not served by this grid: the structured-output "
                               "backend is the engine operator's choice, and the grid bounds grammars, regular "
                               "expressions and schemas for the backends it configured (leave it out)",
    "grammar_triggers": "llama-server's grammar_triggers is not served by this grid: the engine compiles each as a "
                        "C++ std::regex, which a long or deeply nested one crashes, and with it every request there "
                        "(send the grammar without grammar_lazy)",
}
"""The engines' own fields _Common reads and refuses (declared `Refused`), each with why: one validator for all."""
DROPPED = {name: f"llama-server's {name} is not served by this grid: its events tell how many of the prompt's tokens "
                 "the engine's cache held, which on an engine the grid cannot salt is a read of other tenants' recent "
                 "prompts" for name in ("return_progress", "timings_per_token")}
"""The engines' own fields taken out of a request's body before any engine reads it (declared `Dropped`), each with
why: fields a popular client sends by default (llama.cpp's web UI), whose refusal broke that client, and without which
the engine answers the same text."""


NO_LIMIT = {"max_tokens": "-1 is llama.cpp's (and OpenAI-compatible servers') `no limit`, which llama.cpp's web UI "
                          "sends by default: read as not set, the grid's own output limit applies"}
"""Output limits whose -1 (and only -1: 0 and other negatives are the client's 400) is read as not set: taken out of
the body before the schema reads it (drop_unserved), each with why. Only the integer -1, as the web UI sends it: -1.0
is no client's `no limit` (OpenAI's API refuses any float limit; the grid reads 100.0 as 100, as engines do:
number_fields), so it reaches the schema, whose `ge=1` makes it the 400 naming the field (until the thirty-fifth
session it was dropped as -1 was, FIX6)."""


def drop_unserved(body: dict[str, Any]) -> dict[str, str]:
    """Takes DROPPED's fields, and NO_LIMIT's where they are -1, out of `body` (the one the schema reads and the
    engine is sent), before the schema reads it; returns each name it took out with why, for the caller's log line."""
    gone = {name: why for name, why in DROPPED.items() if name in body}
    gone |= {name: why for name, why in NO_LIMIT.items() if type(v := body.get(name)) is int and v == -1}
    for name in gone:
        del body[name]
    return gone


MAX_GRAMMAR_NESTING = 1000
"""The deepest a client's grammar may nest its groups (llama.cpp's PR 26602 bound). llama.cpp parses GBNF by recursion,
one level per `(`: a chat request whose grammar nested 60,000 groups (120 KB) killed the embedded llama-server 0.3.36
(measured, thirty-second session; llama.cpp issue 26600); 5,000 parsed there."""
MAX_GRAMMAR_CHARS = 256 * 1024
"""The longest a client's grammar may be (a GBNF grammar written by hand is a few KB; llama.cpp's json.gbnf 1 KB): what
bounds the nesting scan's cost on the event loop (a 4 MiB grammar of escapes cost it 1.3 s at load 18 on 2 cores)."""
GRAMMAR_FIELDS = ("grammar", "guided_grammar", "ebnf")
"""The engines' grammar fields, passed on as written: llama-server's GBNF, vLLM's and SGLang's EBNF."""
_GRAMMAR_TEXT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|\[[^\]\\]*(?:\\.[^\]\\]*)*\]?|#[^\r\n]*')
"""What holds parentheses that are not groups: a literal, a character class, a comment (to the end of its line:
a '\\r' or '\\n', where llama.cpp's parse_space ends it; read to the '\\n' only, groups after a lone '\\r' went
uncounted until review RV1 of fe0745b7)."""


LARK_FIELDS = ("guided_grammar", "ebnf")
"""The grammar fields an engine may read as Lark (vLLM's guidance backend, llguidance, reads `guided_grammar` and
`structured_outputs.grammar` in Lark's syntax or GBNF's; SGLang's llguidance backend its `ebnf`), where `[...]` is an
optional group, not a character class: their nesting is read both ways (lark_nesting)."""
LLGUIDANCE = "%llguidance"
"""What a grammar llama.cpp reads as Lark begins with (common/sampling.cpp: a build with LLAMA_LLGUIDANCE hands it to
llguidance): its `grammar` is read as Lark too then."""
_LARK_TEXT = re.compile(r'"(?:\\.|[^"\\\n])*"?|(?:#|//)[^\n]*|/(?:\\.|[^/\\])+/?')
"""What holds brackets that are not groups in Lark as llguidance lexes it (parser/src/lark/lexer.rs): a literal (a
JSON string, on one line), a comment (`#` or `//`, to the end of its line), a regular expression (`/.../`, lines and
all; its own groups are the regex engine's). An unclosed one runs to the end here, where llguidance's lexer fails
before its parser reads a bracket."""
REGEX_FIELDS = ("guided_regex", "regex", "guided_whitespace_pattern")
"""The engines' regular-expression fields, passed on as written: vLLM's `guided_regex` (since its v0.12
`structured_outputs.regex`), SGLang's `regex`, and vLLM's `guided_whitespace_pattern` (since its v0.12
`structured_outputs.whitespace_pattern`: the whitespace a JSON answer may hold, a regular expression its outlines and
guidance backends compile into the schema's grammar; unread until the thirty-fourth session)."""
_REGEX_TEXT = re.compile(r"\\.|\[(?:[^\]\\]|\\.)*\]?", re.DOTALL)
"""What holds parentheses that are not groups in a regular expression: an escape, a character class."""
JSON_TEXT_FIELDS = ("guided_json", "json_schema", "structural_tag")
"""The engines' fields that take a JSON schema (or vLLM's and SGLang's structural tag, schemas inside) as a string:
vLLM's `guided_json` (a string or an object; since v0.12 `structured_outputs.json`, and `structured_outputs.
structural_tag`), SGLang's `json_schema` and `structural_tag`. As an object the body's own depth bound holds it
(json_depth.MAX_DEPTH); as a string it went to the engine's schema compiler at any depth."""


def _depth(raw: np.ndarray, opens: tuple[int, ...], closes: tuple[int, ...]) -> int:
    """The deepest `raw`'s bytes nest, each of `opens` a level in and each of `closes` one out, never below 0 (a
    parser reads no level below its rule's: a stray close before a deep group does not hide it). The walk clamped at
    0 is the running sum less its running minimum below 0."""
    steps = np.zeros(len(raw), dtype=np.int32)
    for b in opens:
        steps += raw == b
    for b in closes:
        steps -= raw == b
    total = np.cumsum(steps)
    return int((total - np.minimum(np.minimum.accumulate(total), 0)).max(initial=0))


def _bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)


def grammar_nesting(text: str) -> int:
    """How deep `text`'s groups nest, parentheses in literals, character classes and comments not counted (scanned
    by the regex engine and numpy: 256 KiB of parentheses or of escapes in a literal, 20-90 ms at load 16 on 2 cores).
    No byte of a longer UTF-8 character is a bracket."""
    return _depth(_bytes(_GRAMMAR_TEXT.sub(" ", text)), (40,), (41,))


def lark_nesting(text: str) -> int:
    """How deep `text`'s groups nest read as Lark: `(...)` and `[...]` (an optional group) both, brackets in literals,
    regular expressions and `//` comments not counted."""
    return _depth(_bytes(_LARK_TEXT.sub(" ", text)), (40, 91), (41, 93))


def regex_nesting(text: str) -> int:
    """How deep a regular expression's groups nest, escaped parentheses and those in character classes not
    counted. xgrammar (vLLM's and SGLang's default backend) turns a regex into an EBNF grammar group for group
    (RegexConverter), which its grammar parser then reads as a grammar's groups."""
    return _depth(_bytes(_REGEX_TEXT.sub(" ", text)), (40,), (41,))


SCHEMA_FIELDS = ("response_format", "tools", "guided_json", "json_schema", "structured_outputs", "structural_tag")
"""The body fields that hold JSON schemas an engine compiles into a grammar (OpenAI's `response_format` and the
function tools' `parameters`, vLLM's and SGLang's own), each schema's `pattern`s bounded as a regex field is, and
xgrammar's structural tags, whose grammar formats are bounded as a grammar field is (schema_patterns)."""


def schema_patterns(value: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Each `pattern` string (and `patternProperties` key) of the JSON schemas in `value`, and each grammar of a
    structural tag's `{"type": "grammar", "grammar": ...}` format (xgrammar's EBNF; its path ends in `grammar`:
    constraint_fault), with its path: walked with a stack (the body's depth is bounded, json_depth.MAX_DEPTH)."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            if isinstance(pattern := node.get("pattern"), str):
                yield (*path, "pattern"), pattern
            if node.get("type") == "grammar" and isinstance(grammar := node.get("grammar"), str):
                yield (*path, "grammar"), grammar
            if isinstance(named := node.get("patternProperties"), dict):
                yield from (((*path, "patternProperties"), key) for key in named)  # a key is no name to quote
            stack.extend(((*path, k), v) for k, v in node.items() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend(((*path, i), v) for i, v in enumerate(node) if isinstance(v, dict | list))


def regex_fault(v: str) -> str | None:
    """Why a regular expression is past the bound an engine compiles safely (its length, MAX_GRAMMAR_CHARS; its
    groups' nesting, MAX_GRAMMAR_NESTING), or None."""
    if len(v) > MAX_GRAMMAR_CHARS:
        return (f"the regular expression is {len(v)} characters long; this grid passes one of at most "
                f"{MAX_GRAMMAR_CHARS} characters")
    depth = regex_nesting(v) if v.count("(") > MAX_GRAMMAR_NESTING else 0
    if depth > MAX_GRAMMAR_NESTING:
        return (f"the regular expression is nested {depth} groups deep; this grid passes regular expressions nested "
                f"at most {MAX_GRAMMAR_NESTING} deep (the engine compiles each group into a grammar's group, which its "
                "parser reads by recursion, as a grammar's)")
    return None


def grammar_fault(v: str, lark: bool = False) -> str | None:
    """Why a grammar (GBNF or EBNF; read as Lark too where `lark`) is nested past MAX_GRAMMAR_NESTING groups, or
    None (its length: MAX_GRAMMAR_CHARS)."""
    if len(v) > MAX_GRAMMAR_CHARS:
        return f"the grammar is {len(v)} characters long; this grid passes one of at most {MAX_GRAMMAR_CHARS} characters"
    depth = grammar_nesting(v) if v.count("(") > MAX_GRAMMAR_NESTING else 0  # no deeper than its groups are many
    if lark and v.count("(") + v.count("[") > MAX_GRAMMAR_NESTING:
        depth = max(depth, lark_nesting(v))
    if depth > MAX_GRAMMAR_NESTING:
        return (f"the grammar is nested {depth} groups deep; this grid passes grammars nested at most "
                f"{MAX_GRAMMAR_NESTING} deep (an engine's parser recurses once per group, and a deeper one "
                "crashed llama-server for every request on it)")
    return None


def constraint_fault(path: tuple[str | int, ...], text: str) -> str | None:
    """regex_fault of a schema's pattern, grammar_fault of a structural tag's grammar (schema_patterns' paths)."""
    return grammar_fault(text) if path[-1] == "grammar" else regex_fault(text)


def check_schema_patterns(data: Any) -> Any:
    """A body's JSON schemas (SCHEMA_FIELDS) with every `pattern` within regex_fault's bound and every structural
    tag's grammar within grammar_fault's (until review RV1 of b42ac1b7 unread), else the client's 400 naming the
    place (`response_format.json_schema.schema.properties.id.pattern`). Read on the raw JSON."""
    if not isinstance(data, dict):
        return data
    for field in SCHEMA_FIELDS:
        value = data.get(field)
        if not isinstance(value, dict | list):
            continue
        for path, pattern in schema_patterns(value):
            fault = constraint_fault(path, pattern)
            if fault is not None:
                raise ValidationError.from_exception_data("Request", [InitErrorDetails(
                    type=PydanticCustomError("value_error", fault), loc=(field, *path), input=pattern)])
    return data


def bounded_grammars(*fields: str) -> Any:
    """The validator of a body's grammar fields: each a string nested at most MAX_GRAMMAR_NESTING groups deep (read
    as Lark too where an engine may read it so: LARK_FIELDS)."""
    return field_validator(*fields)(classmethod(_bounded_grammar))


def bounded_regexes(*fields: str) -> Any:
    """The validator of a body's regular-expression fields: each a string of at most MAX_GRAMMAR_CHARS characters,
    its groups nested at most MAX_GRAMMAR_NESTING deep."""
    return field_validator(*fields)(classmethod(_bounded_regex))


def bounded_json_texts(*fields: str) -> Any:
    """The validator of a body's fields that take a JSON schema as a string (JSON_TEXT_FIELDS): JSON, nested at most
    json_depth.MAX_DEPTH levels, as the body itself, each `pattern` within regex_fault's bound (as
    check_schema_patterns holds a schema sent as an object; until review RV1 of b42ac1b7 one sent as a string
    passed a pattern at any depth and length)."""
    return field_validator(*fields)(classmethod(_bounded_json_text))


def _string_within(v: Any, field: str, what: str) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{field} must be a string, {what} (got {type(v).__name__})")
    if len(v) > MAX_GRAMMAR_CHARS:
        raise ValueError(f"the {what.split(' ', 1)[1]} is {len(v)} characters long; this grid passes one of at most "
                         f"{MAX_GRAMMAR_CHARS} characters")
    return v


def _bounded_grammar(cls: type, v: Any, info: ValidationInfo) -> Any:
    if v is None:
        return v
    field = str(info.field_name)
    _string_within(v, field, "a grammar")
    fault = grammar_fault(v, lark=field in LARK_FIELDS or cls is StructuredOutputs or v.startswith(LLGUIDANCE))
    if fault is not None:
        raise ValueError(fault)
    return v


def _bounded_regex(cls: type, v: Any, info: ValidationInfo) -> Any:
    if v is None:
        return v
    if not isinstance(v, str):
        raise ValueError(f"{info.field_name} must be a string, a regular expression (got {type(v).__name__})")
    fault = regex_fault(v)
    if fault is not None:
        raise ValueError(fault)
    return v


def bounded_choices(*fields: str) -> Any:
    """The validator of a body's choice fields (vLLM's `guided_choice`, `structured_outputs.choice`): a list of strings
    of at most MAX_GRAMMAR_CHARS characters in all. vLLM makes them a grammar of alternatives (`root ::= "a" | "b"`),
    which its backend compiles as it does a client's grammar: held to a grammar's length."""
    return field_validator(*fields)(classmethod(_bounded_choices))


def _bounded_choices(cls: type, v: Any, info: ValidationInfo) -> Any:
    if v is None:
        return v
    if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
        raise ValueError(f"{info.field_name} is a list of strings, the answers the model may give")
    total = sum(len(c) for c in v)
    if total > MAX_GRAMMAR_CHARS:
        raise ValueError(f"the choices are {total:,} characters in all; this grid passes at most {MAX_GRAMMAR_CHARS:,} "
                         "(the engine compiles them into a grammar of alternatives, held to a grammar's length)")
    return v


def bounded_entries(field: str, fits: Callable[[Any], bool], shape: str, entries: str, most: int, why: str) -> Any:
    """The validator of a field of at most `most` entries (llama-server's `samplers`, `dry_sequence_breakers`; vLLM's
    `stop_token_ids`, `bad_words`), passed on as written: one that does not `fits` is the 400 saying it is `shape`,
    one of more entries the 400 saying how many `entries` it holds and `why` no more are served."""

    def few(cls: type, v: Any) -> Any:
        if v is None:
            return v
        if not fits(v):
            raise ValueError(f"{field} is {shape}")
        if len(v) > most:
            raise ValueError(f"{field} holds {len(v):,} {entries}; at most {most:,} are served ({why})")
        return v

    return field_validator(field)(classmethod(few))


def _bounded_json_text(cls: type, v: Any, info: ValidationInfo) -> Any:
    if not isinstance(v, str):
        return v  # an object (or the engine's own error): the body's depth bound holds it
    field = str(info.field_name).rstrip("_")  # `json_`: StructuredOutputs' `json`, which BaseModel's json() shadows
    raw = v.encode("utf-8", "surrogatepass")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError(f"{field} as a string is a JSON schema, and this one is not JSON (or nests deeper than "
                         f"{MAX_DEPTH} levels)") from None
    if deeper_than(raw, value):
        raise ValueError(f"the JSON schema in {field} is nested deeper than {MAX_DEPTH} levels of objects and arrays, "
                         "the most a request's JSON may nest (the engine's schema compiler recurses once per level)")
    for path, pattern in schema_patterns(value):  # as check_schema_patterns reads a schema sent as an object
        fault = constraint_fault(path, pattern)
        if fault is not None:
            raise ValueError(f"{field} at {'.'.join(map(str, path))}: {fault}")
    return v


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs` (since its v0.12 the only way to its grammar: `guided_grammar` and the other
    `guided_*` fields were removed): its `grammar` bounded as `grammar` is (read as Lark too: its guidance backend
    reads Lark), its `regex` and `whitespace_pattern` as `guided_regex` is, its `json` and `structural_tag` (strings of
    JSON) as `guided_json` is, its `choice` as `guided_choice` is; the rest passed on as written. Until review RV1 of
    fe0745b7 a grammar nested past MAX_GRAMMAR_NESTING reached a current vLLM here unread; its regex and JSON until the
    thirty-third session, its whitespace_pattern and choice until the thirty-fourth."""

    model_config = ConfigDict(extra="allow")
    grammar: Any = None
    regex: Any = None
    json_: Any = Field(default=None, alias="json")
    structural_tag: Any = None
    whitespace_pattern: Any = None
    _grammars = bounded_grammars("grammar")
    _regexes = bounded_regexes("regex", "whitespace_pattern")
    _json_texts = bounded_json_texts("json_", "structural_tag")
    choice: Any = None
    _choices = bounded_choices("choice")


MAX_STEP_ENTRIES = 1024
"""The most stop sequences (`stop`), banned words (vLLM's `bad_words`) and stop token ids (vLLM's and SGLang's
`stop_token_ids`) one request may hold: the engine checks each at every step it samples (llama-server's
find_stopping_strings walks every stop string for each token, in the one loop that serves all its slots; vLLM's
bad_words, vllm/v1/sample/ops/bad_words.py, loops over each word per request per step in Python; its scheduler's
check_stop scans the stop_token_ids list), the cost of every tenant's requests batched with it. Until the thirty-third
session only the body's size bounded either (100,000 of each were served). MAX_LOGIT_BIAS's figure, OpenAI's bound
of a map checked each step."""
MAX_LOGIT_BIAS = 1024
"""The most tokens one request's `logit_bias` may bias: OpenAI's API refuses more ("Invalid 'logit_bias': too many
properties. Expected an object with at most 1024 properties"). Until the thirty-third session only the body's size
bounded it (a 4 MiB body holds about 300,000 entries), and the engine adds each to the logits of every step it
samples (llama.cpp's logit-bias sampler walks the list per token; vLLM's V1 applies them per step of the batch
every tenant's requests share)."""


MAX_SAMPLERS = 16
"""The most entries llama-server's `samplers` (its sampler chain, in order: a list of names, or a string of one letter
each) may hold: each of its 11 kinds once (common_sampler_type; 0.3.36), with room for more. llama-server builds the
chain as sent, duplicates and all (common_sampler_types_from_names / _from_chars), and runs every sampler of it on
each token it samples, in the one loop that serves all its slots: 100,000 "temperature" entries (1.3 MB) were
100,000 passes over the candidates at every step, the cost of every tenant's requests on the engine."""


MAX_DRY_BREAKERS = 8
"""The most `dry_sequence_breakers` (llama-server's DRY sampler: the strings that end a repeated sequence) one request
may name: twice llama.cpp's four defaults ("\\n", ":", "\"", "*"). When the request's slot starts, llama-server's
DRY sampler scans the whole vocabulary once per breaker (get_overlapping_token_sequences: every token detokenized
and searched), in the one loop that serves all its slots: 100 breakers took a 16-token completion from 0.36-0.59 s
(the four defaults) to 1.8-3.3 s on SmolLM2-135M's 49,152 tokens (scripts/bench_llama_server_fields.py, load 7-13 on 2
cores), every other request on the engine waiting as long; a vocabulary of 150,000 or 256,000 tokens costs three to five times that per breaker."""


SPECULATIVE = "speculative."
"""The prefix of llama-server's per-request speculative-decoding settings (`speculative.n_max`, `.n_min`, `.p_min`,
`.type`, `.ngram_size_n`, ...: top-level keys with a dot in their names), refused (refused_speculative)."""


def refused_speculative(data: Any) -> Any:
    """A raw body without llama-server's `speculative.*` keys, else the client's 400 naming the key. llama-server
    builds its draft context and batches for the operator's draft settings (--draft-max), and older builds took a
    request's own, unbounded above: `speculative.n_max` past them asked the draft context for more outputs than it
    holds, a GGML_ASSERT that aborts the engine with every request on it (ggml-org/llama.cpp issue 25719), and
    `speculative.type` switched the method the operator chose. llama.cpp's own newer builds read none of them
    (server-schema.cpp: "we disable speculative parameter adjustments for now"); the answer is the same without
    them (a draft only speeds it)."""
    if isinstance(data, dict):
        for key in data:
            if isinstance(key, str) and key.startswith(SPECULATIVE):
                raise ValidationError.from_exception_data("Request", [InitErrorDetails(
                    type=PydanticCustomError("value_error", "llama-server's {key} is not served by this grid: "
                                             "speculative decoding is the engine operator's setting (a draft larger "
                                             "than the one it sized crashes the engine); leave it out",
                                             {"key": key}),
                    loc=(key,), input=data[key])])
    return data


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    n_probs: Refused = None
    """llama-server's own top-N probabilities, without a bound (n_probs 100000: every token's whole distribution),
    unseen by the abuse signals. Refused: logprobs and top_logprobs (at most 20) ask the same of every engine."""
    n_predict: Refused = None
    """llama-server's own output limit, which overrides max_tokens: max_tokens 1 with n_predict -1 was reserved,
    capped and given a deadline as one token while the engine wrote to the end of its context. Refused."""
    n_cmpl: Refused = None
    """llama-server's own number of completions: n_cmpl 4 answered four choices with the usage of one (the tenant
    charged a quarter), past the grid's `n`, which the gateway serves and counts (engines/fan_out.py). Refused."""
    prompt_logprobs: int | None = Field(default=None, ge=0, le=20)
    """vLLM's: the `prompt_logprobs` most likely tokens at every position of the prompt; at most 20, as
    top_logprobs (-1, the whole vocabulary, refused); counted by the abuse signals (guard.request_traits)."""
    stream: bool = Field(default=False, strict=True)
    """A boolean; null is the default, false (OpenAI's "boolean or null", vLLM's Optional[bool], and the openai SDK's
    own `stream=None`: a 400 until the twenty-eighth session). The body goes on without it (engine_body.for_engine:
    SGLang and TGI refuse a null boolean). Strict (number_fields)."""
    stream_options: StreamOptions | None = None
    """Only with `stream: true`, as OpenAI's (vLLM refused it otherwise in its own words, without a `param`, and
    llama.cpp took it: one request, two answers by the endpoint it was routed to)."""
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    """Choices to sample: more than one is served by sending the request that many times (engines/fan_out.py)."""
    user: str | None = Field(default=None, max_length=256)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, strict=True)
    """OpenAI's range, -2.0 to 2.0, a number (a string was llama.cpp's own 400 without a `param`; 50 was taken and
    wrote a garbled answer, -50 one of newlines; vLLM refuses past 2 in its own words)."""
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, strict=True)
    """As frequency_penalty."""
    seed: int | None = Field(default=None, ge=-2**63, le=2**63 - 1, strict=True)
    """An integer of OpenAI's (and vLLM's) 64-bit range: a string was llama.cpp's own 400, 1.5 taken as 1."""
    stop: str | list[str] | None = None
    """A stop string or a list of them (OpenAI's shape; more than its 4 are served). A number was ignored by
    llama.cpp (`stop: 5`: the client believed it stopped at something); an empty string ended every answer at
    once, empty (llama.cpp matches it before the first token)."""

    logit_bias: dict[str, Any] | None = None
    """OpenAI's map of token ids (strings of digits) to biases from -100 to 100, at most MAX_LOGIT_BIAS of them (the
    abuse signals count it: guard.request_traits). `"x"` was taken and went to the engine, which ignored it: the
    client believed it biased."""

    _typed = number_fields("max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "prompt_logprobs")

    @model_validator(mode="before")
    @classmethod
    def _bounded_patterns(cls, data: Any) -> Any:
        return check_schema_patterns(refused_speculative(data))

    @field_validator("logit_bias")
    @classmethod
    def _token_biases(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and len(v) > MAX_LOGIT_BIAS:
            raise ValueError(f"logit_bias holds {len(v):,} tokens; at most {MAX_LOGIT_BIAS:,} are served (OpenAI's "
                             "bound)")
        for token, bias in (v or {}).items():
            if not token.isascii() or not token.isdigit():
                raise ValueError(f"a key of logit_bias is a token id (a string of digits), not {token!r}")
            if isinstance(bias, bool) or not isinstance(bias, int | float) or not -100 <= bias <= 100:
                raise ValueError(f"logit_bias[{token!r}] is a number from -100 to 100, not {bias!r}")
        return v
    _null_stream = null_is_default("stream")

    def output_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @field_validator("stream_options")
    @classmethod
    def _streams_only(cls, v: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if v is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed with stream: true")
        return v

    @field_validator("stop")
    @classmethod
    def _nonempty_stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > MAX_STEP_ENTRIES:
            raise ValueError(f"stop holds {len(v):,} sequences; at most {MAX_STEP_ENTRIES:,} are served (the engine "
                             "checks each at every step)")
        for k, word in enumerate([v] if isinstance(v, str) else v or ()):
            if not word:
                raise ValueError("a stop sequence must be non-empty (an empty one ends the answer before its first "
                                 f"token){'' if isinstance(v, str) else f' (stop[{k}])'}")
        return v

    n_keep: Refused = None
    """llama-server's: the prompt tokens a context shift (--context-shift) keeps, with n_discard the tokens after them
    it drops. Both went to the engine unread, and a value past the context's crashed it with every request on it:
    n_discard 2,147,483,647 wrapped the shift's size_t arithmetic into an uncaught std::length_error (ggml-org/llama.cpp
    PR 24786, "fix non-bound n_discard value"), a wrong n_keep likewise (issue 3550). The grid holds each answer within
    the model's context (gateway.max_output_tokens, context_window.py), and how a context shifts is the operator's.
    Refused."""
    n_discard: Refused = None
    n_cache_reuse: Refused = None
    """llama-server's (per request in its newer builds; 0.3.36's server-schema.cpp): the shortest chunk of the slot's
    cached prompt reused by shifting its KV cache to the chunk's place in this prompt, over the operator's
    --cache-reuse (0 by default: off). It turned that reuse on for the request: chunks of whatever prompt the slot
    last held, another tenant's included, reused anywhere in this prompt, not only as a shared prefix (a wider cache
    side channel than the prefix cache's, on an engine the grid cannot salt: cache_salt.py), at positions the model
    did not compute them at. Refused."""
    return_progress: Dropped = None
    """llama-server's: a streamed answer's `prompt_progress` events while it prefills, each with `cache` (the prompt
    tokens its slot's cache held); `timings_per_token`: `timings` (its `cache_n`) on every chunk. On llama-server,
    which keeps one cache for every tenant (the grid cannot salt it: cache_salt.py), that count told a client how far
    a guess of another tenant's recent prompt matched it, token by token; both rode on chunks the relay passes
    unread (its lean path). Taken out of the body the engine is sent (drop_unserved, logged), not refused: llama.cpp's
    own web UI sends `timings_per_token: true` with every message and `return_progress: true` with every stream
    (tools/server/webui chat.service.ts), and a 400 on both broke it for no gain, since the engine asked without them
    writes neither. The counts in a whole answer and in a stream's usage chunk are written out
    (usage.cache_counts_out)."""
    timings_per_token: Dropped = None
    verbose: Refused = None
    """llama-server's (read per request by the embedded 0.3.36; newer builds read the operator's verbosity only,
    `params_base.verbosity > 9` in server_task::params_from_json_cmpl): the answer gains `__verbose`, the engine's own
    result again: its `tokens_cached` and `timings.cache_n` (the cache count above), `id_slot` (the slot, which
    `id_slot` is refused for naming), the prompt as the chat template rendered it and the operator's sampler settings
    (`generation_settings`). Refused; an engine whose operator turned verbosity on has `__verbose` written out of
    every answer (usage.CACHE_FIELDS)."""
    chat_format: Refused = None
    """llama-server's: the format its parser reads the answer in (tool calls, reasoning), an integer cast to the
    engine's enum unchecked; with `chat_parser`, the parser itself, a serialized PEG arena that llama-server loads as
    sent (common_peg_arena::from_json checks its rules' and root's parser ids, not each parser's `child`; a `gbnf`
    parser carries a grammar past the grid's grammar bound) and runs on the answer's text. The engine's chat template
    sets both on chat (the client's `chat_parser` stays where the template has none); on /v1/completions they were the
    client's. Refused."""
    chat_parser: Refused = None
    kv_transfer_params: Refused = None
    """vLLM's: where a disaggregated-serving connector pulls the request's prefilled KV blocks from (a host, a port,
    block ids), the router's to set. A client's named another prefill's blocks, another request's prompt state.
    Refused."""
    id_slot: Refused = None
    """llama-server's: the slot to run in, whose cache holds the prompt of whoever ran there before (it reuses the
    common prefix): a client aimed at another's. Refused; the server picks a slot itself."""
    bootstrap_host: Refused = None
    """SGLang's, with bootstrap_port and bootstrap_room: the prefill server and transfer room a disaggregated decode
    pulls the request's KV from (vLLM's kv_transfer_params of that engine), the router's to set. Refused."""
    bootstrap_port: Refused = None
    bootstrap_room: Refused = None
    session_params: Refused = None
    """SGLang's: the session, and its earlier request (`rid`), whose cached prompt and answer the request continues
    on the engine: a client named another's. Refused."""
    rid: Refused = None
    """SGLang's: the request's id on the engine, by which it is aborted and its session continued: a client chose
    another's. Refused; the engine names each request itself."""
    request_id: Refused = None
    """vLLM's (its chat and completions requests take one since vLLM PR 9550): the engine's key of a request in
    flight, as SGLang's `rid`. Two requests of one id at once broke the engine for every tenant on it (vLLM issues
    10583, 15041) until vLLM added a random suffix (PR 27987), and the grid's `n` sends a body n times. Refused."""
    data_parallel_rank: Refused = None
    """SGLang's, with decode_dp_rank: the data-parallel replica to run on, whose cache may hold another client's
    prompt (as llama-server's id_slot). Refused; the engine places each request itself."""
    decode_dp_rank: Refused = None
    custom_logit_processor: Refused = None
    """SGLang's: a serialized Python callable the engine runs on every step (with --enable-custom-logit-processor):
    code of the client's run on the grid's engine. Refused."""
    logits_processors: Refused = None
    """vLLM's: logits processors named by their import path, loaded and run by the engine (those its
    --logits-processor-pattern allows): code chosen by the client. Refused."""
    lora_path: Refused = None
    """SGLang's: the LoRA adapter to run the request with, whatever `model` names (unless `model` names one itself,
    base:adapter). An adapter the grid serves is an endpoint's model, routed, priced and scoped by `model` (which the
    gateway writes): a key granted the base model was served another tenant's fine-tune. Refused."""
    lora: Refused = None
    """llama-server's: the scale of each LoRA adapter it loaded, for this request ({id, scale}): as SGLang's
    lora_path, an adapter picked beside the model the grid chose (or one the operator applied taken off). Refused."""
    return_hidden_states: Refused = None
    """SGLang's (its chat and completions since sglang PR 6716, with --enable-return-hidden-states): the model's
    last-layer hidden state of every token beside the answer: what distils the model (a model-extraction channel the
    abuse signals do not see), thousands of floats a token, neither bounded nor counted by the grid. Refused."""
    vllm_xargs: Refused = None
    """vLLM's: custom arguments copied into the engine's SamplingParams.extra_args, read by its custom logits
    processors and KV connectors. The connectors take `kv_transfer_params` (refused above) from there too, so a
    client's planted one passed that refusal, and one not a dict crashed the engine core for every tenant on it
    (vLLM PR 56814, "Reject reserved transfer keys in vllm_xargs"). Refused."""
    mm_processor_kwargs: Refused = None
    """vLLM's: keyword arguments to the model's multimodal processor for this request, over the operator's
    --mm-processor-kwargs (max_pixels, fps, ...), which the engine's encoder cache and memory were profiled for: an
    image made larger than that hung vLLM's V1 scheduler for every request (vLLM issue 26223; a 400 since PR 33110,
    after the grid routed and counted the request). Refused."""
    media_io_kwargs: Refused = None
    """vLLM's (chat, since vLLM PR 34778): keyword arguments to the engine's media loaders for this request, over the
    operator's --media-io-kwargs (a video's num_frames and fps, an image's decoding): a request's
    `{"video": {"num_frames": -1}}` or a large count lifted the engine's frame ceiling, the unbounded decode of a
    video that PR 38636 closed (CVE-2026-34755, GHSA-vxqj-p4gw-9h4c; vLLM PR 51969 clamps it, open), its frames
    held in the engine's memory and its encoder budget passed (PR 36814: the engine's 400, after the grid routed
    and counted the request). Refused, as mm_processor_kwargs."""

    samplers: Any = None
    """llama-server's sampler chain: a list of at most MAX_SAMPLERS names, or a string of at most MAX_SAMPLERS letters
    (its two shapes), passed on as written."""

    _few_samplers = bounded_entries(
        "samplers", lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(n, str) for n in v)),
        "a list of sampler names or a string of sampler letters (llama-server's)", "samplers", MAX_SAMPLERS,
        "the engine runs each on every token it samples; name each kind once")

    dry_sequence_breakers: Any = None
    """llama-server's DRY sequence breakers: a list of 1 to MAX_DRY_BREAKERS strings, passed on as written."""

    _few_breakers = bounded_entries(
        "dry_sequence_breakers", lambda v: isinstance(v, list) and bool(v) and all(isinstance(b, str) for b in v),
        "a non-empty list of strings (llama-server's)", "breakers", MAX_DRY_BREAKERS,
        "the engine scans its whole vocabulary for each, holding every request on it")

    min_tokens: Any = None
    """vLLM's and SGLang's: the fewest tokens the answer has before an end-of-sequence or stop token may end it, a
    non-negative integer no larger than the body's own output limit (max_completion_tokens or max_tokens), passed
    on as written (a broken stream's continuation: less what was delivered, continuation_body). vLLM's scheduler
    reads it before the length limit (check_stop: below min_tokens nothing stops the answer) and its SamplingParams
    refuse one past max_tokens; that 400 came from the engine after the grid routed and counted the request, without
    a `param`."""

    @field_validator("min_tokens")
    @classmethod
    def _within_the_limit(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None:
            return v
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError("min_tokens is a non-negative integer")
        limit = info.data.get("max_completion_tokens") or info.data.get("max_tokens")
        if limit is not None and v > limit:
            raise ValueError(f"min_tokens ({v:,}) is more than the answer's output limit ({limit:,}, "
                             f"{'max_completion_tokens' if info.data.get('max_completion_tokens') else 'max_tokens'})")
        return v

    stop_token_ids: Any = None
    """vLLM's and SGLang's: token ids that end the answer, a list of at most MAX_STEP_ENTRIES non-negative integers (vLLM's
    scheduler checks the answer's last token against the list, as a list, at every step: check_stop), passed on as
    written."""

    _few_stop_tokens = bounded_entries(
        "stop_token_ids",
        lambda v: isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in v),
        "a list of token ids (non-negative integers)", "token ids", MAX_STEP_ENTRIES, "the engine checks each at every step")

    bad_words: Any = None
    """vLLM's: words the answer may not contain, a list of at most MAX_STEP_ENTRIES strings (the engine checks each
    at every step), passed on as written."""

    _few_bad_words = bounded_entries(
        "bad_words", lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v), "a list of strings",
        "words", MAX_STEP_ENTRIES, "the engine checks each at every step")

    grammar_triggers: Refused = None
    """llama-server's: the words and patterns after which a lazy grammar (`grammar_lazy`) starts to constrain the
    answer, each compiled by the engine as a C++ std::regex (a word escaped; one a single token excepted) when it
    builds the request's sampler (llama-grammar.cpp). libstdc++ compiles a regex by recursion, once per group and
    once per character: 50,000 nested groups (100 KB) or a literal of 100,000 characters crashed it (SIGSEGV at
    the default 8 MiB stack, measured the thirty-third session), and with it llama-server and every tenant's
    requests there. On chat llama-server replaces the client's with its template's own; on /v1/completions they
    were the client's. Refused (`[]`, which asks nothing, passes and is left out)."""
    best_of: Any = None
    """OpenAI's legacy `best_of` (completions), which vLLM's chat requests read too (`ChatCompletionRequest.best_of`,
    into the same sampling parameters): the engine samples that many answers and returns the best n. vLLM's V0
    engine did, charged as n (best_of 100 at the price of one); llama.cpp ignores it. Only 1 (the default) is served,
    on both routes (chat passed it on until the thirty-second session)."""

    @field_validator("best_of")
    @classmethod
    def _one_best_of(cls, v: Any) -> Any:
        if v is not None and (v != 1 or isinstance(v, bool)):
            raise ValueError("best_of other than 1 is not served by this grid: ask for n choices")
        return v

    grammar: Any = None
    """llama-server's GBNF grammar (vLLM's is `guided_grammar`, since its v0.12 `structured_outputs.grammar`;
    SGLang's `ebnf`): a string nested at most MAX_GRAMMAR_NESTING groups deep, passed on as written."""
    guided_grammar: Any = None
    ebnf: Any = None
    _grammars = bounded_grammars(*GRAMMAR_FIELDS)
    guided_regex: Any = None
    """vLLM's regular expression (since its v0.12 `structured_outputs.regex`; SGLang's `regex`): a string nested at
    most MAX_GRAMMAR_NESTING groups deep, passed on as written."""
    regex: Any = None
    guided_whitespace_pattern: Any = None
    _regexes = bounded_regexes(*REGEX_FIELDS)
    guided_json: Any = None
    """vLLM's JSON schema (an object, or a string of one; SGLang's `json_schema`, a string; their `structural_tag`,
    a string of JSON): as a string, JSON nested at most json_depth.MAX_DEPTH levels, passed on as written."""
    json_schema: Any = None
    structural_tag: Any = None
    _json_texts = bounded_json_texts(*JSON_TEXT_FIELDS)
    structured_outputs: StructuredOutputs | None = None
    guided_choice: Any = None
    """vLLM's answers to choose from (since its v0.12 `structured_outputs.choice`): a list of strings of at most
    MAX_GRAMMAR_CHARS characters in all (bounded_choices), passed on as written."""
    _choices = bounded_choices("guided_choice")
    guided_decoding_backend: Refused = None
    """vLLM's: the structured-output backend for this request (`outlines`, `lm-format-enforcer`, `xgrammar`,
    `guidance`, with options after a colon: `xgrammar:no-fallback`), over the operator's --guided-decoding-backend.
    Builds that honour it let a client pick outlines, whose regex index compile ran 15 minutes and was killed for
    memory on one schema (vllm-project/vllm issue 7332) and crashed on two requests at once (PR 4109), where the
    operator chose xgrammar; the grid's bounds on grammars, regular expressions and schemas are read as the
    configured backends read them (LARK_FIELDS). vLLM's V1 engine refuses a backend other than its own in its own words,
    after the grid routed and counted the request. Refused."""

    _refused = _refusing(_REFUSED)


def output_limit(body: dict[str, Any]) -> int | None:
    """The output limit a chat or completions body (a dict, as sent on to an engine) sets, as output_budget()
    reads it: `max_completion_tokens`, else `max_tokens`, a positive integer (100.0 counts as 100, as the
    schema validates it); None: none, or not one."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    """OpenAI's rule for the format's name (a-z, A-Z, 0-9, _ and -, at most 64)."""
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema", "structural_tag")
"""The `response_format` types served: OpenAI's three, and vLLM's and SGLang's `structural_tag` (their
`ResponseFormat.type` takes these four; llama.cpp's the first three). Another (`xml`) went to the engine, whose own
400 came back without a `param` (llama.cpp's "response_format type must be one of ...")."""


class ResponseFormat(BaseModel):
    """`response_format`, as OpenAI checks it: one of RESPONSE_FORMAT_TYPES, and the `json_schema` type's object
    (the engine answers for the rest: `structural_tag`'s structures, and engines' extensions, such as llama.cpp's
    `schema` beside `json_object`)."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(min_length=1, strict=True)
    json_schema: JsonSchemaFormat | None = None

    @field_validator("type")
    @classmethod
    def _served_type(cls, v: str) -> str:
        if v not in RESPONSE_FORMAT_TYPES:
            raise ValueError(f"the response format {v!r} is not served: send one of {', '.join(RESPONSE_FORMAT_TYPES)}")
        return v

    @model_validator(mode="after")
    def _schema_for_json_schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("the json_schema format needs a `json_schema` object with a `name`")
        return self


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    _bounded = bounding("messages")
    logprobs: bool | None = Field(default=None, strict=True)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    _typed_chat = number_fields("top_logprobs")
    tools: list[dict[str, Any]] | None = None
    """A list of tool objects (each checked where the tool loop reads it: agents/loop.offered_tools); not a list
    was llama.cpp's "Failed to parse tools" without a `param`."""
    response_format: ResponseFormat | None = None
    """The answer's format. With tools, a JSON format is refused: the tool loop decodes each turn under its own
    tool-call grammar and sent the engine no `response_format`, so the final answer was free text."""
    web_search_options: Refused = None
    """OpenAI's web search (its search models): the engines this grid runs do not search (it went to them, and
    the model answered from its weights as if it had), and a hosted one (kind openai) would read pages into the
    model's context that the firewall never reads (the grid's own `http_fetch` results pass it). Refused."""
    store: bool | None = Field(default=None, strict=True)
    """OpenAI's stored completions. This grid keeps no chat completion (GET /v1/chat/completions/{id} and the
    rest are 404), and `store: true` went to the engine: ignored by vLLM and llama.cpp, but a hosted engine
    (kind openai) kept the tenant's prompt and answer under the operator's account, outside the grid's
    retention (tenants.NAME.store_prompts). `true` is refused; `false` passes."""
    service_tier: str | None = None
    """OpenAI's processing tier. The grid has none of its own (a request's urgency is `x-aigrid-priority` or the
    body's `priority`: urgency.py): `auto` and `default` pass (the engines ignore them); `flex`, `scale` and
    `priority` went to the engine too, ignored by vLLM and llama.cpp, and a hosted engine (kind openai) served
    `priority` at its higher price, billed to the operator and metered to the tenant as any request. Refused."""
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    """OpenAI's effort of a reasoning model, passed to the engine (vLLM gives it to the chat template of models
    that read it: gpt-oss's `Reasoning: low`). One of OpenAI's words (vLLM refused another in its own words)."""
    parallel_tool_calls: bool | None = Field(default=None, strict=True)
    """A boolean, as OpenAI's (a string was taken, and ignored)."""
    chat_template: Any = None
    """vLLM's extension: the client's own Jinja chat template, which writes whatever it likes around the
    messages. Refused: the firewall reads texts, not what a template makes of them."""
    modalities: list[str] | None = None
    """OpenAI's output kinds: text is what every engine of this grid writes. Asking for audio is refused
    (it was served as text alone, silently: a client waiting for `message.audio` got none)."""
    audio: Any = None
    """OpenAI's audio output settings (voice, format): refused, as `modalities` other than text are."""
    chat_template_kwargs: Any = None
    """Variables for the chat template (read by the firewall: model_texts._template_variables). Its own
    `chat_template` key replaces the template itself (vLLM updates its template arguments with these, SGLang
    passes them on): refused as `chat_template` is."""

    _refused_chat = _refusing({
        "web_search_options": "web search is not served by this grid: its models answer from their weights and the "
                              "tools a request offers (the firewall reads every page a model is given)",
        "audio": "audio output is not served by this grid: its models answer in text only"})

    _tiers = field_validator("service_tier")(classmethod(lambda cls, v: served_tier(v)))

    @field_validator("store")
    @classmethod
    def _not_stored(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("stored chat completions are not served by this grid: it keeps no chat completion "
                             "(send store: false or leave it out; the Responses API stores responses)")
        return v

    @field_validator("chat_template")
    @classmethod
    def _no_client_template(cls, v: Any) -> None:
        if v is not None:
            raise _unread("a client's own chat template")

    @field_validator("chat_template_kwargs")
    @classmethod
    def _no_template_in_variables(cls, v: Any) -> Any:
        if isinstance(v, dict) and "chat_template" in v:
            raise _unread("a client's own chat template (chat_template_kwargs.chat_template)")
        return v

    @field_validator("modalities")
    @classmethod
    def _text_out_only(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(kind != "text" for kind in v):
            raise ValueError(f"this grid's models answer in text only; {sorted(set(v) - {'text'})} output is not "
                             "served (send modalities: [\"text\"] or leave it out)")
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return v

    def prompt_text(self) -> str:
        parts: list[str] = []
        for m in self.messages:
            if isinstance(m.content, str):
                parts.append(m.content)
            elif isinstance(m.content, list):
                parts.extend(p[k] for p in m.content for k in PART_TEXTS if isinstance(p.get(k), str))
        return "\n".join(parts)

    def prefix_text(self) -> str:
        """The prefix other requests share, which an engine's prefix cache keeps: the system (or developer)
        prompt when there is one (an app's instructions, the same for all its users), else the first user
        turn (later turns of the conversation repeat it)."""
        system = self._system()
        if system is not None:
            return _text(system)
        return "\n".join(str(m.content) for m in [m for m in self.messages if m.role == "user"][:1])

    def conversation_text(self) -> str | None:
        """With a system prompt, the head of this conversation (system prompt + first user turn): its later
        turns share it, and with it more of their prompt than the system prompt alone. None without one
        (prefix_text is then the conversation's head already)."""
        system = self._system()
        if system is None:
            return None
        first_user = [m for m in self.messages if m.role == "user"][:1]
        return "\n".join([_text(system), *(str(m.content) for m in first_user)])

    def _system(self) -> Message | None:
        """The leading system (or developer) message: a prefix cache holds the start of a prompt only."""
        head = self.messages[0]
        return head if head.role in ("system", "developer") and head.content else None


def _text(message: Message) -> str:
    content = message.content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


class CompletionRequest(_Common):
    prompt: str | list[str] = Field(min_length=1)

    @field_validator("prompt", mode="before")
    @classmethod
    def _no_token_ids(cls, v: Any) -> Any:
        """OpenAI's and vLLM's prompt as token ids (a list of integers, or of lists of them): numbers in one
        model's vocabulary, which the firewall cannot read. Refused by name (it was "Input should be a valid
        string" at `prompt.0`)."""
        if isinstance(v, list) and any(isinstance(p, int | list) for p in v):
            raise _unread("a prompt given as token ids")
        return v
    prompt_embeds: Any = None
    """vLLM's extension: a prompt given as embeddings, which the model reads and the firewall cannot. Refused."""

    @field_validator("prompt_embeds")
    @classmethod
    def _no_embedded_prompt(cls, v: Any) -> None:
        if v is not None:
            raise _unread("a prompt given as embeddings")
    echo: bool | None = Field(default=None, strict=True)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    """The legacy log-probabilities: the `logprobs` most likely tokens per position (engines/legacy_completions.py
    serves both fields where the engine ignores them); at most 20, as chat's top_logprobs (llama-server read any
    N: 49,152, the whole distribution)."""
    _typed_completion = number_fields("logprobs")

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else "\n".join(self.prompt)

    def prefix_text(self) -> str:
        return self.prompt_text()[:512]

    def conversation_text(self) -> str | None:
        return None
