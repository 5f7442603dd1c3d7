"""Remote tools over the Model Context Protocol: the grid as an MCP client (official `mcp` SDK).

An McpServer is one MCP server started as a child process and spoken to over stdio. start() connects,
initialises the session and lists the server's tools; each becomes an McpTool, a server-side tool like the
built-ins (its input schema is used as is for native and constrained tool calling). stop() closes the
session and the child. Start and stop it from the same task (the owner's lifespan): the SDK's transport
holds an anyio task group.

The SDK's stdio client reads each line of the server's stdout whole into memory, unbounded, and has no setting
to bound it: the server is started behind agents/mcp_relay.py, which passes its lines on and stops it at a line
over `max_message_bytes` (16 MiB by default; the call is a tool error saying so, logged).

A server may change its tools while it runs (`notifications/tools/list_changed`): the list is then read again
and handed to `on_tools_changed` (the owner vets and offers it: gateway/agent_runtime.py); a list that cannot be
read again (an error, a timeout, a list the SDK cannot read), or that the owner fails to take, leaves the tools
offered as they were, with a warning, and the next change reads it again.

A list answered in pages (MCP's `nextCursor`) is read page after page, up to MAX_TOOLS tools and MAX_PAGES pages,
asked for within MAX_LIST_S.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aigrid.agents import mcp_relay
from aigrid.agents.loop import check_tool_definition, refuse_outside_ref
from aigrid.agents.tool import ToolContext, ToolError
from aigrid.errors import InvalidRequest
from aigrid.printable import printable
from aigrid.security.firewall.texts import Source, tool_text

MAX_OUTPUT = 4_000
"""The most characters of a tool's result a model reads (then "..."); no more than one past it is ever put together."""
MAX_MESSAGE_BYTES = 16 << 20
"""The longest line (one JSON-RPC message) a server may write; a longer one stops it (agents/mcp_relay.py)."""
MAX_TOOLS = 1_000
"""The most tools of one server read (the first of its list): each is vetted by the firewall (about a millisecond)
at start and at every change: a list of 100,000 was about 2 minutes of a thread each time (1.2 ms a tool)."""
MAX_PAGES = 100
"""The most pages of a paged list read (each a request to the server): a server naming a next page forever (a
cursor never seen before each time) is read no further."""
MAX_LIST_S = 30.0
"""The most seconds a paged list's further pages are asked for (from the first page's request): a server answering
each page just within `call_timeout_s` held the gateway's start for MAX_PAGES x call_timeout_s (1,000 s at the
default 10 s). The listing takes at most MAX_LIST_S + call_timeout_s (the page asked for last); the tools of the
pages read are offered, the others not (logged)."""
MAX_LISTED_CHARS = 32 * 2**20
"""The most characters of tools (as the SDK read them, JSON) a paged list is read to: further pages are not asked
for. Each page is one message of up to `max_message_bytes` (16 MiB by default): 100 pages held 1.6 GiB of tool text
before the tools over MAX_TOOL_TEXT were dropped; about MAX_TOOLS tools of MAX_TOOL_TEXT."""
MAX_TOOL_TEXT = 32_768
"""The most characters of a tool's text as a model reads it (name, description and input schema: McpTool.model_text)
offered: the firewall reads it at 4-10 s per MB (1,000,000 characters 4.2 s at load 7.4; a description of 1 MB
held the event loop 9.6 s at start, before it was read on a thread), 32,768 in 0.18 s. Real servers' tools are a
few KB at most; a longer one is logged and not offered."""
MAX_VETTED_CHARS = 4 * 2**20
"""The most characters of one server's tools, as a model reads them (McpTool.model_text), offered: the firewall vets
each at start and at every change, about 2-2.6 s of CPU per million characters (1,000 tools of 30,440 characters:
67.9 s of CPU, 238 s wall at load 5-9; 1,000 of 3,840: 8.5-9.3 s of CPU, 25.9 s wall at load 6.6-7.3;
`scripts/bench_mcp_vetting.py 1000x32000 1000x4000`). The tools past it, in the list's order, are not offered (one
error logged): about 10 s of CPU a server at most (more wall time on a loaded machine).
1,000 tools of 4 KB are within it; real servers' tools are a few KB each, a few hundred KB in all."""
PROTOCOL_REFUSALS = ("Unsupported protocol version", "No mutually supported")
"""How the SDK's RuntimeError begins where it refuses the server's protocol version (ClientSession.initialize,
adopt): the server's doing, so it did not start (an OSError the owner names). Any other RuntimeError out of start is
a bug of the SDK's or aigrid's: logged naming the server, and raised as it is."""
RESULT_REFUSALS = ("Tool ", "Invalid schema for tool ", "Invalid structured content returned by tool ")
"""How the SDK's RuntimeError begins where it refuses a tool's result against the tool's output schema
(ClientSession.call_tool: no structured content, a schema that is not one, content that does not match it): the
server's doing, a tool error the model reads (the server's words cut and escaped). Before, the loop logged it as a
bug of the tool, with a traceback, and the model read "the tool failed unexpectedly"."""
INPUT_REQUIRED = "Server returned InputRequiredResult"
"""How the SDK's RuntimeError begins where a server answers a call with an InputRequiredResult (it asks the client
for input mid-call, which the grid has no one to give): the server's doing, a ToolError in the grid's words, as is the
SDK's UnexpectedClaimedResult (a RuntimeError: an MCP extension's result the call did not ask for). Until the
twenty-sixth session both were logged as a bug of the tool, with a traceback."""
RELIST_GAP_S = 1.0
RELIST_SHARE = 9.0
"""After reading a changed list, the next reading waits RELIST_GAP_S, or RELIST_SHARE times what the reading took if
longer: the SDK reads a list on the event loop (100,000 tools: 4.4 s held at once), and a server saying its tools
changed every millisecond had it read back to back, the loop held most of the time."""
RELAY = Path(mcp_relay.__file__)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Listed:
    """A server's tool list as read (McpServer._list_tools): the SDK's tools of every page read, and the cursor of
    the next page where more were left unread."""
    tools: list[Any]
    next_cursor: str | None = None


