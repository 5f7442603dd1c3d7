"""Engines that require a key (vLLM, SGLang or llama.cpp started with --api-key, a hosted provider, another
region's gateway with keys enforced): the spec names the environment variable (`api_key_env`), never the key;
a variable that is missing stops the start before anything runs, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aigrid.engines.openai_compat import OpenAICompatEngine
from aigrid.errors import ConfigError, SpecError
from aigrid.gateway.wiring import build_engines, engine_keys, upstream
from aigrid.spec.load import parse_spec

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
    assert "s3cret" not in repr(keyed) and "s3cret" not in spec.model_dump_json()


@pytest.mark.parametrize("environ", [{}, {"SITE_B_KEY": "  "}])
def test_a_missing_or_empty_variable_names_the_field_before_anything_starts(environ: dict[str, str]) -> None:
    spec = parse_spec(spec_with(api_key_env="SITE_B_KEY"))
    with pytest.raises(ConfigError, match=r"endpoints\[1\]\.api_key_env: environment variable SITE_B_KEY .* not "
                                          r"set or empty"):
        engine_keys(spec, environ)


@pytest.mark.parametrize(("fields", "says"), [
    ({"api_key_env": "not a name"}, "endpoints.1.api_key_env"),
    ({"api_key_env": "$KEY"}, "endpoints.1.api_key_env"),
    ({"api_key_env": "KEY", "engine": "embedded", "url": None}, "api_key_env is for external engines"),
])
def test_a_bad_api_key_env_is_a_spec_error(fields: dict, says: str) -> None:
    with pytest.raises(SpecError, match=says.replace(".", r"\.")):
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
    headers = {i: e._headers for i, e in engines.items() if isinstance(e, OpenAICompatEngine)}
    assert all(headers[i] == {"authorization": "Bearer run-key"} for i in embedded)
    assert headers[spec.endpoints[1].id] == {"authorization": "Bearer b"}

