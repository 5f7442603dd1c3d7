"""A gateway in front of the engine emulator reads its context, as it reads vLLM's: GET /v1/models' max_model_len
(emulator EmulatorConfig.max_model_len, `aigrid emulator --max-model-len`). Before, the emulator's model card had
none, and every endpoint of a grid on emulators logged "its engine's context was not read"."""

from __future__ import annotations

import logging

import pytest

from aigrid.engines.emulator import bound_port, serve
from aigrid.engines.emulator_model import EmulatorConfig
from aigrid.gateway.app import build_gateway
from aigrid.gateway.wiring import build_engines, upstream
from tests.gateway.emulated_grid import emulated_spec


async def _scraped(config: EmulatorConfig, caplog: pytest.LogCaptureFixture) -> list[str]:
    """The gateway's log lines of its first scrape of one vLLM endpoint that is `config`'s emulator (spec context
    left at its default)."""
    server, _ = await serve(config)
    up = upstream()
    try:
        spec = emulated_spec(bound_port(server))
        gw = build_gateway(spec, build_engines(spec, {}, up))
        with caplog.at_level(logging.INFO, logger="aigrid.scraper"):
            await gw.scraper.scrape_once()
        assert gw.store.snapshot().state("emu0").healthy
    finally:
        await up.aclose()
        server.close()
    return [r.getMessage() for r in caplog.records if "emu0" in r.getMessage()]


async def test_a_gateway_reads_the_emulators_context(caplog: pytest.LogCaptureFixture) -> None:
    said = await _scraped(EmulatorConfig(), caplog)
    assert not [line for line in said if "context was not read" in line or "tokens a request" in line], said


async def test_an_emulator_holding_less_than_the_spec_is_told(caplog: pytest.LogCaptureFixture) -> None:
    said = await _scraped(EmulatorConfig(max_model_len=4096), caplog)
    told = [line for line in said if "GET /v1/models: max_model_len 4096 for 'emulated'" in line]
    assert len(told) == 1 and "fewer than the 8192 the spec declares" in told[0], said
    assert "vllm serve --max-model-len 8192" in told[0], told


