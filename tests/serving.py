"""An ASGI app served by uvicorn in this event loop, on a 127.0.0.1 socket bound here (port 0, handed to uvicorn:
no other process can take the port meanwhile). The one helper every test that needs a real socket uses:
`serving` in a test's own event loop, `serving_in_thread` (the same, on an event loop of its own in a thread) for
a test whose thread blocks while the server answers (a synchronous browser driver), and `serving_gateway` for the
gateway's own server (stopping.gateway_server: its signal handling on this loop)."""

from __future__ import annotations

import asyncio
import queue
import signal
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from aigrid.gateway.stopping import GatewayServer

START_S = 60.0
"""How long uvicorn may take to start (well under a second on an idle machine; generous for a loaded one)."""
STOP_S = 30.0
"""How long it may take to stop once told to (its connections closed, its lifespan's shutdown run)."""
FORCE_S = 10.0
"""Past STOP_S: how long a forced exit may take before its task is cancelled."""


@dataclass(frozen=True)
class Served:
    port: int
    server: uvicorn.Server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as e:  # uvicorn's way to say it could not start: not to end this event loop with it
        raise RuntimeError(f"uvicorn exited with status {e.code} (its log says why)") from e


async def _stop(server: uvicorn.Server, task: asyncio.Task[None], stop_s: float) -> str:
    """Stops the server: '' when it stopped within `stop_s` (serve()'s own error raised), else what was done."""
    server.should_exit = True
    if (await asyncio.wait({task}, timeout=stop_s))[0]:
        task.result()
        return ""
    server.force_exit = True
    if not (await asyncio.wait({task}, timeout=FORCE_S))[0]:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return f"uvicorn did not stop within {stop_s:g} s of should_exit (a connection or a task still open): forced"


@asynccontextmanager
async def serving(app: Any, *, http: type[asyncio.Protocol] | str | None = None, log_level: str = "warning",
                  start_s: float = START_S, stop_s: float = STOP_S, **options: Any) -> AsyncIterator[Served]:
    """`app` served by uvicorn on 127.0.0.1 until the block ends: its port, base URL and server. `http`: uvicorn's
    HTTP protocol class (e.g. HeadDeadline); `options`: any other uvicorn.Config keyword (lifespan="off", loop, ...).
    A server that does not start within `start_s` fails with serve()'s own error (or says it did not start); one
    that does not stop within `stop_s` is forced and, when the block itself did not fail, fails the test."""
    config: dict[str, Any] = {"log_level": log_level, **options}
    if http is not None:
        config["http"] = http
    server = uvicorn.Server(uvicorn.Config(app, **config))
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        task = asyncio.create_task(_serve(server, sock))
        deadline = asyncio.get_running_loop().time() + start_s
        while not server.started:
            if task.done():
                task.result()  # serve()'s own error
                raise RuntimeError("uvicorn stopped before it started (its log says why)")
            if asyncio.get_running_loop().time() > deadline:
                await _stop(server, task, 0)
                raise RuntimeError(f"uvicorn did not start within {start_s:g} s")
            await asyncio.sleep(0.01)
        failed = False
        try:
            yield Served(port, server)
        except BaseException:
            failed = True
            raise
        finally:
            forced = await _stop(server, task, stop_s)
            if forced and not failed:
                raise AssertionError(forced)
    finally:
        sock.close()


@contextmanager
def serving_in_thread(app: Any, **options: Any) -> Iterator[Served]:
    """serving(app, **options) on an event loop of its own in a background thread, until the block ends: for a
    test whose own thread blocks while the server answers (a synchronous browser driver or client). Start and stop
    are serving()'s: a server that cannot start raises serve()'s error here; one that had to be forced (or whose
    thread did not end) fails the test once the block ends, unless the block itself failed."""
    start_s, stop_s = float(options.get("start_s", START_S)), float(options.get("stop_s", STOP_S))
    started: queue.SimpleQueue[tuple[Served, asyncio.AbstractEventLoop, asyncio.Event] | BaseException] = \
        queue.SimpleQueue()
    failed: list[BaseException] = []

    async def run() -> None:
        stop = asyncio.Event()
        async with serving(app, **options) as served:
            started.put((served, asyncio.get_running_loop(), stop))
            await stop.wait()

    def main() -> None:
        try:
            asyncio.run(run())
        except BaseException as e:  # noqa: BLE001 -- handed to the test's thread, raised there
            failed.append(e)
            started.put(e)

    thread = threading.Thread(target=main, name="tests.serving", daemon=True)
    thread.start()
    first = started.get(timeout=start_s + stop_s + FORCE_S)
    if isinstance(first, BaseException):
        thread.join()
        raise first
    served, loop, stop = first
    try:
        yield served
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=stop_s + FORCE_S + 5)
    if thread.is_alive():
        raise AssertionError(f"the server's thread did not end within {stop_s + FORCE_S + 5:g} s of the block")
    if failed:
        raise failed[0]


@asynccontextmanager
async def serving_gateway(server: GatewayServer) -> AsyncIterator[tuple[int, asyncio.Task[None]]]:
    """`server` (stopping.gateway_server's, as `aigrid gateway` serves) on a 127.0.0.1 socket bound here until the
    block ends: its port and its serving task. At the end the SIGINT and SIGTERM handlers its start put on this loop
    (stop_on_signals) come off, it is told to exit (what the block did to stop it first stands) and its end is awaited,
    60 s at most."""
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 0))
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started:
                assert not task.done(), "the gateway did not start"
                await asyncio.sleep(0.01)
            yield sock.getsockname()[1], task
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            server.should_exit = True
            await asyncio.wait_for(task, 60)
