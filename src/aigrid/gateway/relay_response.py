"""The streamed answer's ASGI response: chunks straight to `send`, with one plain task watching for the
client's disconnect, and, under uvicorn's httptools server, a wire straight to the client's socket.

Starlette's StreamingResponse runs each response in an anyio task group (to listen for the disconnect while
streaming) when the server speaks ASGI < 2.4, as uvicorn does; per chunk and per response that machinery was
about a quarter of the gateway's CPU at 200 streams (docs/benchmarks.md). Here the watcher is one asyncio
future on `receive()`, with one done callback per response (Cut; nothing per chunk): when the client is gone
it cancels the response's task wherever it waits (an engine silent between two chunks: a long decode step, a
stalled engine; a tool loop's wait for its tool, the tool itself left to finish in its own task, agents/loop.py),
so the body's cleanup closes the engine's request, settles the quota and writes the audit record at the hang-up,
not at the engine's next chunk.

ClientWire: once the response head has gone out through `send`, a relay that can (relay.StreamRelay) writes
the body's HTTP chunks to the client's transport itself, from the engine connection's read callback where the
engine is on aigrid's own transport: no task switch and no ASGI message per relayed read. It writes exactly
what uvicorn's `send` would (`%x\\r\\n` + bytes + `\\r\\n`), stops when the client's socket is full (uvicorn's
flow control says so; the relay waits on the same flow control as `send` does before writing more) or gone,
and the response still ends through `send` (the last chunk, keep-alive, uvicorn's bookkeeping). The response's head,
which uvicorn writes at `http.response.start`, is held back (ClientWire.start) and goes out with the body's first
chunk in one write: one system call and one client wake-up less a request. It waits for nothing: the relay has the
engine's first read when the response starts, and a head still held when the loop next turns (a first read that
holds no whole event yet) is written alone then.

Hangup: the same watcher, started earlier. An audited model route (routes.Audited) starts it once the request's
body has been read (the server delivers `http.disconnect` on `receive()` after the body), so a client that hangs
up BEFORE its answer starts (waiting in the admission queue, for the firewall's worker thread, for an engine's
first byte or for a whole non-streamed answer) cancels its request's task there and then; the request's own
exit paths release the engine and the queue place, settle the quota and write the audit record
(`client_closed`). A streamed answer's RelayResponse then watches with the same task: no task more per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from typing import Any, Protocol

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

try:  # uvicorn's internals: a uvicorn without them (or another server) gets `send` only
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    from aigrid.gateway.slow_clients import RefusableCycle
    from aigrid.gateway.uvicorn_fit import uvicorn_fits
    _CYCLES: tuple[type, ...] = (RequestResponseCycle, RefusableCycle)
    """uvicorn's cycle, and the gateway's own protocol's (slow_clients.HeadDeadline: `aigrid up`, each worker)."""
except ImportError:  # pragma: no cover
    _CYCLES = ()

log = logging.getLogger("aigrid.proxy")


