"""The gateway tests' fixtures (a demo grid of FAKE engines: `fakes`, `gateway`) for the SDK surface tests, and
`native`: both official SDKs on a grid whose every endpoint is one SCRIPTED engine that calls tools natively."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import openai
import pytest

from aigrid.gateway.app import build_app
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import fakes, gateway, scripted_gateway
from tests.gateway.sdk_clients import anthropic_client, openai_client

__all__ = ["fakes", "gateway", "native"]


@pytest.fixture
async def native(tmp_path: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic, ScriptedEngine]]:
    """Every endpoint one SCRIPTED engine that calls tools natively (as vLLM and llama.cpp do)."""
    engine = ScriptedEngine([])
    app = build_app(await scripted_gateway(tmp_path, engine, "native"))
    oai, claude = openai_client(app), anthropic_client(app)
    yield oai, claude, engine
    await oai.close()
    await claude.close()
