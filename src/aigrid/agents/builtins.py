"""The built-in tools in one registry: ordinary code, not AI, for what code does better than a model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from aigrid.agents.calculator import Calculator
from aigrid.agents.fetch import HttpFetch
from aigrid.agents.graph import ShortestPath
from aigrid.agents.regex_tool import RegexTool
from aigrid.agents.retrieval import Retrieve
from aigrid.agents.sql import Database, SqlQuery
from aigrid.agents.tool import Tool, ToolRegistry
from aigrid.agents.vector_store import SiteStores

if TYPE_CHECKING:
    import networkx as nx


def builtin_tools(*, graphs: Mapping[str, nx.Graph] | None = None,
                  graph_tenants: Mapping[str, Iterable[str] | None] | None = None,
                  sql_databases: Mapping[str, Path | Database] | None = None,
                  http_allow: Iterable[str] | None = None, http_client: httpx.AsyncClient | None = None,
                  stores: SiteStores | None = None, regex_timeout_s: float = 0.5,
                  extra: Iterable[Tool] = ()) -> ToolRegistry:
    """calculator, regex and shortest_path always; sql with databases, http_fetch with an allow-list and
    a client, retrieve with site stores; then `extra` (e.g. MCP tools). `graph_tenants`: a graph's tenants (one
    left out: shared). Reads the SQL schemas: call it at startup, not per request."""
    tools: list[Tool] = [Calculator(), RegexTool(regex_timeout_s), ShortestPath(graphs, graph_tenants)]
    if sql_databases:
        tools.append(SqlQuery.load(sql_databases))
    if http_allow is not None and http_client is not None:
        tools.append(HttpFetch(http_allow, http_client))
    if stores is not None:
        tools.append(Retrieve(stores))
    return ToolRegistry([*tools, *extra])
