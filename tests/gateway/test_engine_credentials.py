"""An engine's credentials never written anywhere (AREA G6, 30th session): an engine whose base URL holds
`ops:s3cret@` and fails; its address may show to an operator, its user and password in no log line, audit record,
metric, /v1/grid, decision (keys off: every caller an operator; keys on: the operator's view) or `aigrid explain`."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.explain import render_decision
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.wiring import build_engines, upstream
from aigrid.security.keys import KeyRing
from aigrid.spec.models import TenantSpec
from aigrid.userinfo import without_userinfo
from tests.gateway.conftest import _no_sleep, spec_in

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
SECRET = "k" * 32


def refusing(request: httpx.Request) -> httpx.Response:
    """Every engine refuses the connection, its error quoting its URL with the user and password, as some clients do."""
    if request.method == "POST":
        raise httpx.ConnectError(f"cannot connect to http://ops:s3cret@{request.url.host}:{request.url.port}/v1 "
                                 f"(http://ops:[secure]@{request.url.host}:{request.url.port})", request=request)
    return httpx.Response(200, text="")


@pytest.fixture(params=[False, True], ids=["keys_off", "keys_on"])
async def grid(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[
        tuple[httpx.AsyncClient, dict[str, str], Path]]:
    enforce = request.param
    headers: dict[str, str] = {}
    if enforce:
        ring = KeyRing(SECRET.encode())
        headers = {"authorization": f"Bearer {ring.issue('ops').api_key}"}
        ring.save(tmp_path / "keys.json")
        monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    spec = spec_in(tmp_path, enforce=enforce)
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "ops": TenantSpec(operator=True)}})
    async with httpx.AsyncClient(transport=httpx.MockTransport(refusing)) as up:
        engines = {e.id: OpenAICompatEngine("vllm", f"http://ops:s3cret@10.0.0.{i}:8000", up)
                   for i, e in enumerate(spec.endpoints, 1)}
        gw = build_gateway(spec, engines, rng=random.Random(3), sleep=_no_sleep)
        await gw.scraper.scrape_once()
        await gw.guard.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            yield c, headers, tmp_path
        await gw.guard.stop()


async def test_no_log_audit_metric_grid_decision_or_explain_holds_an_engines_password(
        grid: tuple[httpx.AsyncClient, dict[str, str], Path], caplog: pytest.LogCaptureFixture) -> None:
    c, headers, tmp = grid
    caplog.set_level(logging.DEBUG)
    failed = await c.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert failed.status_code == 502, failed.text
    decision = await c.get(f"/v1/decisions/{failed.headers['x-aigrid-decision']}", headers=headers)
    assert decision.status_code == 200, decision.text
    found = decision.json()
    assert found["attempts"] and all(a.get("error") for a in found["attempts"]), found
    recent = await c.get("/v1/decisions", headers=headers)
    grid_view = await c.get("/v1/grid", headers=headers)
    # the operator's address: with keys enforced; without them the gateway knows no operator (routes._reads_addresses)
    assert any("10.0.0." in (e.get("url") or "") for e in grid_view.json()["endpoints"]) == bool(headers)
    metrics = await c.get("/metrics", headers=headers)
    console = Console(record=True, width=200)
    console.print(render_decision(found))
    audit = b"".join(p.read_bytes() for p in tmp.glob("audit.db*"))
    assert audit  # the records were written
    shown = {"logs": caplog.text, "decision": decision.text, "recent": recent.text, "grid": grid_view.text,
             "metrics": metrics.text, "explain": console.export_text(), "502": failed.text,
             "audit": audit.decode("utf-8", "replace")}
    for where, text in shown.items():
        assert "s3cret" not in text and "ops:[secure]" not in text, (where, text[:2000])
    assert "10.0.0." in found["attempts"][0]["error"] or not headers  # an operator's decision keeps the address


@pytest.mark.parametrize(("text", "want"), [
    ("http://ops:s3cret@10.0.0.1:8000/v1", "http://10.0.0.1:8000/v1"),
    ("GET http://ops:[secure]@[fd00::1]:8000/v1 failed; see https://a@b.example", "GET http://[fd00::1]:8000/v1 "
     "failed; see https://b.example"),
    ("http://10.0.0.1:8000/a@b stays, mailto:a@b too", "http://10.0.0.1:8000/a@b stays, mailto:a@b too"),
])
def test_without_userinfo_keeps_the_address_and_drops_the_user_and_password(text: str, want: str) -> None:
    assert without_userinfo(text) == want


async def test_an_engine_url_with_a_password_is_warned_of_once_at_start_and_its_engines_never_name_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = spec_in(tmp_path)
    first, *rest = spec.endpoints
    spec = spec.model_copy(update={"endpoints": [
        first.model_copy(update={"engine": "vllm", "url": "http://ops:s3cret@10.0.0.1:8000"}), *rest]})
    up = upstream(spec)
    try:
        with caplog.at_level(logging.WARNING, logger="aigrid.wiring"):
            engines = build_engines(spec, {e.id: "http://127.0.0.1:9" for e in rest}, up)
    finally:
        await up.client.aclose()
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "aigrid.wiring"]
    assert f"endpoints[0] ({first.id})" in warning and "api_key_env" in warning and "s3cret" not in warning
    engine = engines[first.id]
    assert engine.base_url == "http://ops:s3cret@10.0.0.1:8000"  # still sent, as basic auth
    assert "s3cret" not in f"{engine} {engine!r}" and "10.0.0.1:8000" in str(engine)