class McpTool:
    def __init__(self, server: McpServer, name: str, description: str, parameters: Mapping[str, Any],
                 remote_name: str) -> None:
        self.server = server
        self.name = name
        self.source = Source.MCP_RESULT
        self.description = description
        self.parameters = parameters
        self.remote_name = remote_name

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> str:
        return await self.server.call(self.remote_name, dict(arguments))

    def model_text(self) -> str:
        """What a model reads of this tool in its tool list (texts.tool_text): its name, description and schema."""
        return tool_text({"name": self.name, "description": self.description, "parameters": self.parameters})


class McpServer:
    """One stdio MCP server. `prefix` is prepended to its tool names (to keep names unique)."""

    def __init__(self, name: str, command: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, prefix: str = "", call_timeout_s: float = 10.0,
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        if not command:
            raise ValueError(f"MCP server {name!r} needs a command")
        self.name = name
        self.command = list(command)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.prefix = prefix
        self.call_timeout_s = call_timeout_s
        self.max_message_bytes = max_message_bytes
        self.stopped_why: str | None = None
        """Set when the relay stopped the server (a message over `max_message_bytes`)."""
        self.tools: list[McpTool] = []
        self.on_tools_changed: Callable[[McpServer, list[McpTool], list[McpTool]], Awaitable[None]] | None = None
        """Called with the old and the new list when the server says its tools changed and the list was read
        again."""
        self._stack: AsyncExitStack | None = None
        self._session: Any = None
        self._relist_task: asyncio.Task[None] | None = None
        self._relist_again = False
        self._relist_after = 0.0
        """When (time.monotonic) the list may next be read again (RELIST_GAP_S, RELIST_SHARE)."""

    async def start(self) -> list[McpTool]:
        import anyio  # the SDK's and its dependencies: only when MCP is configured
        from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
        from mcp.client.stdio import get_default_environment
        from pydantic import ValidationError

        if self._stack is not None:
            raise RuntimeError(f"MCP server {self.name!r} already started")
        _startable(self.command[0], (get_default_environment() | (self.env or {})).get("PATH"), self.cwd)
        self.stopped_why = None
        params = StdioServerParameters(command=sys.executable, env=self.env, cwd=self.cwd,
                                       args=["-I", str(RELAY), str(self.max_message_bytes), *self.command])
        stack = AsyncExitStack()
        try:
            read, write = await stack.enter_async_context(stdio_client(params))
            session = await stack.enter_async_context(ClientSession(read, write,
                                                                    read_timeout_seconds=self.call_timeout_s,
                                                                    message_handler=self._on_message))
            await session.initialize()
            listed = await self._list_tools(session)
        except BaseException as e:
            await stack.aclose()
            if isinstance(e, ValidationError):  # a tool the SDK cannot read fails the whole list
                raise ConnectionError(f"MCP server {self.name!r} did not start: its tool list could not be read: "
                                      f"{_first_error(e)}") from e
            refused = isinstance(e, RuntimeError) and str(e).startswith(PROTOCOL_REFUSALS)
            if refused or isinstance(e, MCPError | TimeoutError | anyio.ClosedResourceError | anyio.BrokenResourceError):
                # a server that never answers initialize or tools/list, exits at once (the SDK's MCPError "Connection
                # closed") or answers a protocol version the SDK does not speak (its RuntimeError, PROTOCOL_REFUSALS):
                # an OSError, as a command that cannot be started, which the owner names (agent_runtime: the spec's
                # field, not a traceback). The server's own words cut and escaped: a megabyte of them, or a
                # terminal's escape codes, went whole into the operator's error
                why = _said(self.stopped_why or str(e) or type(e).__name__)
                if isinstance(e, TimeoutError) or "timed out" in why:
                    why += f" (call_timeout_s: {self.call_timeout_s:g}s)"
                raise ConnectionError(f"MCP server {self.name!r} did not start: {why}") from e
            if isinstance(e, Exception) and not isinstance(e, OSError):  # not the server's doing: every
                # RuntimeError was "did not start", an SDK bug blamed on the server; said here with the server's name
                # (the traceback alone names none). An OSError (EMFILE, EAGAIN at the relay's spawn) is the machine's,
                # raised as it is: the owner names it (agent_runtime's ConfigError "cannot start")
                log.error("MCP server %s: start failed on an error of the MCP SDK or aigrid, not the server's: %s",
                          self.name, _said(f"{type(e).__name__}: {e}"))
            raise
        self._stack, self._session = stack, session
        self.tools = self._tools_of(listed)
        return self.tools

    async def _list_tools(self, session: Any) -> Listed:
        """The server's tool list, every page of it (MCP's `nextCursor`) up to MAX_TOOLS tools, MAX_PAGES pages and
        MAX_LISTED_CHARS characters, each next page asked for within MAX_LIST_S of the first: `next_cursor` set where
        more were left unread. Before, only the first page was read: the tools on the others never reached a
        model."""
        from mcp import types

        until = time.monotonic() + MAX_LIST_S
        listed = await session.list_tools()
        tools = list(listed.tools)
        pages, cursor = 1, listed.next_cursor
        chars = sum(map(_listed_chars, tools))
        while cursor is not None and len(tools) <= MAX_TOOLS and pages < MAX_PAGES and chars <= MAX_LISTED_CHARS:
            if time.monotonic() >= until:
                log.error("MCP server %s had not listed its tools in %gs (MAX_LIST_S, %d pages): the tools of those "
                          "pages are read, the others not offered", self.name, MAX_LIST_S, pages)
                break
            page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
            tools += page.tools
            chars += sum(map(_listed_chars, page.tools))
            pages, cursor = pages + 1, page.next_cursor
        if cursor is not None and len(tools) <= MAX_TOOLS and chars > MAX_LISTED_CHARS:
            log.error("MCP server %s lists %s characters of tools in its first %d pages, over %s (MAX_LISTED_CHARS): "
                      "the tools of those pages are read, the others not offered", self.name, f"{chars:,}", pages,
                      f"{MAX_LISTED_CHARS:,}")
        elif cursor is not None and pages >= MAX_PAGES and len(tools) <= MAX_TOOLS:
            log.error("MCP server %s lists its tools in more than %d pages: the tools of the first %d are read, the "
                      "others not offered", self.name, MAX_PAGES, MAX_PAGES)
        return Listed(tools, cursor)

    def _tools_of(self, listed: Listed) -> list[McpTool]:
        """The listed tools that can be offered: a name the loop can print into a prompt and a client can name (1-64
        letters, digits, `_` or `-`, with the prefix, as a client tool's), not listed twice, and an input schema
        that is a JSON Schema object, as a client tool's must be (loop.check_tool_definition), with no `$ref` outside
        it (loop.refuse_outside_ref: any model's constrained turn may offer it, and its grammar could not be made).
        The others are withheld and logged: a repeated name stopped the gateway at start (the registry refuses it), and a name is
        text the model reads (a newline, a chat template's markers). (The SDK refuses a list holding a schema that
        is not one: `start` says so.)"""
        tools: list[McpTool] = []
        names: set[str] = set()
        vetted = 0
        if len(listed.tools) > MAX_TOOLS:
            log.error("MCP server %s lists %s%d tools: the first %d are read, the others not offered", self.name,
                      "more than " if listed.next_cursor is not None else "", len(listed.tools),
                      MAX_TOOLS)
        read = listed.tools[:MAX_TOOLS]
        for i, t in enumerate(read):
            tool = McpTool(self, self.prefix + t.name, t.description or t.title or t.name,
                           t.input_schema or {"type": "object"}, t.name)
            try:
                check_tool_definition({"name": tool.name, "parameters": tool.parameters}, ("tool",))
                refuse_outside_ref(tool.parameters, ("tool",))  # any model's constrained turn may offer it
                if tool.name in names:
                    raise InvalidRequest("the server lists two tools of this name")
                if len(text := tool.model_text()) > MAX_TOOL_TEXT:
                    raise InvalidRequest(f"its description and input schema are {len(text):,} characters, over "
                                         f"{MAX_TOOL_TEXT:,} (MAX_TOOL_TEXT)")
            except InvalidRequest as e:
                log.error("MCP server %s: tool %r not offered: %s", self.name, tool.name[:100], e.message)
                continue
            if vetted + len(text) > MAX_VETTED_CHARS:
                log.error("MCP server %s: its tools up to %r are %s characters as a model reads them, over %s "
                          "(MAX_VETTED_CHARS, each vetted by the firewall): that tool and the %d listed after it are "
                          "not offered", self.name, tool.name[:100], f"{vetted + len(text):,}", f"{MAX_VETTED_CHARS:,}",
                          len(read) - i - 1)
                break
            vetted += len(text)
            names.add(tool.name)
            tools.append(tool)
        return tools

    async def _on_message(self, message: Any) -> None:
        """The session's notifications: a changed tool list is read again in a task of its own (the session
        delivers the answer to list_tools on the loop this handler runs in); notifications that come while it
        runs make it read once more when it is done, not once each (a server that keeps sending them costs one
        reading at a time)."""
        from mcp import types

        if isinstance(message, types.LoggingMessageNotification) and message.params.logger == mcp_relay.LOGGER:
            # the relay's notice; its text is written here, never taken from the message: a server can send the
            # same notification, and must not put its own words (or megabytes) in the log and the tool errors
            if self.stopped_why is None:
                self.stopped_why = mcp_relay.oversized(self.max_message_bytes)
                log.error("MCP server %s: %s", self.name, self.stopped_why)
        elif isinstance(message, types.ToolListChangedNotification) and self._session is not None:
            if self._relist_task is not None and not self._relist_task.done():
                self._relist_again = True
                return
            self._relist_task = asyncio.get_running_loop().create_task(self._relists(),
                                                                        name=f"mcp {self.name} tools changed")
        elif isinstance(message, Exception):
            log.warning("MCP server %s: %s", self.name, message)

    async def _relists(self) -> None:
        import anyio
        from mcp import MCPError
        from pydantic import ValidationError

        while True:
            wait = self._relist_after - time.monotonic()
            if wait > 0:  # read again too soon after the last reading: notifications meanwhile make one reading
                await asyncio.sleep(wait)
            self._relist_again = False
            began = time.monotonic()
            try:  # an error out of this task was asyncio's "Task exception was never retrieved", the old tools kept
                await self._relist()
            except (MCPError, ValidationError, TimeoutError, OSError, anyio.ClosedResourceError,
                    anyio.BrokenResourceError) as e:  # the server's error, a timeout, a closed transport, a list
                log.warning("MCP server %s said its tools changed, and they could not be read again (still offering "
                            "the %d read before): %s", self.name, len(self.tools), _reason(e))
            except Exception:  # noqa: BLE001 -- a bug of the owner's (on_tools_changed): said with its traceback
                log.exception("MCP server %s said its tools changed, and the new list could not be taken (still "
                              "offering the %d read before)", self.name, len(self.tools))
            took = time.monotonic() - began
            self._relist_after = time.monotonic() + max(RELIST_GAP_S, RELIST_SHARE * took)
            if not self._relist_again:
                return

    async def _relist(self) -> None:
        session = self._session
        if session is None:
            return
        # an error (the server's, a timeout, a closed transport, a list the SDK cannot read) goes to _relists,
        # which says so and keeps what is offered
        listed = await self._list_tools(session)
        if self._session is not session:  # stopped meanwhile
            return
        tools = self._tools_of(listed)
        if self.on_tools_changed is not None:  # its error too goes to _relists: self.tools stays the old list
                                               # (the owner vets before it changes what is offered)
            await self.on_tools_changed(self, self.tools, tools)
        self.tools = tools

    async def call(self, tool: str, arguments: dict[str, Any]) -> str:
        if self._session is None:
            raise ToolError(f"MCP server {self.name!r} is not connected")
        import anyio
        from mcp import MCPError

        try:
            result = await self._session.call_tool(tool, arguments, read_timeout_seconds=self.call_timeout_s)
        except MCPError as e:
            raise ToolError(f"MCP server {self.name!r}: {self.stopped_why or e}") from e
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as e:  # its transport ended before this call
            raise ToolError(f"MCP server {self.name!r} is not connected: {self.stopped_why or 'it exited'}") from e
        except TimeoutError as e:
            raise ToolError(f"MCP server {self.name!r} did not answer within {self.call_timeout_s}s") from e
        except RuntimeError as e:
            from mcp.client import UnexpectedClaimedResult

            # the loop logs no ToolError: the operator is told here (once, naming the server and the tool), the model
            # by the error; any other RuntimeError is not the server's, and the loop logs it as a tool's bug
            if isinstance(e, UnexpectedClaimedResult):  # a result of an MCP extension's that the call did not take
                log.warning("MCP server %s: tool %r: the server returned a result it was not asked for (an MCP "
                            "extension's %s, refused by the MCP SDK)", self.name, tool[:100], type(e.result).__name__)
                raise ToolError(f"MCP server {self.name!r}: the server returned a result it was not asked for") from e
            if str(e).startswith(INPUT_REQUIRED):  # the server asked the client for input (elicitation, sampling)
                log.warning("MCP server %s: tool %r: the server asked for input the grid cannot give (an "
                            "InputRequiredResult, refused by the MCP SDK)", self.name, tool[:100])
                raise ToolError(f"MCP server {self.name!r}: the server asked for input the grid cannot give") from e
            if not str(e).startswith(RESULT_REFUSALS):
                raise
            said = _said(str(e))
            log.warning("MCP server %s: tool %r: its result refused against its output schema by the MCP SDK: %s",
                        self.name, tool[:100], said)
            raise ToolError(f"MCP server {self.name!r}: {said}") from e
        text = _content_text(result.content)
        if not text and result.structured_content is not None:
            text = _bounded(_structured(result.structured_content))
        if result.is_error:
            raise ToolError(text or f"MCP tool {tool!r} failed")
        return text if len(text) <= MAX_OUTPUT else text[:MAX_OUTPUT] + "..."

    async def stop(self) -> None:
        stack, self._stack, self._session = self._stack, None, None
        if self._relist_task is not None:
            self._relist_task.cancel()
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> McpServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


def _reason(e: Exception) -> str:
    """Why a list could not be read again, in a line: pydantic's ValidationError (the SDK's, for a list it cannot
    read) by its first error, without the server's values."""
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        return f"the list could not be read: {_first_error(e)}"
    return _said(str(e) or type(e).__name__)  # the server's words: escaped and cut, as at start


def _listed_chars(tool: Any) -> int:
    """How many characters a listed tool holds, as JSON: every field of it (an output schema, annotations, _meta,
    icons as much as its name, description and input schema: each is held until the list is read)."""
    return len(tool.model_dump_json(by_alias=True, exclude_none=True))


SAID_MAX = 300
"""The most characters of a server's own error text an operator's message shows."""


def _said(text: str) -> str:
    """A server's error text as one printable line of at most SAID_MAX characters."""
    text = printable(text)
    return text if len(text) <= SAID_MAX else f"{text[:SAID_MAX]}... ({len(text):,} characters)"


def _first_error(e: Any) -> str:
    """A pydantic ValidationError's first error, where and what, without the value (a server's, of any size)."""
    errors = e.errors(include_input=False)
    first = errors[0] if errors else {}
    return f"{'.'.join(map(str, first.get('loc', ())))}: {first.get('msg', 'invalid')} ({len(errors)} errors)"


def _startable(command: str, path: str | None, cwd: Path | None) -> None:
    """OSError, as starting `command` would raise, when it cannot be: the relay starts it, so the SDK's own
    spawn no longer fails for a command not there (agent_runtime names it in a ConfigError)."""
    where = Path(cwd or ".") / command if os.sep in command else shutil.which(command, os.F_OK, path=path)
    if where is None or not Path(where).is_file():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)
    if not os.access(where, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), command)


