"""tests/serving.py: an app served by uvicorn on a 127.0.0.1 socket for the length of a block; a server that cannot
start fails the test with uvicorn's reason (not the whole event loop with a SystemExit); one that cannot stop is
forced and fails the test, unless the block itself failed (its error is the one shown). serving_in_thread: the same
from a thread of its own, for a test whose thread blocks while the server answers."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx
import pytest

from tests.serving import serving, serving_in_thread


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.failed", "message": "no database"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    if scope["path"] == "/forever":
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await asyncio.Event().wait()  # an answer that never ends: the server cannot stop on its own
    await send({"type": "http.response.body", "body": b"ok"})


async def test_the_app_is_served_on_loopback_until_the_block_ends() -> None:
    async with serving(ok, lifespan="off") as s:
        assert s.url == f"http://127.0.0.1:{s.port}" and s.server.started
        async with httpx.AsyncClient(base_url=s.url) as c:
            assert (await c.get("/")).text == "ok"
    assert s.server.should_exit
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", s.port)  # nothing listens there any more


async def test_a_server_that_cannot_start_fails_with_uvicorns_reason(capsys: pytest.CaptureFixture[str]) -> None:
    """uvicorn says a failed startup with sys.exit(3): raised in the test's event loop, it ended the loop."""
    with pytest.raises(RuntimeError, match="uvicorn exited with status 3"):
        async with serving(ok, lifespan="on"):
            raise AssertionError("not reached: the block runs only once the server started")
    assert "no database" in capsys.readouterr().err  # uvicorn's own log
    await asyncio.sleep(0)  # this event loop still runs


async def test_a_server_that_cannot_stop_is_forced_and_fails_the_test() -> None:
    with pytest.raises(AssertionError, match=r"uvicorn did not stop within 0.5 s of should_exit .*forced"):
        async with serving(ok, lifespan="off", stop_s=0.5) as s:
            reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
            writer.write(b"GET /forever HTTP/1.1\r\nhost: t\r\n\r\n")
            assert (await asyncio.wait_for(reader.readuntil(b"part"), 30)).startswith(b"HTTP/1.1 200 ")
    writer.close()


async def test_the_blocks_own_error_is_the_one_raised() -> None:
    with pytest.raises(ZeroDivisionError):
        async with serving(ok, lifespan="off", stop_s=0.5) as s:
            reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
            writer.write(b"GET /forever HTTP/1.1\r\nhost: t\r\n\r\n")
            await asyncio.wait_for(reader.readuntil(b"part"), 30)
            1 / 0  # noqa: B018
    writer.close()


def test_served_from_a_thread_while_this_thread_blocks() -> None:
    """A blocking client in the test's thread (a synchronous browser driver's case): answered by the server's own
    event loop in its thread, which ends with the block."""
    with serving_in_thread(ok, lifespan="off") as s:
        assert s.url == f"http://127.0.0.1:{s.port}" and s.server.started
        assert httpx.get(s.url + "/", timeout=30).text == "ok"
        assert any(t.name == "tests.serving" for t in threading.enumerate())
    assert s.server.should_exit and not any(t.name == "tests.serving" for t in threading.enumerate())
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=5)  # nothing listens there any more


def test_a_threads_server_that_cannot_start_fails_with_uvicorns_reason() -> None:
    with pytest.raises(RuntimeError, match="uvicorn exited with status 3"):
        with serving_in_thread(ok, lifespan="on"):
            raise AssertionError("not reached: the block runs only once the server started")


def test_a_threads_server_that_cannot_stop_fails_the_test_after_the_block() -> None:
    with pytest.raises(AssertionError, match=r"uvicorn did not stop within 0.5 s of should_exit .*forced"):
        with serving_in_thread(ok, lifespan="off", stop_s=0.5) as s:
            conn = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            conn.sendall(b"GET /forever HTTP/1.1\r\nhost: t\r\n\r\n")
            assert conn.recv(4096).startswith(b"HTTP/1.1 200 ")
    conn.close()
