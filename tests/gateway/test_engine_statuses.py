"""An engine's status line that is not an answer's (a redirect, a switch of protocols, interim responses), through
the whole gateway on a real socket (uvicorn with HeadDeadline): the engine counted as failing and the next candidate
answers, or the answer after the interim ones is the answer; one audit record, the quota settled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from aigrid.gateway.app import build_app
from aigrid.gateway.slow_clients import HeadDeadline
from tests.gateway import hostile_engine as H
from tests.gateway.hostile_grid import DOORS, SANE, Grid, grid
from tests.gateway.metered_gateway import TENANT, inflight, the_one_record
from tests.serving import serving


def status(line: bytes, extra: bytes = b"") -> Callable[[str, dict], H.Script]:
    """Every POST answered `line` (a status line) then, with `extra`, the rest; a sane answer's body and type."""
    def script(path: str, request: dict) -> H.Script:
        if request.get("stream"):
            body = b"data: " + orjson.dumps(H.token("Hi", "stop")) + b"\n\ndata: [DONE]\n\n"
            ctype = b"text/event-stream"
        else:
            body, ctype = orjson.dumps(SANE), b"application/json"
        return [line + b"\r\ncontent-type: " + ctype + b"\r\ncontent-length: %d\r\n" % len(body) + extra + b"\r\n"
                + body]
    return script


async def post(g: Grid, stream: bool) -> bytes:
    """The chat door over a real socket: the raw answer."""
    async with serving(build_app(g.gw), http=HeadDeadline, lifespan="off", log_level="error") as s:
        port = s.port
        data = orjson.dumps({**DOORS["chat"][1], "stream": stream})
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "".join(f"{k}: {v}\r\n" for k, v in TENANT.items()).encode()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\nconnection: close\r\n" % (port, len(data)) + head + b"\r\n" + data)
        got = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return got


@pytest.mark.parametrize("line,extra", [
    (b"HTTP/1.1 302 Found", b"location: http://elsewhere.example/\r\n"),
    (b"HTTP/1.1 307 Temporary Redirect", b"location: /v2\r\n"),
    (b"HTTP/1.1 101 Switching Protocols", b"upgrade: websocket\r\nconnection: upgrade\r\n"),
], ids=["302", "307", "101"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_status_that_is_not_an_answer_fails_the_engine_and_the_next_answers(
        tmp_path: Path, line: bytes, extra: bytes, stream: bool) -> None:
    """Before: a 3xx with a JSON body (an event stream) was relayed to the client with that status, audited `ok` and
    charged; a 101 streamed answer reached the client as `HTTP/1.1 101 Switching Protocols`."""
    async for g in grid(tmp_path, status(line, extra)):
        got = await post(g, stream)
        assert got.startswith(b"HTTP/1.1 200 ") and b"elsewhere" not in got, got[:300]
        row = await the_one_record(g.gw)
        assert row["outcome"] == "ok" and row["decision"]["chosen"]["endpoint"] != "nrt-smollm2"
        assert g.failures("nrt-smollm2") == 1 and inflight(g.gw) == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_after_interim_responses_is_the_answer(tmp_path: Path, stream: bool) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 200 OK"
    async for g in grid(tmp_path, status(interim)):
        got = await post(g, stream)
        assert got.startswith(b"HTTP/1.1 200 ") and got.count(b"HTTP/1.1") == 1 and b"link" not in got
        row = await the_one_record(g.gw)
        assert row["outcome"] == "ok" and row["decision"]["chosen"]["endpoint"] == "nrt-smollm2"
        assert g.failures("nrt-smollm2") == 0 and inflight(g.gw) == 0
