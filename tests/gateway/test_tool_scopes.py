"""Which of the grid's server-side tools a tenant may have run (tenants.NAME.tools, glob patterns): a request
naming another is the client's 403 naming it, before routing, audited; no engine asked, no tool run. Before,
every tenant could have every server-side tool run (a database of `agents.sql`, every MCP server's tools)."""

from __future__ import annotations

import random
from pathlib import Path

import httpx

from aigrid.gateway.app import build_app, build_gateway
from aigrid.security.firewall.texts import Source
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import _no_sleep, audit_rows, spec_in
from tests.gateway.test_choke_point import Planted

MODEL = "smollm2-135m"


async def test_a_tenant_has_only_its_tools_run(tmp_path: Path) -> None:
    spec = spec_in(tmp_path)
    tenants = dict(spec.tenants)
    tenants["default"] = tenants["default"].model_copy(update={"tools": ["calculator", "crm_*"]})
    engine = ScriptedEngine([])
    gw = build_gateway(spec.model_copy(update={"tenants": tenants}), {e.id: engine for e in spec.endpoints},
                       rng=random.Random(2), sleep=_no_sleep)
    for name in ("crm_lookup", "payroll_export"):
        gw.agents.tools.add(Planted(name, Source.MCP_RESULT, f"{name} ran"))
    await gw.scraper.scrape_once()
    await gw.guard.start()
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Look it up."}]}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            for i, refused in ((1, "payroll_export"), (1, "shortest_path")):
                tools = [{"type": "function", "function": {"name": "calculator"}},
                         {"type": "function", "function": {"name": refused}}]
                r = await c.post("/v1/chat/completions", json={**ask, "tools": tools})
                assert r.status_code == 403, r.text
                err = r.json()["error"]
                assert (err["code"], err["param"]) == ("tool_not_allowed", f"tools[{i}]") and refused in err["message"]
                assert (await audit_rows(gw))[-1]["outcome"] == "error:tool_not_allowed"
            assert engine.received == []
            engine.replies = [call("crm_lookup"), answer("done")]
            r = await c.post("/v1/chat/completions", json={
                **ask, "tools": [{"type": "function", "function": {"name": "crm_lookup"}},
                                 {"type": "function", "function": {"name": "my_own_tool", "parameters": {}}}]})
            assert r.status_code == 200, r.text  # an allowed server tool, and a client tool of the client's own
            assert r.json()["aigrid_steps"][0]["result"] == "crm_lookup ran"
            engine.replies = [answer("4")]
            other = await c.post("/v1/chat/completions", headers={"x-aigrid-tenant": "eu-bank"}, json={
                **ask, "tools": [{"type": "function", "function": {"name": "payroll_export"}}]})
            assert other.status_code == 200, other.text  # a tenant without `tools` has every one run, as before
    finally:
        await gw.guard.stop()


def test_a_key_and_a_token_have_their_tenant_s_tools() -> None:
    """The tools are a scope of the tenant's (Scopes.tools, beside its models and jurisdictions): a key's or a JWT's
    scopes narrow the tenant's and name no tools, so a key keeps its tenant's; the key file's records are unchanged."""
    from aigrid.security.principal import Scopes

    tenant = Scopes(tools=frozenset({"calculator", "crm_*"}))
    key = tenant.narrowed_by(Scopes(jurisdictions=frozenset({"EU"})))
    assert key.allows_tool("crm_lookup") and key.allows_tool("calculator") and not key.allows_tool("sql")
    assert Scopes().allows_tool("sql") and "tools" not in Scopes().to_dict()
    assert Scopes.from_dict(tenant.to_dict()) == tenant
