"""shortest_path: Dijkstra on registered and inline graphs; unknown nodes and bad edges refused."""

from __future__ import annotations

import orjson
import pytest

from aigrid.agents.graph import ShortestPath, graph_from_edges
from aigrid.agents.tool import NO_CONTEXT, ToolError

RAIL = graph_from_edges([["Paris", "Lyon", 465], ["Paris", "Frankfurt", 570], ["Lyon", "Zurich", 410],
                         ["Zurich", "Frankfurt", 400], ["Lyon", "Milan", 440], ["Oslo", "Bergen", 490]])
DEEP = orjson.loads("[" * 1_000 + "]" * 1_000)  # a model's arguments, as the loop reads them (orjson: 1,024 levels)


async def test_registered_graph_and_schema_enum() -> None:
    tool = ShortestPath({"rail": RAIL})
    assert tool.parameters["properties"]["source"]["enum"] == sorted(RAIL.nodes)
    assert await tool.run({"source": "Lyon", "target": "Frankfurt"}, NO_CONTEXT) == "Lyon -> Zurich -> Frankfurt (total 810)"
    assert await tool.run({"source": "Lyon", "target": "Oslo"}, NO_CONTEXT) == "no path from Lyon to Oslo"


async def test_inline_edges() -> None:
    out = await ShortestPath().run({"source": "a", "target": "c", "edges": [["a", "b", 1], ["b", "c", 2.5], ["a", "c"]]},
                                   NO_CONTEXT)
    assert out == "a -> c (total 1)"


@pytest.mark.parametrize("args", [
    {"source": "Lyon", "target": "Atlantis"},
    {"source": 1, "target": "Lyon"},
    {"source": "a", "target": "b", "edges": [["a", "b", -1]]},
    {"source": "a", "target": "b", "edges": [["a", "b", float("nan")]]},
    {"source": "a", "target": "b", "edges": [["a"]]},
    {"source": "a", "target": "b", "edges": [["a", "b"]] * 10_001},
    {"source": "a", "target": "b", "edges": [[DEEP, "b", 1]]},  # was a RecursionError: "failed unexpectedly"
    {"source": "a", "target": "b", "edges": [["a", {"name": "b"}, 1]]},
])
async def test_bad_input_is_refused(args: dict) -> None:
    with pytest.raises(ToolError):
        await ShortestPath({"rail": RAIL}).run(args, NO_CONTEXT)
