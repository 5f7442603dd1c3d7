"""What a server-side tool is, and the registry the gateway keeps of them.

A tool is ordinary code the grid runs itself at the site the core chose: a name, a description, a JSON
schema for its arguments (written so that it can also drive llama.cpp's constrained decoding: enums for
closed sets, patterns for formats), and `run(arguments, context) -> str`. A tool refuses bad or hostile
input with ToolError; the loop hands that message back to the model as the tool's result, so a failed
call is a step like any other, never a failed request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aigrid.errors import AigridError
from aigrid.security.firewall.texts import Source


class ToolError(AigridError):
    """A tool refused its input or could not finish; the message is shown to the model."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Where and for whom a tool runs: the chosen site (retrieval reads only that site's documents)
    and the tenant (documents can be private to one tenant)."""

    site_id: str | None = None
    tenant: str | None = None


NO_CONTEXT = ToolContext()


class Tool(Protocol):
    name: str
    description: str
    parameters: Mapping[str, Any]
    """JSON schema of the arguments object."""
    source: Source
    """What the model reads in its result, for the firewall: tool result, MCP result, document, web page."""

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> str: ...


class ToolRegistry(Mapping[str, Tool]):
    """Name -> tool. Names are unique: registering a second tool under a taken name is an error, so an
    MCP server cannot silently shadow a built-in."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"a server-side tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool

    def remove(self, name: str) -> None:
        self._tools.pop(name, None)

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def scoped(self, allows: Callable[[str], bool], context: ToolContext | None = None) -> ToolRegistry:
        """A live view of the tools whose names `allows` (a tenant's `tools` scope): one an MCP server adds or
        takes back later is seen, or not, as in this registry; the others are not there at all. With `context`
        (the request's site and tenant), a tool that has a view per request (`seen_by(context)`: the sql tool,
        whose databases may serve some tenants only) is seen as that view."""
        return _Scoped(self._tools, allows, context)


class _Scoped(ToolRegistry):
    def __init__(self, tools: dict[str, Tool], allows: Callable[[str], bool], context: ToolContext | None) -> None:
        self._tools = tools  # the registry's own dict, not a copy
        self._allows = allows
        self._context = context

    def add(self, tool: Tool) -> None:
        raise TypeError("a scoped view of the tools is read-only")

    def remove(self, name: str) -> None:
        raise TypeError("a scoped view of the tools is read-only")

    def __getitem__(self, name: str) -> Tool:
        if not self._allows(name):
            raise KeyError(name)
        tool = self._tools[name]
        seen_by = getattr(tool, "seen_by", None)  # optional: a tool whose description depends on the request
        return tool if seen_by is None or self._context is None else seen_by(self._context)

    def __iter__(self) -> Iterator[str]:
        return (name for name in list(self._tools) if self._allows(name))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def require_str(arguments: Mapping[str, Any], key: str, *, max_len: int, default: str | None = None) -> str:
    """The string argument `key`, or ToolError saying what is wrong with it."""
    value = arguments.get(key, default)
    if not isinstance(value, str):
        raise ToolError(f"argument {key!r} must be a string")
    if len(value) > max_len:
        raise ToolError(f"argument {key!r} is longer than {max_len} characters")
    return value
