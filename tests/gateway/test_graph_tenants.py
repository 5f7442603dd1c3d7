"""`shortest_path`'s graphs may serve named tenants only (`agents.graphs.NAME: {edges, tenants}`), as the sql tool's
databases. Before, every graph was every tenant's: tenant B's model was shown tenant A's graph's name and its
nodes (an enum in the tool's schema) and had paths computed on it. A graph given as a list of edges stays shared."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from aigrid.agents.graph import ShortestPath
from aigrid.agents.tool import NO_CONTEXT, ToolContext, ToolError
from aigrid.errors import SpecError
from aigrid.spec.load import parse_spec
from aigrid.spec.models import AgentsSpec
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import DEMO, serving, spec_in

MODEL = "smollm2-135m"
A, B = "eu-bank", "default"  # the demo's two tenants: A owns a graph, B does not
GRAPHS = {"vault": {"edges": [["Crypt", "Depot", 7], ["Depot", "Annex", 5]], "tenants": [A]},
          "rail": [["Paris", "Lyon", 465], ["Lyon", "Milan", 440]]}


async def test_a_tenant_s_graph_is_neither_described_nor_read_for_another_tenant(tmp_path: Path) -> None:
    agents = AgentsSpec.model_validate({"graphs": GRAPHS})
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"agents": spec.agents.model_copy(update={"graphs": agents.graphs})})
    engine = ScriptedEngine([])
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "How far?"}],
           "tools": [{"type": "function", "function": {"name": "shortest_path"}}]}

    async def ask_path(c: httpx.AsyncClient, tenant: str, **arguments: str) -> tuple[str, str]:
        """(what the engine was first shown, the step's result) for one call of `tenant`'s model."""
        engine.received.clear()
        engine.replies = [call("shortest_path", **arguments), answer("done")]
        r = await c.post("/v1/chat/completions", headers={"x-aigrid-tenant": tenant}, json=ask)
        assert r.status_code == 200, r.text
        return orjson.dumps(engine.received[0]).decode(), r.json()["aigrid_steps"][0]["result"]

    async with serving(spec, {e.id: engine for e in spec.endpoints}, seed=2) as (c, _):
        shown, result = await ask_path(c, B, graph="vault", source="Crypt", target="Annex")
        assert "vault" not in shown and "Crypt" not in shown and "Depot" not in shown  # neither name nor nodes
        assert "rail" in shown and "Paris" in shown  # the shared graph is shown
        assert "12" not in result
        assert result == "error: name a graph (rail) or pass edges"  # as a graph that does not exist
        shown, result = await ask_path(c, A, graph="vault", source="Crypt", target="Annex")
        assert result == "Crypt -> Depot -> Annex (total 12)"  # A still reads its own
        assert "vault" in shown and "Crypt" in shown and "rail" in shown
        for tenant in (A, B):  # and the shared one serves every tenant
            _, result = await ask_path(c, tenant, graph="rail", source="Paris", target="Milan")
            assert result == "Paris -> Lyon -> Milan (total 905)"


async def test_the_tool_names_a_tenant_s_graph_to_that_tenant_only() -> None:
    import networkx as nx

    vault, rail = nx.Graph(), nx.Graph()
    vault.add_weighted_edges_from([("Crypt", "Depot", 7)])
    rail.add_weighted_edges_from([("Paris", "Lyon", 465)])
    tool = ShortestPath({"vault": vault, "rail": rail}, {"vault": [A], "rail": None})
    assert "vault" not in orjson.dumps(tool.parameters).decode() + tool.description  # as registered: shared only
    b = tool.seen_by(ToolContext(tenant=B))
    assert b.parameters["properties"]["source"]["enum"] == ["Lyon", "Paris"] and "vault" not in b.description
    a = tool.seen_by(ToolContext(tenant=A))
    assert a.parameters["properties"]["graph"] == {"enum": ["rail", "vault"]} and tool.seen_by(ToolContext(tenant=A)) is a
    for view in (tool, b, a):  # whichever view runs, the tenant of the call decides
        with pytest.raises(ToolError, match=r"name a graph \(rail\)"):
            await view.run({"graph": "vault", "source": "Crypt", "target": "Depot"}, ToolContext(tenant=B))
        with pytest.raises(ToolError, match=r"name a graph \(rail\)"):
            await view.run({"graph": "vault", "source": "Crypt", "target": "Depot"}, NO_CONTEXT)
    assert await b.run({"source": "Paris", "target": "Lyon"}, ToolContext(tenant=B)) == "Paris -> Lyon (total 465)"


def test_a_graph_s_tenants_are_checked_and_a_list_of_edges_is_shared() -> None:
    import yaml

    raw = yaml.safe_load(DEMO.read_text())
    raw["agents"] = {"graphs": {"vault": {"edges": [["a", "b", 1]], "tenants": ["nobody"]}}}
    with pytest.raises(SpecError, match=r"agents.graphs.vault.tenants: unknown tenant 'nobody'"):
        parse_spec(raw, "grid.yaml")
    raw["agents"] = {"graphs": {"rail": [["a", "b", 1]]}}
    assert parse_spec(raw, "grid.yaml").agents.graphs["rail"].tenants is None
