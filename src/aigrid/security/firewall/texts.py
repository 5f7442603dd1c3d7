"""What the firewall reads: every text a model will see, tagged with where it came from.

A `ModelText` is one text plus its `Source` (who wrote it: the user, the application, a tool, a web page)
and its `path` inside the request body (("messages", 2, "content") -> "messages[2].content"), so a block
names the field and a redaction can be written back (`put`). The injection check runs on untrusted
sources only; text the model reads as data (tool and MCP results, retrieved documents, web pages) is
scored by the document head; personal-data checks apply to what the client sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, MutableSequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

import orjson

from aigrid.errors import InvalidRequest


class Source(StrEnum):
    USER = "user"
    """A user message (chat) or a client-side tool's result sent back by the client."""
    PROMPT = "prompt"
    """A completion prompt."""
    SYSTEM = "system"
    """System / developer instructions: written by the application, trusted."""
    ASSISTANT = "assistant"
    """Earlier model output replayed by the client: trusted like the application."""
    TOOL_RESULT = "tool_result"
    """A result of a server-side tool run by the agent loop, or a client tool result (role "tool")."""
    MCP_RESULT = "mcp_result"
    """A result of a tool on an MCP server."""
    DOCUMENT = "document"
    """A retrieved document (RAG)."""
    WEB_PAGE = "web_page"
    """A fetched web page."""
    TOOL_DESCRIPTION = "tool_description"
    """What a model reads of a tool in its tool list: its description and its input schema's texts
    (`tool_text`). A client's tools often come from servers its application does not write (an MCP server
    bridged as function tools), and a server-side MCP server's are its own (agents/mcp_tools.py)."""


UNTRUSTED = frozenset({Source.USER, Source.PROMPT, Source.TOOL_RESULT, Source.MCP_RESULT, Source.DOCUMENT,
                       Source.WEB_PAGE, Source.TOOL_DESCRIPTION})
"""Sources the injection check reads."""
DATA = frozenset({Source.TOOL_RESULT, Source.MCP_RESULT, Source.DOCUMENT, Source.WEB_PAGE})
"""Sources the model should treat as data, never as instructions: scored by the document head."""
FROM_CLIENT = frozenset({Source.USER, Source.PROMPT, Source.SYSTEM, Source.ASSISTANT, Source.TOOL_RESULT})
"""Sources the personal-data input policy applies to (what the client sent)."""

class Mark(Enum):
    """A path element that is not a key or an index (an Enum, so that no key a client writes equals it: a key
    "<json>" was read as the marker until 2026-12-05, and writing a redaction back failed)."""

    IN_JSON = "<json>"
    """The text before it is a JSON document (a tool call's `arguments`), the path after it leads inside the
    decoded document (model_texts reads such a document's strings one by one, so that a redaction is written
    back as JSON, not into its escapes)."""
    KEYS = "<keys>"
    """Last: the text is the keys of the object before it, one per line, as a template prints an object whole
    (model_texts); a redaction renames the keys (`rename_keys`)."""


IN_JSON = Mark.IN_JSON
KEYS = Mark.KEYS
Path = tuple[str | int | Mark, ...]


def render(path: Path) -> str:
    out = ""
    for part in path:
        if part is KEYS:
            out = f"keys of {out}"
        elif isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str):
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True, slots=True)
class ModelText:
    text: str
    source: Source
    path: Path = ()
    """Where the text sits in the request body (empty for texts that are not in it, e.g. tool results)."""
    label: str = ""
    """How verdicts name a text without a path ("tool retrieve")."""

    @property
    def where(self) -> str:
        return render(self.path) if self.path else (self.label or self.source.value)

    @property
    def field(self) -> tuple[int | str, ...] | None:
        """The request's field the text is, as its parts (`where`'s: the marks of a JSON document inside a string
        left out), for an error a front door names in its own form; None for a text that is no field's value (a
        tool result, an object's keys)."""
        if not self.path or KEYS in self.path:
            return None
        return tuple(p for p in self.path if not isinstance(p, Mark))


def tool_text(definition: Any) -> str:
    """What a model reads of a tool in its tool list: every text of its definition (name, description, input
    schema, any other key an engine's chat template may render), each string and each key, in order, but
    JSON Schema's own keywords and type names, which say nothing. A tool's author can hide an instruction
    anywhere a template or the agent loop prints (`str()` of an object included), so nothing is chosen by
    key. Walked with a stack, not recursion: a schema nested thousands deep is read, not a RecursionError."""
    out: list[str] = []
    stack: list[tuple[Any, str]] = [(definition, "")]
    while stack:
        node, key = stack.pop()
        if isinstance(node, str):
            if not (key == "type" and node in _TYPE_NAMES):
                out.append(node)
        elif isinstance(node, Mapping):
            items = list(node.items())
            for k, v in reversed(items):
                stack.append((v, str(k)))
            out.extend(str(k) for k, _ in items if str(k) not in _SCHEMA_WORDS)
        elif isinstance(node, list | tuple):
            stack.extend((v, key) for v in reversed(node))
    return "\n".join(t for t in out if t.strip()).strip()


_SCHEMA_WORDS = frozenset({
    "type", "function", "name", "description", "parameters", "input_schema", "strict", "properties", "required",
    "items", "enum", "const", "default", "examples", "title", "anyOf", "oneOf", "allOf", "not", "$ref", "$defs",
    "definitions", "$schema", "additionalProperties", "format", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems"})
"""Keys that are JSON Schema's or the tool format's own words (a parameter with such a name is still read:
under `properties` a name is also a key of the parameter's schema, `description` for one, so it shows up as
text there only through its schema's strings; the heads gain nothing from the keyword itself)."""
_TYPE_NAMES = frozenset({"object", "string", "number", "integer", "boolean", "array", "null", "function"})


def put(body: MutableMapping[str, Any], path: Path, value: str) -> None:
    """Write `value` at `path` inside `body` (the path came from walking the same body); through an IN_JSON
    element, into the decoded document, which is then encoded again in its place."""
    def write(target: Any, key: str | int | Mark) -> None:
        target[key] = value
    _change(body, path, write)


def rename_keys(body: MutableMapping[str, Any], path: Path, rename: Callable[[str], str]) -> None:
    """Rename each key of the object at `path` (a KEYS text's) with `rename`, in order; two keys renamed alike keep
    both values (the second becomes "[REDACTED:EMAIL] 2")."""
    def keys(target: Any, _: str | int | Mark) -> None:
        items = list(target.items())
        target.clear()
        for key, value in items:
            new = base = rename(key) if isinstance(key, str) else key
            n = 2
            while new in target:
                new, n = f"{base} {n}", n + 1
            target[new] = value
    _change(body, path, keys)


def _change(body: MutableMapping[str, Any], path: Path, change: Callable[[Any, str | int | Mark], None]) -> None:
    """`change(container, last)` on what holds the path's last element; through an IN_JSON element, inside the
    decoded document, encoded again in its place."""
    if IN_JSON in path:
        at = path.index(IN_JSON)
        document = orjson.loads(_get(body, path[:at]))
        _change(document, path[at + 1:], change)
        put(body, path[:at], orjson.dumps(document).decode())
        return
    target: Any = _get(body, path[:-1])
    if isinstance(target, MutableMapping) or (path[-1] is not KEYS and isinstance(target, MutableSequence)):
        change(target, path[-1])
    else:
        field = ModelText("", Source.USER, path).field  # its parts, for a front door to name in its own form
        raise InvalidRequest(f"{render(path)} is not a text field", param=field or render(path))


def _get(body: Any, path: Path) -> Any:
    target = body
    for part in path:
        target = target[part]
    return target
