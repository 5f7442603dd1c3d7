"""Fields of the official SDKs that name a service this gateway does not have: OpenAI's stored prompt templates
(the Responses API's `prompt`) and Anthropic's MCP connector (the Messages API's `mcp_servers`). Both were accepted
and ignored, so the model answered without the template's instructions or the servers' tools; each is now a 400
in the API's own envelope naming the field and saying what to send instead. Absent or null still passes."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.parity.test_anthropic_sdk_surface import claude
from tests.parity.test_openai_sdk_surface import gw, oai

__all__ = ["claude", "gw", "oai"]  # the SDK clients on a gateway, as the surface tests start them

MODEL = "smollm2-135m"
HI = [{"role": "user", "content": "Hi"}]
TEMPLATE = {"id": "pmpt_68b0c29740048196bd3a6e6ac3c4d0e2", "version": "2", "variables": {"city": "Paris"}}
MCP = [{"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}]


async def test_a_responses_prompt_template_is_a_400_naming_prompt(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await oai.responses.create(model=MODEL, input="Weather?", prompt=TEMPLATE)  # type: ignore[arg-type]
    err = info.value
    assert (err.status_code, err.param, err.type, err.code) == (400, "prompt", "invalid_request_error",
                                                                 "invalid_request")
    assert "prompt templates are not served" in err.message and "`instructions`" in err.message
    body = err.response.json()
    assert set(body) == {"error"} and body["error"]["param"] == "prompt"


async def test_a_null_responses_prompt_still_answers(oai: openai.AsyncOpenAI) -> None:
    resp = await oai.responses.create(model=MODEL, input="Hi", prompt=None)
    assert resp.status == "completed" and resp.output_text


@pytest.mark.parametrize("count", [False, True], ids=["create", "count_tokens"])
async def test_messages_mcp_servers_are_a_400_naming_mcp_servers(claude: anthropic.AsyncAnthropic,
                                                                 count: bool) -> None:
    kw: dict[str, Any] = {"model": MODEL, "messages": HI, "mcp_servers": MCP, "betas": ["mcp-client-2025-04-04"]}
    with pytest.raises(anthropic.BadRequestError) as info:
        if count:
            await claude.beta.messages.count_tokens(**kw)
        else:
            await claude.beta.messages.create(max_tokens=8, **kw)
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("invalid value for 'mcp_servers': the MCP connector is not served")
    assert "custom tools" in body["error"]["message"]


@pytest.mark.parametrize("servers", [None, []], ids=["null", "empty"])
async def test_null_or_empty_mcp_servers_still_answer(claude: anthropic.AsyncAnthropic, servers: Any) -> None:
    msg = await claude.beta.messages.create(model=MODEL, max_tokens=8, messages=HI,  # type: ignore[arg-type]
                                            mcp_servers=servers, betas=["mcp-client-2025-04-04"])
    assert msg.stop_reason and msg.content