class _HeadHeld:
    """Stands for the client's transport while uvicorn's `send` writes a streamed answer's head (ClientWire.start):
    what it writes is kept, for the body's first chunk to take along; anything else goes to the transport."""

    __slots__ = ("_transport", "head")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.head = b""

    def write(self, data: bytes) -> None:
        self.head += data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ClientWire:
    """The client's socket under uvicorn's httptools protocol, for the body of one chunked response."""

    __slots__ = ("_cycle", "_transport", "_flow", "gone", "_head")

    def __init__(self, cycle: Any, gone: asyncio.Future[None]) -> None:
        self._cycle, self._transport, self._flow, self.gone = cycle, cycle.transport, cycle.flow, gone
        self._head = b""
        """The response's head, held back to go out with the body's first chunk (start)."""

    @staticmethod
    def _cycle_of(send: Send) -> Any:
        """uvicorn's request cycle behind `send`, or None. A wrapper that passes every message on and names the
        server's send as `server_send` (stopping.CutAnswers', around every request of `aigrid up` and each worker)
        is seen through: the bytes written on the wire do not pass it."""
        cycle = getattr(send, "__self__", None)
        server_send = getattr(cycle, "server_send", None)
        if server_send is not None:
            cycle = getattr(server_send, "__self__", None)
        if cycle is None or type(cycle) not in _CYCLES or not uvicorn_fits().wire:  # (uvicorn_fits: warned once)
            return None
        return cycle

    @classmethod
    async def start(cls, send: Send, head: Message, gone: asyncio.Future[None], *,
                    hold: bool = True) -> ClientWire | None:
        """Send the response's `head` through `send`; the wire behind it (`of`), which, where `hold` (the body writes
        on it), holds the head's bytes back for its first write: one write, one system call, for the head and the
        first chunk (`flush` writes the head alone, at the latest when the event loop next turns). Without a wire,
        or when the client's socket is full (uvicorn's send then waits), the head is written as uvicorn writes it.
        uvicorn writes the head through the cycle's `transport` (uvicorn_fit.WIRE_READS), which a _HeadHeld stands
        in for during the send; a uvicorn that wrote it another way has nothing held: its head goes out alone."""
        cycle: Any = cls._cycle_of(send) if hold else None
        held: _HeadHeld | None = None
        real: Any = None
        with contextlib.suppress(AttributeError):  # a uvicorn whose cycle is not what this was written against
            if cycle is not None and not cycle.flow.write_paused:
                real = cycle.transport
        if real is not None:
            held = cycle.transport = _HeadHeld(real)
        try:
            await send(head)
        finally:
            if held is not None and cycle.transport is held:
                cycle.transport = real
        wire = cls.of(send, gone)
        if held is not None and held.head:
            if wire is None:
                if not cycle.disconnected:
                    real.write(held.head)
            else:
                wire._head = held.head
                asyncio.get_running_loop().call_soon(wire.flush)
        return wire

    @classmethod
    def of(cls, send: Send, gone: asyncio.Future[None]) -> ClientWire | None:
        """The wire behind `send` once the response head was sent, or None (another server, a wrapped send,
        a body that is not chunked)."""
        cycle = cls._cycle_of(send)
        if cycle is None:
            return None
        try:
            usable = (cycle.chunked_encoding is True and cycle.response_started and not cycle.response_complete
                      and not cycle.disconnected and cycle.scope["method"] != "HEAD"
                      and hasattr(cycle.transport, "write") and hasattr(cycle.flow, "write_paused"))
        except (AttributeError, KeyError):  # a uvicorn whose cycle is not what this was written against
            return None
        return cls(cycle, gone) if usable else None

    @property
    def closed(self) -> bool:
        return self._cycle.disconnected or self.gone.done()

    @property
    def paused(self) -> bool:
        """The client's socket buffer is full (uvicorn's flow control): write no more until drain()."""
        return self._flow.write_paused

    async def drain(self) -> bool:
        """Wait until the client's socket takes more (what uvicorn's `send` waits for); True: the client is gone."""
        await self._flow.drain()
        return self.closed

    def write(self, body: bytes) -> bool:
        """One HTTP chunk to the client (dropped when it is gone), the head held back before the first; False when
        the relay should stop writing here: the client is gone or its socket's buffer is full."""
        if self._cycle.disconnected:
            return False
        if self._head:
            head, self._head = self._head, b""
            self._transport.write(b"%b%x\r\n%b\r\n" % (head, len(body), body))
        else:
            self._transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        return not self._flow.write_paused

    def flush(self) -> None:
        """The head still held back, written alone (before anything goes through `send`; when the loop turns)."""
        head, self._head = self._head, b""
        if head and not self._cycle.disconnected:
            self._transport.write(head)


CLIENT_GONE = "the client closed its connection"
"""The message of the CancelledError a Hangup delivers (an engine attempt it ends names it)."""


