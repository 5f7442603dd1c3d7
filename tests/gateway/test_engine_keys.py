"""Engines that require a key (vLLM, SGLang or llama.cpp started with --api-key, a hosted provider, another
region's gateway with keys enforced): the spec names the environment variable (`api_key_env`), never the key;
a variable that is missing stops the start before anything runs, naming the field."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml

from aigrid.engines.emulator import bound_port, serve
from aigrid.engines.emulator_model import EmulatorConfig
from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.engines.stop_words import StopWordEngine
from aigrid.errors import ConfigError, SpecError
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.wiring import build_engines, engine_keys, upstream
from aigrid.spec.load import parse_spec
from tests.gateway.test_relay import spec_for
from tests.serving import serving

RIGHT_SIZE = Path(__file__).resolve().parents[2] / "examples" / "right-size.yaml"


def spec_with(**fields: object) -> dict:
    raw = yaml.safe_load(RIGHT_SIZE.read_text())
    raw["endpoints"][1].update(fields)
    return raw


async def test_the_key_is_read_from_the_named_variable_and_sent_as_a_bearer_token() -> None:
    spec = parse_spec(spec_with(api_key_env="SITE_B_KEY"))
    external = spec.endpoints[1]
    assert external.engine != "embedded"
    up = upstream()
    try:
        engines = build_engines(spec, {}, up, environ={"SITE_B_KEY": " s3cret\n"})
    finally:
        await up.aclose()
    keyed = engines[external.id]
    assert isinstance(keyed, OpenAICompatEngine) and keyed._headers == {"authorization": "Bearer s3cret"}
    assert all(isinstance(e, OpenAICompatEngine) and not e._headers for i, e in engines.items() if i != external.id)
    assert "s3cret" not in repr(keyed)


@pytest.mark.parametrize("environ", [{}, {"SITE_B_KEY": "  "}])
def test_a_missing_or_empty_variable_names_the_field_before_anything_starts(environ: dict[str, str]) -> None:
    spec = parse_spec(spec_with(api_key_env="SITE_B_KEY"))
    with pytest.raises(ConfigError, match=r"endpoints\[1\]\.api_key_env: environment variable SITE_B_KEY .* not "
                                          r"set or empty"):
        engine_keys(spec, environ)


@pytest.mark.parametrize(("fields", "says"), [
    ({"api_key_env": "not a name"}, "endpoints[1].api_key_env"),  # as the start check's (above): one form
    ({"api_key_env": "$KEY"}, "endpoints[1].api_key_env"),
    ({"api_key_env": "KEY", "engine": "embedded", "url": None}, "api_key_env is for external engines"),
])
def test_a_bad_api_key_env_is_a_spec_error(fields: dict, says: str) -> None:
    with pytest.raises(SpecError, match=re.escape(says)):
        parse_spec(spec_with(**fields))


async def test_the_embedded_engines_get_the_runs_key_and_external_ones_their_own() -> None:
    spec = parse_spec(spec_with(api_key_env="SITE_B_KEY"))
    embedded = [e.id for e in spec.endpoints if e.engine == "embedded"]
    if not embedded:  # the example has none: make the first one embedded
        raw = spec_with(api_key_env="SITE_B_KEY")
        raw["endpoints"][0].update(engine="embedded", url=None)
        spec = parse_spec(raw)
        embedded = [spec.endpoints[0].id]
    up = upstream()
    try:
        engines = build_engines(spec, dict.fromkeys(embedded, "http://127.0.0.1:1"), up, embedded_key="run-key",
                                environ={"SITE_B_KEY": "b"})
    finally:
        await up.aclose()
    adapters = {i: e.inner if isinstance(e, StopWordEngine) else e for i, e in engines.items()}  # llama.cpp's
    headers = {i: e._headers for i, e in adapters.items() if isinstance(e, OpenAICompatEngine)}
    assert all(headers[i] == {"authorization": "Bearer run-key"} for i in embedded)
    assert headers[spec.endpoints[1].id] == {"authorization": "Bearer b"}



@pytest.mark.parametrize("value", ["two words", "line\nbreak", "caf\u00e9"])
def test_a_value_that_cannot_go_into_a_header_is_refused_before_anything_starts(value: str) -> None:
    spec = parse_spec(spec_with(api_key_env="SITE_B_KEY"))
    with pytest.raises(ConfigError, match=r"endpoints\[1\]\.api_key_env: the value of SITE_B_KEY is not a key"):
        engine_keys(spec, {"SITE_B_KEY": value})


def test_the_gateways_own_secret_is_never_an_engines_key() -> None:
    spec = parse_spec(spec_with(api_key_env="AIGRID_KEY_SECRET"))
    with pytest.raises(ConfigError, match=r"endpoints\[1\]\.api_key_env: AIGRID_KEY_SECRET holds one of the gateway"):
        engine_keys(spec, {"AIGRID_KEY_SECRET": "x" * 32})


async def test_an_engine_that_refuses_the_gateways_key_moves_the_request_and_the_decision_says_why() -> None:
    """Two engines on real sockets: one answers every request 401 (a key rotated on the engine and not yet in
    the gateway's environment), the ENGINE EMULATOR the other. The client is served by the second; the
    decision names the first's refusal and the variable to check."""
    async def refuses(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        status = 200 if scope["path"] == "/v1/models" else 401
        await send({"type": "http.response.start", "status": status,  # type: ignore[operator]
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"error": "invalid api key"}'})  # type: ignore[operator]

    emulator, _ = await serve(EmulatorConfig(decode_base_ms=1, prefill_base_ms=1))
    up = None
    try:
        async with serving(refuses, lifespan="off", log_level="critical") as refusing:
            raw = spec_for([refusing.url, f"http://127.0.0.1:{bound_port(emulator)}"])
            raw["endpoints"][0].update(engine="openai", api_key_env="EMU0_KEY")
            raw["endpoints"][1].update(price_in_per_mtok=50.0, price_out_per_mtok=100.0)  # the refusing one ranks first
            spec = parse_spec(raw)
            up = upstream(spec)
            gw = build_gateway(spec, build_engines(spec, {}, up, environ={"EMU0_KEY": "rotated-away"}))
            transport = httpx.ASGITransport(app=build_app(gw))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as client:
                for _ in range(4):  # whichever is ranked first, a refusal moves the request on
                    r = await client.post("/v1/chat/completions", json={
                        "model": "emulated", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})
                    assert r.status_code == 200, r.text
                    assert r.headers["x-aigrid-site"] == "s1"
            refused = [a for d in gw.decisions.recent(10) for a in d.attempts if a.get("endpoint") == "emu0"]
            assert refused and all("refused the gateway's key (check $EMU0_KEY" in a["error"] for a in refused)
    finally:
        if up is not None:
            await up.aclose()
        emulator.close()
