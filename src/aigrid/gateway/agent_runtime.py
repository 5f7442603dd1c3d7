"""The agent loop's parts a gateway owns: the tool registry (built-ins, spec-registered SQL / graphs / HTTP,
MCP servers), per-site document stores and the embedder behind /v1/embeddings and retrieval.

Built from the spec without I/O; start() (the app's lifespan) loads each site's documents and starts the MCP
servers, stop() ends them. The embedding model loads on first use, so a gateway that never embeds never
imports torch.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import networkx as nx

from aigrid.agents.builtins import builtin_tools
from aigrid.agents.embeddings import Embedder, MiniLMEmbedder
from aigrid.agents.loop import LoopConfig
from aigrid.agents.mcp_tools import McpServer
from aigrid.agents.tool import ToolRegistry
from aigrid.agents.vector_store import SiteStores, read_documents
from aigrid.errors import ConfigError
from aigrid.spec.models import GridSpec

log = logging.getLogger("aigrid.agents")


def _graphs(spec: GridSpec) -> dict[str, nx.Graph]:
    graphs = {}
    for name, edges in spec.agents.graphs.items():
        g = nx.Graph()
        g.add_weighted_edges_from(edges)
        graphs[name] = g
    return graphs


@dataclass
class AgentRuntime:
    spec: GridSpec
    tools: ToolRegistry
    loop: LoopConfig
    stores: SiteStores
    embedders: dict[str, Embedder]
    http_client: httpx.AsyncClient
    mcp: list[McpServer] = field(default_factory=list)

    @classmethod
    def from_spec(cls, spec: GridSpec) -> AgentRuntime:
        embedder = MiniLMEmbedder(threads=1)
        stores = SiteStores(embedder)
        client = httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=10)
        try:
            tools = builtin_tools(graphs=_graphs(spec), http_allow=spec.agents.http_allow or None,
                                  http_client=client, stores=stores,
                                  sql_databases={k: Path(v) for k, v in spec.agents.sql.items()})
        except OSError as e:
            raise ConfigError(f"agents.sql: cannot open a database: {e}") from e
        mcp = [McpServer(name, m.command, env=m.env or None, prefix=m.prefix, call_timeout_s=m.call_timeout_s)
               for name, m in spec.agents.mcp_servers.items()]
        return cls(spec, tools, LoopConfig(max_steps=spec.agents.max_steps,
                                           tool_timeout_s=spec.agents.tool_timeout_s),
                   stores, {alias: embedder for alias in MiniLMEmbedder.aliases}, client, mcp)

    async def start(self) -> None:
        for sid, site in self.spec.sites.items():
            for i, doc in enumerate(site.documents):
                paths = sorted(Path(p) for p in glob.glob(doc.path)) or [Path(doc.path)]
                try:
                    texts = read_documents(paths)
                except OSError as e:
                    raise ConfigError(f"sites.{sid}.documents[{i}].path: {e}") from e
                chunks = await self.stores.load(sid, texts, tenant=doc.tenant)
                log.info("site %s: %d chunks from %s", sid, chunks, doc.path)
        for server in self.mcp:
            for tool in await server.start():
                self.tools.add(tool)

    async def stop(self) -> None:
        for server in self.mcp:
            await server.stop()
        await self.http_client.aclose()