class Hangup:
    """One request's client, watched for a hang-up from the moment its body has been read (`receive` below,
    given to the request in place of the server's, starts the watcher after the body's last part). While
    `armed` (the pipeline: admission queue, firewall, engine attempts, a whole answer being read), a hang-up
    cancels the request's task with CLIENT_GONE: its awaits' own cleanup runs (the queue place given back, the
    firewall's queued text dropped, the engine's request closed), then `caught()` tells the route's handler
    that the cancel was the client's, not a shutdown's. `hold()` disarms it for a step that must not be cut
    (a quota reservation on Redis or the hub, whose reply would be lost with it; a non-streamed server-side tool
    loop; a background Responses create; an answer already whole being stored); `resume()` re-arms it, raising
    there if the client left meanwhile. `arm()` / `disarm()` watch one step of an answer already started
    (a streamed tool loop's turns and tools after its first byte: agents/reply.py). The watcher task is the
    streamed answer's disconnect watch too (RelayResponse.gone)."""

    __slots__ = ("_receive", "_task", "watcher", "armed", "fired", "_held")

    def __init__(self, receive: Receive, task: asyncio.Task[Any] | None) -> None:
        self._receive = receive
        self._task = task
        self.watcher: asyncio.Task[None] | None = None
        self.armed = True
        self.fired = 0
        """0: not fired; 1: it cancelled the task; 2: resume() raised."""
        self._held = 0
        """Holds not yet resumed: they nest (a step that must not be cut inside another), armed again at 0."""

    async def receive(self) -> Message:
        message = await self._receive()
        if self.watcher is None and message["type"] == "http.request" and not message.get("more_body", False):
            self.watcher = asyncio.ensure_future(self._watch())  # the body is in: nobody else reads receive now
        return message

    async def _watch(self) -> None:
        receive = self._receive
        while (await receive())["type"] != "http.disconnect":  # _disconnected's loop, one frame less
            pass
        if self.armed and self._task is not None and not self.fired:
            self.fired = 1  # the task is suspended inside the armed part: the cancel lands there
            self._task.cancel(CLIENT_GONE)

    def hold(self) -> None:
        self._held += 1
        self.armed = False

    def resume(self) -> None:
        """Armed again once every hold is resumed; the client left while held: CancelledError here (not a task
        cancel, which would land at the next await, wherever that is)."""
        self._held = max(self._held - 1, 0)
        if self._held:
            return
        self.armed = True
        self._fire_if_gone()

    def arm(self) -> None:
        """Armed for one step of an answer already started that a hang-up must stop (a streamed tool loop's next
        model turn or tool run: `disarm()` after it); the client gone already: CancelledError here. Not under
        a hold."""
        if self._held:
            return
        self._fire_if_gone()
        self.armed = True

    def disarm(self) -> None:
        if not self._held:
            self.armed = False

    def _fire_if_gone(self) -> None:
        """The client left while this was not armed: CancelledError here, once (not a task cancel, which would
        land at the next await, wherever that is)."""
        if self.gone and not self.fired:
            self.fired = 2
            raise asyncio.CancelledError(CLIENT_GONE)

    def caught(self) -> bool:
        """Whether the CancelledError being handled is the client's hang-up alone (then it is not raised on):
        not fired, or also cancelled by someone else (a shutdown), it is not."""
        if self.fired == 1:
            assert self._task is not None
            return self._task.uncancel() == 0
        return self.fired == 2 and (self._task is None or self._task.cancelling() == 0)

    @property
    def gone(self) -> bool:
        """The client hung up (seen before the answer was sent: after it, the server says disconnect anyway)."""
        w = self.watcher
        return w is not None and w.done() and not w.cancelled()

    def close(self) -> None:
        if self.watcher is not None and not self.watcher.done():
            self.watcher.cancel()


class RelayResponse(Response):
    def __init__(self, chunks: AsyncIterator[bytes], status_code: int, headers: Mapping[str, str]) -> None:
        self.body_iterator = chunks
        self.status_code = status_code
        self.background = None
        self.init_headers(headers)
        self.gone: asyncio.Future[None] | None = None
        """The request's Hangup watcher, when one watches its client already (done: the client is gone)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = self.gone if self.gone is not None else asyncio.ensure_future(_disconnected(receive))
        cut = Cut(gone, asyncio.current_task())
        gone.add_done_callback(cut)  # once per response: nothing per chunk
        token = CUT.set(cut)  # the relay (StreamRelay.__aiter__), however deep in the body, finds it here
        wire: ClientWire | None = None
        try:
            head = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            body = self.body_iterator  # a relay that writes on the wire (its `wire`): the head goes with its first
            wire = await ClientWire.start(send, head, gone, hold=hasattr(body, "wire"))
            if wire is not None and hasattr(body, "wire"):
                body.wire = wire
            async for chunk in self.body_iterator:
                if gone.done() or (wire is not None and wire.closed):
                    break
                if chunk:
                    if wire is not None:
                        wire.flush()
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            else:
                if wire is not None:
                    wire.flush()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # ASGI 2.4 servers raise on send after the client left: nothing more to deliver
        except asyncio.CancelledError:
            if not cut.caught():
                raise  # a shutdown's (or the request's Hangup's, whose route books it)
        finally:
            try:
                if wire is not None:
                    try:
                        wire.flush()  # (a body that failed before its first write: its head, as before)
                    except (RuntimeError, OSError) as e:  # uvloop: RuntimeError writing on a closed handle (the
                        # client gone before uvicorn saw it): nothing left to deliver, and the release below must run
                        log.debug("the held response head was not written: %r", e)
                cut.close()
                CUT.reset(token)
                gone.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gone
            finally:
                await aclose_body(self.body_iterator)  # the relay's cleanup: release the engine, book the outcome


class Relaying(Protocol):
    live: bool
    """An engine is still held for the answer (its stream not yet ended and released)."""

    def steer(self) -> dict[str, int] | None: ...


STEERED = "steered"
"""A streamed answer stopped for a steer (SteerCut): its audit outcome, its requests metric's outcome label, and
the Responses API's `incomplete_details.reason`."""


