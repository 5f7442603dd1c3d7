"""The texts a model will read, per request shape, for the firewall's choke point (security/firewall/screen.py).

Each front door turns its body into `ModelText`s with their source and path, screens them, and writes the
screened texts back with `apply`. A new request shape adds one function here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, MutableMapping
from typing import Any

import orjson

from aigrid.agents.prompt_size import REASONING_KEYS
from aigrid.gateway.body_values import OFF_LOOP_BYTES
from aigrid.gateway.parse_pool import ParsePool
from aigrid.gateway.schemas import IMAGE_PARTS, PART_TEXTS
from aigrid.security.firewall.pii import redact
from aigrid.security.firewall.pipeline import Screened
from aigrid.security.firewall.texts import (
    IN_JSON,
    KEYS,
    ModelText,
    Path,
    Source,
    put,
    rename_keys,
    tool_text,
)

ROLE_SOURCE = {"user": Source.USER, "system": Source.SYSTEM, "developer": Source.SYSTEM,
               "assistant": Source.ASSISTANT, "tool": Source.TOOL_RESULT, "function": Source.TOOL_RESULT}


DocumentsAt = Collection[tuple[int, int]]
"""The chat content parts (by message and part index) that are documents a front door turned into them (Anthropic's
document blocks: a part of its turn's user message)."""


def chat_texts(body: Mapping[str, Any], documents: DocumentsAt = ()) -> list[ModelText]:
    """OpenAI chat messages: string content, or every string `text` (and an assistant's `refusal`) of a content
    list, whatever the part's type (schemas.Message serves text, refusal and image parts only); the `documents` engines put into the
    prompt (vLLM's and Hugging Face's chat-template extension), as retrieved documents; and the
    descriptions of the client's tools, which the template renders into the system turn. The parts whose
    (message, part) index is in `documents` are documents a front door turned into them (Anthropic's document
    blocks), read as documents."""
    out: list[ModelText] = []
    for i, message in enumerate(body.get("messages") or []):
        if not isinstance(message, Mapping):
            continue
        source = ROLE_SOURCE.get(str(message.get("role")), Source.USER)
        content = message.get("content")
        if isinstance(content, str):
            out.append(ModelText(content, source, ("messages", i, "content")))
        elif isinstance(content, list):
            out += [ModelText(part[key], Source.DOCUMENT if (i, j) in documents else source,
                              ("messages", i, "content", j, key))
                    for j, part in enumerate(content) if isinstance(part, Mapping)
                    for key in PART_TEXTS if isinstance(part.get(key), str)]
            out += [t for j, part in enumerate(content)  # a part's key of its own
                    if isinstance(part, Mapping) and not PLAIN_PART_KEYS.issuperset(part)
                    for t in _other_keys(part, IMAGE_PART_KEYS if part.get("type") in IMAGE_PARTS else PLAIN_PART_KEYS,
                                         ("messages", i, "content", j), source)]
        if not TEXT_BESIDE_CONTENT_KEYS.isdisjoint(message):  # a plain turn has none of them: nothing to walk
            out += _beside_content(message, i, source)
        if not MESSAGE_KEYS.issuperset(message):  # a key of the client's own: a template may print it
            out += _other_keys(message, MESSAGE_KEYS, ("messages", i), source)
    if TEXT_BESIDE_MESSAGES_KEYS.isdisjoint(body):  # nothing but messages to read (the walks below would find no text)
        return out
    return out + _documents(body) + _tool_descriptions(body) + _response_format(body) + _template_variables(body)


TEXT_BESIDE_CONTENT_KEYS = frozenset({"tool_calls", "function_call", "refusal", *REASONING_KEYS})
"""The keys of a message that _beside_content reads: a message without any of them has no text beside its content
(not walked since the thirty-second session: scripts/request_path_cost.py --cuts). Not agents/prompt_size's
BESIDE_CONTENT, the texts beside its content a message's engine is sent (refusal, reasoning), a subset of these."""
MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_call_id", "audio", *TEXT_BESIDE_CONTENT_KEYS})
"""The keys of a chat message whose texts are read above (content, _beside_content) or held to an id or a name
(schemas.Message: `name`, `tool_call_id`; `audio` refused): any other key of a message is the client's own, and
its strings are read as the message's text (_other_keys). Engines known to the grid drop such keys, but the gateway
does not know what every engine's template does with a message (as with `response_format`); until the
thirty-sixth session `{"role": "user", "content": "hi", "metadata": ATTACK}` went to the engine unread."""
PLAIN_PART_KEYS = frozenset({"type", *PART_TEXTS})
"""The keys of a text or refusal content part read above; any other key of such a part is read as the message's
text."""
IMAGE_PART_KEYS = frozenset({"type", "image_url", "source", "detail", "file_id", "uuid"})
"""The keys of an image part that hold its image (image_urls.py, schemas.Message: OpenAI's `image_url` and
`detail`, the Responses API's `file_id`, Anthropic's `source`, vLLM's `uuid`, refused): any other key of an image
part is read as the message's text."""
TEXT_BESIDE_MESSAGES_KEYS = frozenset({"documents", "tools", "functions", "response_format", "chat_template_kwargs"})
"""The keys of a chat body read beside its messages (_documents, _tool_descriptions, _response_format,
_template_variables): a body without any of them has none of their texts."""


def _beside_content(message: Mapping[str, Any], i: int, source: Source) -> list[ModelText]:
    """What a chat template renders of a message beside its content: an assistant turn's tool calls and the
    legacy `function_call`, its reasoning and its `refusal` (a refused turn sent back), read as the message's own
    text (an assistant's: the personal-data policy, as its content; counted by the context check)."""
    out: list[ModelText] = []
    calls = message.get("tool_calls")
    for k, call in enumerate(calls if isinstance(calls, list) else ()):
        out += _call(call, ("messages", i, "tool_calls", k), source, outer=True)
    out += _call(message.get("function_call"), ("messages", i, "function_call"), source, outer=False)
    for key in REASONING_KEYS:
        out += _strings(message.get(key), ("messages", i, key), source)
    if isinstance(message.get("refusal"), str):  # the engine gets it as the content (engine_body.for_engine)
        out.append(ModelText(message["refusal"], source, ("messages", i, "refusal")))
    return out


def _other_keys(node: Mapping[str, Any], known: frozenset[str], at: Path, source: Source) -> list[ModelText]:
    """Every string under the keys of `node` (a message, a content part) but the `known` ones, at any depth, and
    those keys' names as one text (a template that prints the object whole prints them), as `source`'s text
    (_strings: a redaction written back in place, a key renamed)."""
    return _strings({k: v for k, v in node.items() if k not in known}, at, source)


_CALL_KEYS = frozenset({"id", "type", "function", "custom", "name", "arguments", "input"})
"""The keys of a tool call and of its function that say nothing: a call's or function's keys are read as a text
(for a template that prints it whole) only when another is among them."""


def _call(call: Any, where: Path, source: Source, outer: bool) -> list[ModelText]:
    """A tool call, every string of it: templates print a call's `function` (or a custom tool's `custom`) name
    and arguments, some the call's own `name` and `arguments` when it has no `function` (Qwen 2.5's), some the
    call whole (`tojson`), so nothing is chosen by key but its `id` and `type` (schemas.Message holds both to
    an id and a kind). `arguments` anywhere are read as _arguments reads them."""
    if not isinstance(call, Mapping):
        return _strings(call, where, source)
    out = _keys(call, where, source) if any(k not in _CALL_KEYS for k in call) else []
    for key, value in call.items():
        at = (*where, str(key))
        if key == "arguments":
            out += _arguments(value, at, source)
        elif key in ("function", "custom") and outer:
            out += _call(value, at, source, outer=False)
        elif not (outer and key in ("id", "type")):
            out += _strings(value, at, source)
    return out


def _arguments(arguments: Any, path: Path, source: Source) -> list[ModelText]:
    """A tool call's arguments: a JSON object in a string (OpenAI's form) read string by string inside it, so
    that a redaction is written back as JSON (texts.IN_JSON), not into its escapes (a `\\n` before an address);
    an object (Ollama's form) likewise; a string that is not a JSON object or array, as it is."""
    if isinstance(arguments, str):
        try:
            decoded = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            decoded = None
        if isinstance(decoded, dict | list):
            return _strings(decoded, (*path, IN_JSON), source)
    return _strings(arguments, path, source)


def _documents(body: Mapping[str, Any]) -> list[ModelText]:
    """A chat body's `documents`: every string at any depth, as a retrieved document (templates print a
    document's every key and value: Command-R's `{{ key }}: {{ value }}`, a nested value as its repr)."""
    docs = body.get("documents")
    return _strings(docs, ("documents",), Source.DOCUMENT) if isinstance(docs, list) else []


def _template_variables(body: Mapping[str, Any]) -> list[ModelText]:
    """`chat_template_kwargs` (vLLM, SGLang, llama.cpp): variables the chat template renders into the prompt
    wherever it names them (SmolLM3's `custom_instructions`, Llama 3's `custom_tools`, a RAG template's
    `documents`; vLLM lets them replace the request's own `tools` and `documents`), read as the user's text."""
    return _strings(body.get("chat_template_kwargs"), ("chat_template_kwargs",), Source.USER)


def _strings(node: Any, path: Path, source: Source) -> list[ModelText]:
    """Every string inside `node`, at any depth, as a text at its path; and the keys of each object below the
    top level (a template may print an object whole, as Llama 3's does a custom tool, or key by key), as one
    text at the object's path and KEYS (a redaction renames them: apply); the top level's keys are variable
    names, which no template prints. Walked with a stack, not recursion."""
    out: list[ModelText] = []
    stack: list[tuple[Any, Path]] = [(node, path)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, str):
            out.append(ModelText(node, source, at))
        elif isinstance(node, Mapping):
            if len(at) > 1:
                out += _keys(node, at, source)
            stack.extend((v, (*at, str(k))) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((v, (*at, i)) for i, v in reversed(list(enumerate(node))))
    return out


def _keys(node: Mapping[Any, Any], at: Path, source: Source) -> list[ModelText]:
    """An object's keys as one text, one per line (a template that prints the object whole prints them)."""
    keys = "\n".join(str(k) for k in node if str(k).strip())
    return [ModelText(keys, source, (*at, KEYS))] if keys else []


def _tool_descriptions(body: Mapping[str, Any]) -> list[ModelText]:
    """Per client tool: its description as the application's text (personal-data checks, redacted in place),
    and what a model reads of it in its tool list, name, description, schema and any other key (texts.tool_text),
    for the injection check: a client's tools often come from servers its application does not write. The
    legacy `functions` (each a function's definition itself), which hosted engines still render, are read alike."""
    out: list[ModelText] = []
    for key, nested in (("tools", True), ("functions", False)):
        tools = body.get(key)
        for i, t in enumerate(tools if isinstance(tools, list) else ()):
            fn = (t.get("function") if nested else t) if isinstance(t, Mapping) else None
            if not isinstance(fn, Mapping):
                continue
            at: Path = (key, i, "function") if nested else (key, i)
            description = fn.get("description")
            if isinstance(description, str):
                out.append(ModelText(description, Source.SYSTEM, (*at, "description")))
            out.append(ModelText(tool_text(t), Source.TOOL_DESCRIPTION, at))
    return out


def _response_format(body: Mapping[str, Any]) -> list[ModelText]:
    """A `response_format`'s JSON schema (its name, description and the schema's texts), read as a tool's
    definition is (texts.tool_text, the tool descriptions' action): a hosted model reads it in its prompt
    (OpenAI's structured outputs), and a schema often comes from where the application does not write (a
    library, a form). llama-server, vLLM and SGLang only turn it into a grammar; it is read all the same, as
    the gateway does not know what an engine does with it. llama.cpp's `{"type": "json_object", "schema":
    ...}` is read alike (every key but `type`)."""
    fmt = body.get("response_format")
    if not isinstance(fmt, Mapping):
        return []
    inner = fmt.get("json_schema")
    at: Path
    if isinstance(inner, Mapping):
        text, at = tool_text(inner), ("response_format", "json_schema")
    else:
        text, at = tool_text({k: v for k, v in fmt.items() if k != "type"}), ("response_format",)
    return [ModelText(text, Source.TOOL_DESCRIPTION, at)] if text else []


def completion_texts(body: Mapping[str, Any]) -> list[ModelText]:
    """OpenAI completion prompt (a string or a list of strings) and its `suffix`; and a chat body's fields beside
    its messages, where a completion body has them (`documents`, `tools`, `functions`, `response_format`,
    `chat_template_kwargs`), read as on chat: the gateway passes them on, and does not know what an engine does with
    them (vLLM and llama.cpp read a completion's `response_format`; until the thirty-sixth session none was read)."""
    prompt = body.get("prompt")
    out: list[ModelText] = []
    if isinstance(prompt, str):
        out.append(ModelText(prompt, Source.PROMPT, ("prompt",)))
    elif isinstance(prompt, list):
        out += [ModelText(p, Source.PROMPT, ("prompt", i)) for i, p in enumerate(prompt) if isinstance(p, str)]
    suffix = body.get("suffix")  # the text after the insertion (OpenAI's insert mode): the model reads it too
    if isinstance(suffix, str):
        out.append(ModelText(suffix, Source.PROMPT, ("suffix",)))
    if TEXT_BESIDE_MESSAGES_KEYS.isdisjoint(body):
        return out
    return out + _documents(body) + _tool_descriptions(body) + _response_format(body) + _template_variables(body)


async def collected(body: Mapping[str, Any], collect: Callable[[], list[ModelText]],
                    parses: ParsePool, owner: str = "") -> list[ModelText]:
    """`collect()` (chat_texts or completion_texts of `body`), run in place for a body whose JSON is at most
    body_values.OFF_LOOP_BYTES long (its length from orjson's write, in C: 0.5 us for a 1.5 KB chat body, 0.13 ms for
    a 4 MiB prompt), on one of the gateway's parse threads otherwise (`parses`, Gateway.parses, apart from asyncio's
    default pool: the walk yields the interpreter's lock to the loop every switch interval). Collecting walks every value of the fields the firewall reads (a message's own keys, a tool
    call's arguments, documents, template variables) at a few microseconds a value: at body_values' bounds (a
    message's own key of 199,800 empty arrays, arguments of 60,000) the walk held the loop 0.4-1.2 s (thirty-sixth
    session, scripts/loop_hold_values.py). The body is this request's own, not changed by anyone while its texts are
    collected. A body orjson cannot write (it came from orjson's parse: never seen) is collected on a thread too.
    `owner`: whose turn on the threads it waits for (the request's tenant: ParsePool.run)."""
    try:
        small = len(orjson.dumps(body)) <= OFF_LOOP_BYTES
    except orjson.JSONEncodeError:
        small = False
    return collect() if small else await parses.run(collect, owner=owner)


def beside_messages(texts: list[ModelText]) -> int:
    """The characters of the texts a chat template puts into the prompt beside the messages' content and a
    completion's prompt: an assistant turn's tool calls and reasoning, documents, tool definitions, template
    variables, a suffix (a tool's description counted once, in its definition's text). The context check adds
    them to the messages' own."""
    return sum(len(t.text) for t in texts if not _in_prompt_text(t.path) and t.source is not Source.SYSTEM)


def _in_prompt_text(path: Path) -> bool:
    """Whether a text is one the request's `prompt_text()` holds already: a message's content, a prompt."""
    return path[:1] == ("prompt",) or (path[:1] == ("messages",) and path[2:3] == ("content",))


def apply(body: MutableMapping[str, Any], original: list[ModelText], screened: Screened) -> None:
    """Write the texts the firewall changed (redactions) back into the body, in place; an object's keys (read as
    one text) renamed each by the same redaction, after every value and the deepest object first (the paths of
    the others go through the keys as sent)."""
    changed = [after for before, after in zip(original, screened.texts, strict=True)
               if after.text != before.text and after.path]
    for text in changed:
        if text.path[-1] is not KEYS:
            put(body, text.path, text.text)
    for text in sorted((t for t in changed if t.path[-1] is KEYS), key=lambda t: len(t.path), reverse=True):
        rename_keys(body, text.path, redact)
