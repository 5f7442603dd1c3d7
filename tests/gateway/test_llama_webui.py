"""llama.cpp's own web UI (tools/server/webui: chat.service.ts sendMessage, settings-config.ts defaults) as a client of
the grid. It sends `max_tokens: -1` by default ("Use -1 for infinite (no limit)"; 0 or an empty setting is sent as -1
too), which the door's `max_tokens >= 1` made a 400 on every message. Now -1, and only -1, is read as not set
(schemas.drop_unserved, NO_LIMIT): the grid's own output limit applies (request_info.engine_output_limit), an INFO
line names it. It leaves out `model` unless one is selected: the grid names no default model, so that is the
client's 400 naming `model` (docs/engines.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aigrid.spec.models import GridSpec
from tests.gateway.conftest import serving, spec_in
from tests.gateway.fake_engine import FakeEngine

MODEL = "smollm2-135m"
LIMIT = 100


def webui_body(stream: bool, **over: Any) -> dict[str, Any]:
    """The body chat.service.ts sends with settings-config.ts's defaults and a model selected (its key order)."""
    return {"messages": [{"role": "user", "content": "Say hello"}], "stream": stream,
            **({"return_progress": True} if stream else {}), "model": MODEL, "reasoning_format": "auto",
            "temperature": 0.8, "max_tokens": -1, "dynatemp_range": 0.0, "dynatemp_exponent": 1.0, "top_k": 40,
            "top_p": 0.95, "min_p": 0.05, "xtc_probability": 0.0, "xtc_threshold": 0.1, "typ_p": 1.0,
            "repeat_last_n": 64, "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
            "dry_multiplier": 0.0, "dry_base": 1.75, "dry_allowed_length": 2, "dry_penalty_last_n": -1,
            "samplers": ["top_k", "typ_p", "top_p", "min_p", "temperature"], "backend_sampling": False,
            "timings_per_token": True, **over}


def _grid(tmp: Path) -> tuple[GridSpec, dict[str, FakeEngine]]:
    spec = spec_in(tmp)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"max_output_tokens": LIMIT})})
    return spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}


@pytest.mark.parametrize("stream", [True, False])
async def test_the_webuis_default_body_is_served_with_the_grids_output_limit(
        tmp_path: Path, stream: bool, caplog: pytest.LogCaptureFixture) -> None:
    spec, fakes = _grid(tmp_path)
    async with serving(spec, fakes) as (client, _):
        with caplog.at_level("INFO", logger="aigrid.gateway"):
            r = await client.post("/v1/chat/completions", json=webui_body(stream))
        assert r.status_code == 200, r.text[:300]
    [sent] = [got for f in fakes.values() for got in f.received]
    assert sent["max_tokens"] == LIMIT, sent
    assert "return_progress" not in sent and "timings_per_token" not in sent, sent
    notes = [m for m in caplog.messages if "max_tokens left out of the engine's request" in m]
    assert len(notes) == 1 and "no limit" in notes[0], caplog.messages


@pytest.mark.parametrize("value", [0, -2, -1.5, "-1", True, -1.0])  # -1.0: no client's `no limit` (FIX6)
async def test_other_limits_below_one_are_still_refused_naming_max_tokens(tmp_path: Path, value: Any) -> None:
    spec, fakes = _grid(tmp_path)
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions", json=webui_body(False, max_tokens=value))
        assert r.status_code == 400, r.text[:300]
        assert r.json()["error"]["param"] == "max_tokens", r.text[:300]
    assert all(not f.received for f in fakes.values())


async def test_max_tokens_minus_one_on_completions_is_not_set(tmp_path: Path) -> None:
    spec, fakes = _grid(tmp_path)
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": -1})
        assert r.status_code == 200, r.text[:300]
    [sent] = [got for f in fakes.values() for got in f.received]
    assert sent["max_tokens"] == LIMIT, sent


async def test_n_predict_minus_one_stays_refused_naming_it(tmp_path: Path) -> None:
    """llama-server's own name for the limit is refused whatever its value (the message says to send max_tokens):
    the web UI does not send it."""
    spec, fakes = _grid(tmp_path)
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions", json=webui_body(False, n_predict=-1))
        assert r.status_code == 400, r.text[:300]
        err = r.json()["error"]
        assert err["param"] == "n_predict" and "max_tokens" in err["message"], err
    assert all(not f.received for f in fakes.values())


async def test_the_webuis_body_without_a_model_is_a_400_naming_model(tmp_path: Path) -> None:
    """The UI leaves `model` out unless one is selected (a single-model llama-server needs none); the grid has no
    default model, so the client is told to name one."""
    body = webui_body(False)
    del body["model"]
    spec, fakes = _grid(tmp_path)
    async with serving(spec, fakes) as (client, _):
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 400, r.text[:300]
        assert r.json()["error"]["param"] == "model", r.text[:300]
    assert all(not f.received for f in fakes.values())