class SteerCut:
    """One response of a WebSocket (responses_socket.py) that a `response.steer` may stop early, at a safe output
    boundary: `wanted` once a steer for it is accepted; the answer's front door (responses_stream.py) then stops at
    its next text chunk (never inside a function call) by `stop()`, which has the relay serving the answer
    (StreamRelay.steer, `engage`d from StreamRelay.__aiter__) release its engine when it is closed and book the
    outcome `steered`, charged the part streamed, not the reservation. Set for the endpoint's task by the socket
    (STEER), so only a socket's response is ever cut; a POST's never."""

    __slots__ = ("wanted", "_relay")

    def __init__(self) -> None:
        self.wanted = False
        self._relay: Relaying | None = None

    def engage(self, relay: Relaying) -> None:
        self._relay = relay

    def stop(self) -> dict[str, int] | None:
        """Stop the answer for the steer: the usage it is charged (the prompt, the completion tokens streamed so
        far), or None where it cannot be cut here (no relay of its own serves it: a tool loop, a fan-out; it ended)."""
        relay = self._relay
        return None if relay is None or not relay.live else relay.steer()


STEER: ContextVar[SteerCut | None] = ContextVar("aigrid_response_steer", default=None)
"""The steerable socket response this task serves (responses_socket._Connection._respond)."""


class Cut:
    """One streamed response's cut: the client gone while an engine still serves its answer cancels the response's
    task (CLIENT_GONE) wherever it waits (an engine silent between two chunks: a long decode step, a stalled
    engine; a continuation being opened; a full socket), so the relay's cleanup closes the engine's request and
    books the outcome, and the route settles the quota and writes the audit record, at the hang-up, not at the
    engine's next chunk. It is the disconnect watch's done callback, added once per response.

    Only while the relay it was given (`engage`, from StreamRelay.__aiter__) is live: once the engine's answer has
    ended and been released, what is left (a front door storing the finished answer, its last events) is not cut
    and ends at its next send, as before. Not when the task is being cancelled already (the request's Hangup fired
    first: its route books it, relay_response.Hangup), nor once the response's body has ended."""

    __slots__ = ("_gone", "_task", "_relay", "_open", "_fired")

    def __init__(self, gone: asyncio.Future[None], task: asyncio.Task[Any] | None) -> None:
        self._gone, self._task = gone, task
        self._relay: Relaying | None = None
        self._open, self._fired = True, False

    def engage(self, relay: Relaying) -> None:
        """`relay` serves this response's answer from now on; the client already gone: cut at the next await."""
        self._relay = relay
        if self._gone.done():
            self(self._gone)

    def __call__(self, gone: asyncio.Future[None]) -> None:
        task, relay = self._task, self._relay
        if (self._open and relay is not None and relay.live and task is not None and not gone.cancelled()
                and not task.cancelling()):
            self._fired = True
            task.cancel(CLIENT_GONE)

    def caught(self) -> bool:
        """Whether the CancelledError being handled is this cut's alone (then it is not raised on)."""
        fired, self._fired = self._fired, False
        return fired and self._task is not None and self._task.uncancel() == 0

    def close(self) -> None:
        """The body has ended: no cut from now on; one whose CancelledError the body swallowed is taken back (the
        task's cancel count as it was: a later timeout in the request is still a timeout)."""
        self._open = False
        self._gone.remove_done_callback(self)
        if self._fired and self._task is not None:
            self._fired = False
            self._task.uncancel()


CUT: ContextVar[Cut | None] = ContextVar("aigrid_response_cut", default=None)
"""The streamed response being sent by this task (RelayResponse.__call__), for the relay inside its body."""


async def aclose_body(chunks: object) -> None:
    """Close a response body (a relay, a generator) that can be closed, now: its cleanup (the engine released, the
    outcome booked) runs when its reader stops, not whenever the garbage collector finalises it."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