def _content_text(blocks: Sequence[Any]) -> str:
    """A result's blocks' text, one a line, put together no further than one character past the cut (MAX_OUTPUT):
    a result of a million blocks, or of one block of 100 MB, was joined whole (its size once more in memory, and
    the time to copy it) before being cut to 4,000 characters."""
    def pieces() -> Iterator[str]:
        for i, block in enumerate(blocks):
            text = getattr(block, "text", None)
            yield ("\n" if i else "") + (text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')}]")
    return _bounded(pieces())


def _structured(value: Any) -> Iterator[str]:
    """A result's structured content written out as str() writes it, a piece at a time (a string's piece at most
    MAX_OUTPUT + 1 characters of it)."""
    if isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield from (", " if i else "", *_structured(key), ": ")
            yield from _structured(item)
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        for i, item in enumerate(value):
            yield ", " if i else ""
            yield from _structured(item)
        yield "]"
    else:
        yield repr(value[: MAX_OUTPUT + 1] if isinstance(value, str) else value)


def _bounded(pieces: Iterable[str], most: int = MAX_OUTPUT + 1) -> str:
    """The pieces together, no longer than `most` characters: those past it are not read."""
    kept: list[str] = []
    for piece in pieces:
        kept.append(piece[:most])
        most -= len(kept[-1])
        if most <= 0:
            break
    return "".join(kept)
