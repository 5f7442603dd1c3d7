"""The `scripted` fixture: an OpenAI SDK client on a gateway whose engine answers from a ScriptedEngine's script
(the test appends to engine.script), shared by test_client_tools and test_responses_cut."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from aigrid.gateway.app import build_app
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import scripted_gateway
from tests.gateway.sdk_clients import openai_client


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, ScriptedEngine]]:
    engine = ScriptedEngine([])
    client = openai_client(build_app(await scripted_gateway(tmp_path, engine)))
    yield client, engine
    await client.close()
