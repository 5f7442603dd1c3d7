"""The agent loop's parts a gateway owns: the tool registry (built-ins, spec-registered SQL / graphs / HTTP,
MCP servers), per-site document stores and the embedder behind /v1/embeddings and retrieval.

Built from the spec without I/O; start() (the app's lifespan) loads each site's documents and starts the MCP
servers, stop() ends them. The embedding model (numpy, encoders/minilm.py) loads on first use; a gateway
installed without it serves no embedding model (one warning at start) and refuses site documents.
"""

from __future__ import annotations

import asyncio
import glob
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from aigrid.agents.builtins import builtin_tools
from aigrid.agents.embeddings import Embedder, MiniLMEmbedder
from aigrid.agents.loop import LoopConfig
from aigrid.agents.mcp_tools import McpServer, McpTool
from aigrid.agents.public_only import PublicOnlyTransport
from aigrid.agents.sql import Database
from aigrid.agents.tool import ToolError, ToolRegistry
from aigrid.agents.vector_store import SiteStores, read_documents
from aigrid.errors import ConfigError
from aigrid.gateway.schemas import constraint_fault, schema_patterns
from aigrid.json_depth import MAX_DEPTH, too_deep
from aigrid.security.firewall.pipeline import Verdict
from aigrid.spec.models import GridSpec

if TYPE_CHECKING:
    import networkx as nx

log = logging.getLogger("aigrid.agents")


def _graphs(spec: GridSpec) -> dict[str, nx.Graph]:
    if not spec.agents.graphs:  # networkx only for a spec that registers graphs (agents/graph.py)
        return {}
    import networkx as nx

    graphs = {}
    for name, graph in spec.agents.graphs.items():
        g: nx.Graph[str] = nx.Graph()
        g.add_weighted_edges_from(graph.edges)
        graphs[name] = g
    return graphs


