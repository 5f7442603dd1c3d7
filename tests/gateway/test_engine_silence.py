"""How long an engine may be silent, as the gateway's spec says, on plain-HTTP engines (aigrid's own transport) and
https ones (httpx's): a whole answer's head comes once the answer is whole, within first_byte_timeout.whole_max_s,
and an answer once begun may be silent between two reads for gateway.stream_idle_s. A FAKE, HOSTILE engine on a real
socket (hostile_engine.py), behind TLS with a private authority's certificate (test_engine_tls.py) for https."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigrid.engines.protocol import Engine
from aigrid.errors import EngineStreamBroken, EngineUnavailable
from tests.gateway import hostile_engine as H

WHOLE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def engine(tmp_path: Path, script: H.Script, *, tls: bool, stream_idle_s: float,
           whole_max_s: float) -> AbstractAsyncContextManager[Engine]:
    return H.adapter(tmp_path, script, tls=tls, gateway={
        "stream_idle_s": stream_idle_s, "first_byte_timeout": {"min_s": 0.1, "max_s": 0.2, "whole_max_s": whole_max_s}})


async def answer(adapter: Engine, body: dict[str, Any]) -> tuple[int, bytes, float]:
    started = asyncio.get_running_loop().time()
    async with adapter.open("/v1/chat/completions", orjson.dumps(body)) as response:
        data = b"".join([chunk async for chunk in response.body])
    return response.status, data, asyncio.get_running_loop().time() - started


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_a_whole_answers_head_is_awaited_past_the_idle_bound_within_whole_max_s(tmp_path: Path, tls: bool) -> None:
    """An engine writes a whole answer's head once the answer is whole. On https the read timeout bounded it (cutting
    every whole answer longer than 300 s, below whole_max_s's 600, and then failing it over to begin again): now, as
    on plain HTTP, the head is awaited for whole_max_s, whatever the idle bound."""
    script = [0.8, *H.whole(orjson.dumps(H.answer_of()))]
    async with engine(tmp_path, script, tls=tls, stream_idle_s=0.3, whole_max_s=5.0) as adapter:
        status, data, _ = await answer(adapter, WHOLE)
    assert status == 200 and orjson.loads(data)["choices"][0]["message"]["content"] == "Hello"


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_a_whole_answers_head_is_not_awaited_past_whole_max_s(tmp_path: Path, tls: bool) -> None:
    """On https a head was awaited as long as the read timeout (300 s), whatever whole_max_s said; now whole_max_s,
    as on plain HTTP: the engine's failure before the first byte."""
    # the engine's silence (10 s) far past whole_max_s and the bound below, within the idle bound (30 s): room for a
    # loaded 2-core machine's TLS handshake, and the code before (head bounded by the idle bound) still waits it out
    script = [10.0, *H.whole(orjson.dumps(H.answer_of()))]
    async with engine(tmp_path, script, tls=tls, stream_idle_s=30.0, whole_max_s=0.6) as adapter:
        started = asyncio.get_running_loop().time()
        with pytest.raises(EngineUnavailable):
            await answer(adapter, WHOLE)
        assert asyncio.get_running_loop().time() - started < 8.0


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_an_answer_silent_past_stream_idle_s_is_broken(tmp_path: Path, tls: bool) -> None:
    """gateway.stream_idle_s: how long a begun answer may be silent between two reads (it was a constant, 300 s);
    on https after a head that had whole_max_s, each of the body's reads has the idle bound again."""
    script = H.stream(H.chunk(b"data: " + orjson.dumps(H.token("Hi")) + b"\n\n"), 10.0, *H.sse(H.token("", "stop")))
    async with engine(tmp_path, script, tls=tls, stream_idle_s=0.3, whole_max_s=5.0) as adapter:
        started = asyncio.get_running_loop().time()
        with pytest.raises(EngineStreamBroken):
            await answer(adapter, {**WHOLE, "stream": True})
        assert asyncio.get_running_loop().time() - started < 8.0  # well within the engine's 10 s of silence
