"""Which of the grid's server-side tools a tenant may have run (tenants.NAME.tools, glob patterns): a request
naming another is the client's 403 naming it, before routing, audited; no engine asked, no tool run. Before,
every tenant could have every server-side tool run (a database of `agents.sql`, every MCP server's tools)."""

from __future__ import annotations

import random
from pathlib import Path

import httpx

from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.security.firewall.texts import Source
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import _no_sleep, audit_rows, spec_in
from tests.gateway.planted_tool import Planted

MODEL = "smollm2-135m"


async def _grid(tmp_path: Path, engine: ScriptedEngine, tenant: str, **update: object) -> Gateway:
    """The demo grid with `engine` at every endpoint and `tenant`'s spec updated, its guard started."""
    spec = spec_in(tmp_path)
    tenants = dict(spec.tenants)
    tenants[tenant] = tenants[tenant].model_copy(update=update)
    gw = build_gateway(spec.model_copy(update={"tenants": tenants}), {e.id: engine for e in spec.endpoints},
                       rng=random.Random(2), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    return gw


async def test_a_tenant_has_only_its_tools_run(tmp_path: Path) -> None:
    engine = ScriptedEngine([])
    gw = await _grid(tmp_path, engine, "default", tools=["calculator", "crm_*"])
    for name in ("crm_lookup", "payroll_export"):
        gw.agents.tools.add(Planted(name, Source.MCP_RESULT, f"{name} ran"))
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


async def test_a_tool_added_after_the_scope_check_is_not_run_for_a_tenant_without_it(tmp_path: Path) -> None:
    """The scope is checked when the request is read; the loop reads the registry when it starts, later. An MCP
    server that adds a tool in between under the name of the client's own tool had it run server-side for a
    tenant whose `tools` do not name it. The loop now reads the tenant's view of the registry: the call is the
    client's, returned to it, and nothing runs."""
    gw = await _grid(tmp_path, ScriptedEngine([call("payroll_export")]), "default", tools=["calculator"])
    screen = gw.guard.screen_request

    async def between(*args: object, **kwargs: object) -> None:  # after the scope check, before the loop starts
        if "payroll_export" not in gw.agents.tools:
            gw.agents.tools.add(Planted("payroll_export", Source.MCP_RESULT, "payroll exported"))
        await screen(*args, **kwargs)  # type: ignore[arg-type]

    gw.guard.screen_request = between  # type: ignore[method-assign]
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "Export it."}],
                "tools": [{"type": "function", "function": {"name": "calculator"}},
                          {"type": "function", "function": {"name": "payroll_export", "parameters": {}}}]})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls", r.text  # the client's own tool, its call handed back
        assert choice["message"]["tool_calls"][0]["function"]["name"] == "payroll_export"
        assert r.json()["aigrid_steps"] == []  # nothing ran at the grid
        assert "tools" not in (await audit_rows(gw))[-1]["extra"]
    finally:
        await gw.guard.stop()


async def test_the_audit_record_names_every_tool_the_loop_ran(tmp_path: Path) -> None:
    """Which server-side tools acted for a request (a query, a fetch, an MCP tool) and with what arguments was in
    no audit record: only the answer's `aigrid_steps`, which the client keeps. Now each run is in the record's
    `tools`: name, site, outcome, time and the arguments' keyed hash (the arguments in clear where the tenant's
    prompts are kept)."""
    engine = ScriptedEngine([])
    gw = await _grid(tmp_path, engine, "eu-bank", store_prompts=True)
    gw.agents.tools.add(Planted("crm_lookup", Source.MCP_RESULT, "crm_lookup ran"))
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Look it up, then add."}],
           "tools": [{"type": "function", "function": {"name": "crm_lookup"}},
                     {"type": "function", "function": {"name": "calculator"}}]}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            for tenant in ("default", "eu-bank"):
                engine.replies = [call("crm_lookup", id="42"), call("calculator", expression="2+2"), answer("4")]
                r = await c.post("/v1/chat/completions", headers={"x-aigrid-tenant": tenant}, json=ask)
                assert r.status_code == 200, r.text
                record = (await audit_rows(gw))[-1]
                site = record["decision"]["chosen"]["site"]
                runs = record["extra"]["tools"]
                assert [(t["tool"], t["site"], t["ok"]) for t in runs] == [("crm_lookup", site, True),
                                                                           ("calculator", site, True)]
                assert all(t["ms"] >= 0 and len(t["arguments_hmac"]) == 64 for t in runs)
                assert runs[0]["arguments_hmac"] != runs[1]["arguments_hmac"]
                if tenant == "eu-bank":  # keeps its prompts: the arguments too
                    assert [t["arguments"] for t in runs] == [{"id": "42"}, {"expression": "2+2"}]
                else:
                    assert all("arguments" not in t for t in runs)
    finally:
        await gw.guard.stop()


async def test_a_background_response_naming_a_tool_the_tenant_may_not_have_is_refused_at_its_create(
        tmp_path: Path) -> None:
    """A background create is admitted at once (its quota reserved: docs/responses-api.md); a tool the tenant may
    not have run was refused only when the run began, so the create answered a queued response that then failed,
    its request counted. Now the create itself is the 403 the foreground request gets."""
    engine = ScriptedEngine([])
    gw = await _grid(tmp_path, engine, "default", tools=["calculator"])
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/responses", json={"model": MODEL, "input": "Find the path.", "background": True,
                                                    "tools": [{"type": "function", "name": "shortest_path"}]})
        assert r.status_code == 403, r.text
        err = r.json()["error"]
        assert (err["code"], err["param"]) == ("tool_not_allowed", "tools[0]") and "shortest_path" in err["message"]
        assert engine.received == []
    finally:
        await gw.guard.stop()
