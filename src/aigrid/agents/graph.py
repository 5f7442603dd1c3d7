"""shortest_path: Dijkstra on a weighted graph (networkx), the kind of question a model gets wrong.

Graphs are registered by name (e.g. a site's rail or fibre network, from the spec); a call may also pass
a small graph inline as `edges`. A graph is the grid's (shared: every tenant allowed the tool reads it) or
serves named tenants only (`agents.graphs.NAME: {edges, tenants}`), as the sql tool's databases: the tool as
registered describes the shared ones only, `seen_by(context)` is one request's tenant's view (its own graphs'
names and nodes beside the shared ones, no other tenant's), and a graph another tenant names is unknown. The registered node names become an enum in the argument schema, so a
constrained small model can only name places that exist. networkx (about 11 MB and 130 ms to import) is
imported when a graph is first built, in a worker thread for a call's graph: a gateway whose agents never
ask for a path never loads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from aigrid.agents.tool import ToolContext, ToolError
from aigrid.security.firewall.texts import Source

if TYPE_CHECKING:
    import networkx as nx

MAX_INLINE_EDGES = 10_000
Edge = Sequence[Any]


def graph_from_edges(edges: Iterable[Edge]) -> nx.Graph:
    """An undirected weighted graph from [a, b] or [a, b, weight] rows; ToolError on a bad row."""
    import networkx as nx

    g: nx.Graph[Any] = nx.Graph()
    for i, row in enumerate(edges):
        if not isinstance(row, list | tuple) or len(row) not in (2, 3):
            raise ToolError(f"edge {i} must be [a, b] or [a, b, weight]")
        if not all(isinstance(node, str | int | float) for node in row[:2]):  # str() of a list nested 1,000 deep
            raise ToolError(f"edge {i}: a node is named by a string or a number")  # is a RecursionError
        a, b = str(row[0]), str(row[1])
        w = row[2] if len(row) == 3 else 1
        if isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0 or w == float("inf"):
            raise ToolError(f"edge {i}: the weight must be a finite number >= 0")
        g.add_edge(a, b, weight=w)
    return g


class ShortestPath:
    name = "shortest_path"
    source = Source.TOOL_RESULT

    def __init__(self, graphs: Mapping[str, nx.Graph] | None = None,
                 tenants: Mapping[str, Iterable[str] | None] | None = None, *, seen: Iterable[str] | None = None
                 ) -> None:
        """`tenants`: graph name -> the tenants it serves (a graph left out, or None: every tenant). `seen`: the
        graphs this view describes and offers (seen_by: one tenant's). None: the tool as registered, which
        describes the shared graphs only and, when a graph serves named tenants, takes any name for `graph`."""
        self.graphs = dict(graphs or {})
        self.tenants = {name: frozenset(t) for name, t in (tenants or {}).items() if t is not None}
        self._views: dict[tuple[str, ...], ShortestPath] = {}
        shown = self._serving(None) if seen is None else sorted(seen)
        open_names = seen is None and len(shown) < len(self.graphs)  # a tenant's graph is named, not described
        nodes = sorted({str(n) for name in shown for n in self.graphs[name].nodes})
        node_schema: dict[str, Any] = ({"enum": nodes} if 0 < len(nodes) <= 500 and not open_names
                                       else {"type": "string"})
        props: dict[str, Any] = {"source": {**node_schema, "description": "the start"},
                                 "target": {**node_schema, "description": "the destination"}}
        if open_names:
            props["graph"] = {"type": "string", "maxLength": 128}
        elif len(shown) > 1:
            props["graph"] = {"enum": shown}
        if not shown:
            props["edges"] = {"type": "array", "items": {"type": "array"}}
        self.parameters: Mapping[str, Any] = {
            "type": "object", "properties": props,
            "required": ["source", "target"] + ([] if shown or open_names else ["edges"]),
            "additionalProperties": False,
        }
        known = f" on the {', '.join(shown)} network" if shown else ""
        self.description = (f"Shortest (least total weight) path between two nodes{known}; "
                            "returns the nodes in order and the total distance.")

    def _serving(self, tenant: str | None) -> list[str]:
        return sorted(n for n in self.graphs if n not in self.tenants or tenant in self.tenants[n])

    def seen_by(self, context: ToolContext) -> ShortestPath:
        """The tool as `context`'s tenant is offered it: its description and parameters name the shared graphs
        and the tenant's own (their nodes too), no other tenant's. A view is made once for each set of graphs."""
        names = tuple(self._serving(context.tenant))
        view = self._views.get(names)
        if view is None:
            view = self._views[names] = ShortestPath(self.graphs, self.tenants, seen=names)
        return view

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> str:
        source, target = arguments.get("source"), arguments.get("target")
        if not isinstance(source, str) or not isinstance(target, str):
            raise ToolError("source and target must be node names")
        # off the event loop: an inline graph of up to 10,000 edges is built there, and networkx imported
        return await asyncio.to_thread(self._solve, arguments, source, target, context.tenant)

    def _solve(self, arguments: Mapping[str, Any], source: str, target: str, tenant: str | None) -> str:
        g = self._graph(arguments, tenant)
        for node in (source, target):
            if node not in g:
                raise ToolError(f"unknown node {node!r}")
        return _dijkstra(g, source, target)

    def _graph(self, arguments: Mapping[str, Any], tenant: str | None) -> nx.Graph:
        edges = arguments.get("edges")
        if edges is not None:
            if not isinstance(edges, list) or len(edges) > MAX_INLINE_EDGES:
                raise ToolError(f"edges must be a list of at most {MAX_INLINE_EDGES} rows")
            return graph_from_edges(edges)
        known = self._serving(tenant)  # another tenant's graph is unknown here, whatever view runs
        name = arguments.get("graph")
        if name is None and len(known) == 1:
            name = known[0]
        if not isinstance(name, str) or name not in known:
            raise ToolError(f"name a graph ({', '.join(known) or 'none registered'}) or pass edges")
        return self.graphs[name]


def _dijkstra(g: nx.Graph, source: str, target: str) -> str:
    import networkx as nx

    try:
        # with a target it answers (length, path); its stubs give the form without one too
        length, path = cast("tuple[float, list[Any]]", nx.single_source_dijkstra(g, source, target, weight="weight"))
    except nx.NetworkXNoPath:
        return f"no path from {source} to {target}"
    total = int(length) if float(length).is_integer() else round(float(length), 6)
    return f"{' -> '.join(map(str, path))} (total {total})"
