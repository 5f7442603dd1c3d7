"""GET /v1/models and /v1/models/{id} with both official SDKs (list and retrieve), and what a key may see."""

from __future__ import annotations

import anthropic
import openai
import pytest

from aigrid.gateway.app import Gateway, build_app
from tests.gateway.sdk_clients import anthropic_client, openai_client


async def test_both_sdks_retrieve_a_model_and_an_unknown_one_is_their_not_found(gateway: Gateway) -> None:
    app = build_app(gateway)
    oai, claude = openai_client(app), anthropic_client(app)
    try:
        model = await oai.models.retrieve("smollm2-135m")
        assert (model.id, model.object, model.owned_by) == ("smollm2-135m", "model", "aigrid")
        assert model.model_extra is not None and model.model_extra["kind"] == "chat"
        listed = [m.id async for m in oai.models.list()]
        assert listed == ["smollm2-135m", "auto", "all-minilm-l6-v2"]
        info = await claude.models.retrieve("auto")
        assert (info.id, info.type) == ("auto", "model")
        for raw in (await claude.models.with_raw_response.list()).http_response.json()["data"]:
            anthropic.types.ModelInfo.model_validate(raw)  # strictly: `lifecycle` is required, was missing
        chat = await claude.models.retrieve("smollm2-135m")
        assert (chat.lifecycle, chat.max_input_tokens, chat.max_tokens) == ("active", 8192, 4096)
        embedding = await oai.models.retrieve("sentence-transformers/all-MiniLM-L6-v2")  # an alias: its model
        assert embedding.id == "all-minilm-l6-v2"
        with pytest.raises(openai.NotFoundError) as missing:
            await oai.models.retrieve("llama-9b")
        assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
        assert "Available: smollm2-135m, auto, all-minilm-l6-v2" in missing.value.body["message"]  # type: ignore[index]
        with pytest.raises(anthropic.NotFoundError):
            await claude.models.retrieve("llama-9b")
    finally:
        await oai.close()
        await claude.close()
