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


async def test_anthropics_model_pages_are_served_as_asked(gateway: Gateway) -> None:
    """Anthropic's `models.list` pages by `limit`, `after_id` and `before_id`; they were ignored (`limit=1` got
    every model, `has_more` false). OpenAI's `models.list` sends none of them and still gets the whole list."""
    app = build_app(gateway)
    oai, claude = openai_client(app), anthropic_client(app)
    try:
        everything = ["smollm2-135m", "auto", "all-minilm-l6-v2"]
        first = await claude.models.list(limit=1)
        assert ([m.id for m in first.data], first.has_more, first.last_id) == (["smollm2-135m"], True, "smollm2-135m")
        assert [m.id async for m in await claude.models.list(limit=1)] == everything  # the SDK pages by after_id
        after = await claude.models.list(after_id="auto", limit=5)
        assert ([m.id for m in after.data], after.has_more) == (["all-minilm-l6-v2"], False)
        before = await claude.models.list(before_id="all-minilm-l6-v2", limit=1)
        assert ([m.id for m in before.data], before.has_more) == (["auto"], True)
        assert [m.id async for m in oai.models.list()] == everything
        for bad, param in (({"limit": 0}, "limit"), ({"after_id": "llama-9b"}, "after_id"),
                           ({"after_id": "auto", "before_id": "auto"}, "after_id")):
            with pytest.raises(anthropic.BadRequestError) as e:
                await claude.models.list(**bad)  # type: ignore[arg-type]
            assert param in str(e.value)
    finally:
        await oai.close()
        await claude.close()
