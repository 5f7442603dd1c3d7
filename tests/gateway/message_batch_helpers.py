"""What the Message Batches tests share (test_message_batches.py, test_batch_residency.py, test_batch_settle.py, the
anthropic SDK parity test): the anthropic clients of two tenants, a batch's request, and waits on a batch's end and
its results (the rest of the batch tests' helpers are batch_helpers.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from aigrid.gateway.app import Gateway, build_app
from tests.gateway.batch_helpers import MODEL, OTHER, TENANT
from tests.gateway.sdk_clients import anthropic_client


def clients(gw: Gateway) -> tuple[anthropic.AsyncAnthropic, anthropic.AsyncAnthropic]:
    client = anthropic_client(build_app(gw))
    return client.with_options(default_headers=TENANT), client.with_options(default_headers=OTHER)


def req(cid: str, content: str, **params: Any) -> dict[str, Any]:
    return {"custom_id": cid, "params": {"model": MODEL, "max_tokens": 32,
                                         "messages": [{"role": "user", "content": content}], **params}}


async def until_ended(claude: anthropic.AsyncAnthropic, bid: str) -> MessageBatch:
    for _ in range(1000):
        got = await claude.messages.batches.retrieve(bid)
        if got.processing_status == "ended":
            return got
        await asyncio.sleep(0.01)
    raise AssertionError(f"{bid} stayed {got.processing_status}")


async def results(claude: anthropic.AsyncAnthropic, bid: str) -> dict[str, MessageBatchIndividualResponse]:
    return {r.custom_id: r async for r in await claude.messages.batches.results(bid)}