@dataclass
class AgentRuntime:
    spec: GridSpec
    tools: ToolRegistry
    loop: LoopConfig
    stores: SiteStores
    embedders: dict[str, Embedder]
    """Each served embedding model name -> its embedder; empty when the embedding model is not installed."""
    http_client: httpx.AsyncClient
    mcp: list[McpServer] = field(default_factory=list)
    withheld: dict[str, Verdict] = field(default_factory=dict)
    """MCP tools never offered to a model: their descriptions read as injections (start())."""
    _changing: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    """Held by _changed: one change taken at a time, in the order asked (start's catch-up, then a server's next)."""

    @classmethod
    def from_spec(cls, spec: GridSpec) -> AgentRuntime:
        embedder = MiniLMEmbedder(threads=1)
        stores = SiteStores(embedder)
        client = httpx.AsyncClient(transport=PublicOnlyTransport(private=spec.agents.http_private), trust_env=False, follow_redirects=False, timeout=10)
        try:
            tools = builtin_tools(graphs=_graphs(spec), graph_tenants={k: g.tenants for k, g in spec.agents.graphs.items()},
                                  http_allow=spec.agents.http_allow or None,
                                  http_client=client, stores=stores,
                                  sql_databases={k: Database(Path(v.path), None if v.tenants is None else frozenset(v.tenants))
                                                 for k, v in spec.agents.sql.items()})
        except (OSError, ToolError) as e:  # ToolError: a database that does not exist
            raise ConfigError(f"agents.sql: cannot open a database: {e}") from e
        missing = MiniLMEmbedder.missing()
        if missing is not None:  # /v1/embeddings and /v1/models without it; site documents refused at start
            log.warning("embeddings off: %s", missing)
        mcp = [McpServer(name, m.command, env=m.env or None, prefix=m.prefix, call_timeout_s=m.call_timeout_s,
                         max_message_bytes=m.max_message_bytes)
               for name, m in spec.agents.mcp_servers.items()]
        return cls(spec, tools, LoopConfig(max_steps=spec.agents.max_steps,
                                           max_steps_limit=spec.agents.max_steps_limit,
                                           tool_timeout_s=spec.agents.tool_timeout_s,
                                           quiet_s=spec.gateway.stream_idle_s),
                   stores, {} if missing else {alias: embedder for alias in MiniLMEmbedder.aliases}, client, mcp)

    async def start(self, vet: Callable[[str, str], Verdict | None] | None = None) -> None:
        """Load each site's documents and start the MCP servers. `vet(tool, text)` reads what a model would
        read of each MCP tool (its description and its parameters'; the firewall's Firewall.tool_description):
        a tool it blocks is withheld (never offered to a model; logged), one it flags is offered and logged."""
        missing = MiniLMEmbedder.missing()
        for sid, site in self.spec.sites.items():
            for i, doc in enumerate(site.documents):
                if missing is not None:
                    raise ConfigError(f"sites.{sid}.documents[{i}]: retrieval needs the embedding model: {missing}")
                paths = sorted(Path(p) for p in glob.glob(doc.path)) or [Path(doc.path)]
                try:
                    texts = read_documents(paths)
                except OSError as e:
                    raise ConfigError(f"sites.{sid}.documents[{i}].path: {e}") from e
                chunks = await self.stores.load(sid, texts, tenant=doc.tenant)
                log.info("site %s: %d chunks from %s", sid, chunks, doc.path)
        for server in self.mcp:
            try:
                tools = await server.start()
            except OSError as e:  # not found, not executable: was a FileNotFoundError traceback naming nothing
                raise ConfigError(f"agents.mcp_servers.{server.name}.command: cannot start {server.command[0]!r}: "
                                  f"{e.strerror or e}") from e
            # read on a worker thread, as a changed list is (_changed): each tool's text is bounded
            # (mcp_tools.MAX_TOOL_TEXT), and the firewall reads it at about 10 s per MB
            verdicts = await asyncio.to_thread(_vet_all, vet, tools)
            for tool, verdict in zip(tools, verdicts, strict=True):
                self._offer(server, tool, verdict)
            server.on_tools_changed = lambda s, old, new: self._changed(s, old, new, vet)
            if server.tools is not tools:  # a change read while they were vetted (no owner yet): taken now
                await self._changed(server, tools, server.tools, vet)

    def _offer(self, server: McpServer, tool: McpTool, verdict: Verdict | None) -> bool:
        """Offer one MCP tool unless the firewall's verdict on it blocks it or its name is taken (by a built-in or
        another server's tool: logged); whether it is offered."""
        if verdict is not None and verdict.action == "blocked":
            self.withheld[tool.name] = verdict
            log.error("MCP server %s: tool %s withheld: its description reads as an instruction to the "
                      "model (%s, score %s)", server.name, tool.name, verdict.detail, verdict.score)
            return False
        fault = schema_fault(tool.parameters)
        if fault is not None:
            log.error("MCP server %s: tool %s not offered: %s", server.name, tool.name, fault)
            return False
        if verdict is not None:
            log.warning("MCP server %s: tool %s offered, its description flagged: %s (score %s)",
                        server.name, tool.name, verdict.detail, verdict.score)
        try:
            self.tools.add(tool)
        except ValueError as e:  # a name taken by a built-in or another server's tool
            log.error("MCP server %s: tool %s not offered: %s", server.name, tool.name, e)
            return False
        return True

    async def _changed(self, server: McpServer, old: list[McpTool], tools: list[McpTool],
                       vet: Callable[[str, str], Verdict | None] | None) -> None:
        """A server's new tool list (it said its tools changed): its old tools out, the new ones vetted and
        offered as at start (a description changed after it was vetted is vetted again: a server cannot pass
        the check with an honest description and swap in a poisoned one later). The reading runs on a worker
        thread (a long list must not hold up requests); the registry changes here, on the loop, at once."""
        async with self._changing:
            verdicts = await asyncio.to_thread(_vet_all, vet, tools)
            before = {t.name for t in old if self.tools.get(t.name) is t}  # only what this server offered: a name
            for name in before:                                             # it collided on stays its owner's
                self.tools.remove(name)
            for t in old:
                if t.name in self.withheld and t.name not in self.tools:
                    del self.withheld[t.name]
            offered = [tool.name for tool, verdict in zip(tools, verdicts, strict=True)
                       if self._offer(server, tool, verdict)]
            log.warning("MCP server %s changed its tools: now offering %s (was %s)", server.name,
                        ", ".join(sorted(offered)) or "none", ", ".join(sorted(before)) or "none")

    async def stop(self) -> None:
        for server in self.mcp:
            await server.stop()
        await self.http_client.aclose()


def schema_fault(schema: Mapping[str, Any]) -> str | None:
    """Why an MCP tool's input schema is past a bound a client's tool schema is held to before it reaches an engine's
    grammar compiler (the step schema of a constrained turn, a native turn's tools), or None: nested deeper than a
    request's JSON may be (json_depth.MAX_DEPTH), or a `pattern` past the regex bound (schemas.regex_fault: 256 KiB,
    1,000 nested groups; schemas.check_schema_patterns holds a client's). Until the thirty-fourth session a server's
    schemas reached the engine unread."""
    deep = too_deep(dict(schema))
    if deep is not None:
        return f"its input schema is nested deeper than {MAX_DEPTH} levels (at {'.'.join(map(str, deep)) or 'its root'})"
    for path, text in schema_patterns(dict(schema)):
        fault = constraint_fault(path, text)
        if fault is not None:
            return f"its input schema at {'.'.join(map(str, path))}: {fault}"
    return None


def _vet_all(vet: Callable[[str, str], Verdict | None] | None, tools: list[McpTool]) -> list[Verdict | None]:
    return [vet(tool.name, tool.model_text()) if vet is not None else None for tool in tools]
