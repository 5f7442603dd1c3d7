"""The `sql` tool's databases may serve named tenants only (`agents.sql.NAME: {path, tenants}`). Before, every
database belonged to no tenant: each tenant allowed the tool had every schema in the tool's description (what the
model reads) and read every database's rows, so tenant B's model saw and queried tenant A's tables (helper 132's
finding; helper 137, 5 Dec 2026). A database given as a path alone stays shared."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from typer.testing import CliRunner

from aigrid.agents.loop import offered_tools
from aigrid.agents.tool import NO_CONTEXT, ToolContext, ToolError, ToolRegistry
from aigrid.cli import app
from aigrid.spec.models import AgentsSpec
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.conftest import DEMO, serving, spec_in

MODEL = "smollm2-135m"
A, B = "eu-bank", "default"  # the demo's two tenants: A owns a database, B does not


def _db(path: Path, table: str, value: str) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, value TEXT)")
        conn.execute(f"INSERT INTO {table} (value) VALUES (?)", (value,))
    conn.close()
    return path


@pytest.fixture
def dbs(tmp_path: Path) -> dict[str, Path]:
    return {"ledger": _db(tmp_path / "a.db", "a_ledger", "alpha-secret-row"),
            "fares": _db(tmp_path / "shared.db", "rail_fares", "paris-lyon-42")}


async def test_a_tenant_s_database_is_neither_described_nor_read_for_another_tenant(
        tmp_path: Path, dbs: dict[str, Path]) -> None:
    agents = AgentsSpec.model_validate({"sql": {"ledger": {"path": str(dbs["ledger"]), "tenants": [A]},
                                                "fares": str(dbs["fares"])}})
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"agents": spec.agents.model_copy(update={"sql": agents.sql})})
    engine = ScriptedEngine([])
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Look it up."}],
           "tools": [{"type": "function", "function": {"name": "sql"}}]}

    async def ask_sql(c: httpx.AsyncClient, tenant: str, database: str, table: str) -> tuple[str, str]:
        """(what the engine was first shown, the step's result) for one query of `tenant`'s model."""
        engine.received.clear()
        engine.replies = [call("sql", query=f"SELECT value FROM {table}", database=database), answer("done")]
        r = await c.post("/v1/chat/completions", headers={"x-aigrid-tenant": tenant}, json=ask)
        assert r.status_code == 200, r.text
        return orjson.dumps(engine.received[0]).decode(), r.json()["aigrid_steps"][0]["result"]

    async with serving(spec, {e.id: engine for e in spec.endpoints}, seed=2) as (c, _):
        shown, result = await ask_sql(c, B, "ledger", "a_ledger")
        assert "a_ledger" not in shown and "ledger" not in shown  # neither A's schema nor its name offered
        assert "rail_fares" in shown  # the shared database's schema is
        assert "alpha-secret-row" not in result
        assert result == "error: unknown database 'ledger' (known: fares)"  # as a name that does not exist
        _, missing = await ask_sql(c, B, "nowhere", "a_ledger")
        assert missing == "error: unknown database 'nowhere' (known: fares)"
        shown, result = await ask_sql(c, A, "ledger", "a_ledger")
        assert result == "value\nalpha-secret-row"  # A still reads its own
        assert "a_ledger" in shown and "rail_fares" in shown  # and its model is shown it beside the shared one
        for tenant in (A, B):  # and the shared one serves every tenant
            _, result = await ask_sql(c, tenant, "fares", "rail_fares")
            assert result == "value\nparis-lyon-42"
        refused = {"type": "mcp_tool_execution_error",
                   "content": [{"type": "text", "text": "error: unknown database 'ledger' (known: fares)"}]}
        for tenant, expected in ((B, {"error": refused, "output": None}),
                                 (A, {"error": None, "output": "value\nalpha-secret-row"})):  # the Responses API
            engine.received.clear()
            engine.replies = [call("sql", query="SELECT value FROM a_ledger", database="ledger"), answer("done")]
            r = await c.post("/v1/responses", headers={"x-aigrid-tenant": tenant}, json={
                "model": MODEL, "input": "Look it up.", "tools": [{"type": "function", "name": "sql"}]})
            assert r.status_code == 200, r.text
            item = r.json()["output"][1]  # after the mcp_list_tools item (since the thirty-seventh session)
            assert item["type"] == "mcp_call" and {k: item[k] for k in expected} == expected, item
            if tenant == B:
                assert "a_ledger" not in orjson.dumps(engine.received[0]).decode()


async def test_a_tenant_s_view_of_the_tool_describes_its_own_and_the_shared_databases(dbs: dict[str, Path]) -> None:
    from aigrid.agents.sql import Database, SqlQuery

    tool = SqlQuery.load({"ledger": Database(dbs["ledger"], frozenset({A})), "fares": dbs["fares"]})
    registry = ToolRegistry([tool])
    body = {"tools": [{"type": "function", "function": {"name": "sql"}}]}

    def offered(context: ToolContext | None) -> tuple[str, object]:
        spec = offered_tools(body, registry.scoped(lambda _: True, context))[0]
        return spec.description, spec.parameters["properties"].get("database")

    for context in (None, NO_CONTEXT, ToolContext("paris", B)):  # the tool as registered, and B's view
        description, database = offered(context)
        assert "a_ledger" not in description and "ledger" not in description and "rail_fares" in description
        assert database == ({"type": "string", "maxLength": 128} if context is None else None)  # no name of A's
    description, database = offered(ToolContext("paris", A))
    assert "a_ledger" in description and "rail_fares" in description and database == {"enum": ["fares", "ledger"]}
    assert tool.seen_by(ToolContext("paris", A)) is tool.seen_by(ToolContext("lyon", A))  # made once a tenant
    # whichever view runs it, the query follows the context's tenant
    with pytest.raises(ToolError, match=r"^unknown database 'ledger' \(known: fares\)$"):
        await tool.seen_by(ToolContext("paris", A)).run({"query": "SELECT 1", "database": "ledger"},
                                                        ToolContext("paris", B))
    only_a = SqlQuery.load({"ledger": Database(dbs["ledger"], frozenset({A}))})
    assert "a_ledger" not in only_a.description and "no database is open" in only_a.description
    with pytest.raises(ToolError, match=r"^unknown database None \(known: none\)$"):
        await only_a.run({"query": "SELECT value FROM a_ledger"}, ToolContext("paris", B))
    assert await only_a.run({"query": "SELECT value FROM a_ledger"}, ToolContext("paris", A)) == \
        "value\nalpha-secret-row"


def test_spec_check_refuses_a_database_for_an_unknown_tenant(tmp_path: Path, dbs: dict[str, Path]) -> None:
    raw = yaml.safe_load(DEMO.read_text())
    raw["agents"]["sql"] = {"ledger": {"path": "a.db", "tenants": [A, "nobody"]}, "fares": "shared.db"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["spec", "check", str(bad)])
    assert r.exit_code != 0
    assert "agents.sql.ledger.tenants: unknown tenant 'nobody'" in r.output
    raw["agents"]["sql"]["ledger"]["tenants"] = []
    bad.write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["spec", "check", str(bad)])
    assert r.exit_code != 0 and "agents.sql.ledger.tenants" in r.output
    raw["agents"]["sql"]["ledger"]["tenants"] = [A]
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["spec", "check", str(good)])
    assert r.exit_code == 0, r.output
    from aigrid.spec.load import load_spec

    sql = load_spec(good).agents.sql  # both forms' paths are relative to the spec file
    assert (sql["ledger"].path, sql["ledger"].tenants) == (str(dbs["ledger"]), [A])
    assert (sql["fares"].path, sql["fares"].tenants) == (str(dbs["fares"]), None)
