"""Whether the installed uvicorn still has the internals the gateway relies on: pyproject allows any uvicorn from 0.45
on, and three parts of the gateway reach past its public API.

- slow_clients.RefusableCycle: HeadDeadline swaps the class of each request cycle uvicorn's httptools protocol
  builds (SWAP_READS);
- relay_response.ClientWire: writes a streamed answer's chunks on the client's socket under that cycle (WIRE_READS,
  WIRE_FLOW_READS);
- stopping.Lingering: reads and sets uvicorn's WebSocket protocol's attributes inside its connection.shutdown(),
  which nothing catches (LINGER_READS).

`uvicorn_fits` checks them once per process (at startup: stopping.gateway_server; else the first connection of a
HeadDeadline or a Lingering) and, for each part uvicorn no longer fits, logs one warning naming uvicorn's version and
what is missing, and that part is left out: uvicorn's own behaviour in its place, never a request broken on a missing
name. Until the twenty-eighth session this was two near-copies (slow_clients.uvicorn_fits, stopping.stop_fits) with
two ways of reading uvicorn's version and two of collecting its names: the slow_clients one read only what a class's
__init__ sets, which would have missed a name set elsewhere (the WebSocket protocol's `scope`, set in handle_connect).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Iterable
from typing import NamedTuple

import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger("aigrid.gateway")

SWAP_READS = ("send", "receive", "response_complete", "more_body", "keep_alive", "message_event", "transport",
              "disconnected")
"""What slow_clients.RefusableCycle and HeadDeadline.send_400_response use of uvicorn's cycle (its class swapped
under it). RefusableCycle.send reads the cycle's `flow` too (write_paused, drain), only where `wire` fits: those are
WIRE_READS' and WIRE_FLOW_READS'. (`response_started` was listed until RefusableCycle.answering replaced its read.)"""
WIRE_READS = ("chunked_encoding", "response_started", "response_complete", "disconnected", "scope", "transport",
              "flow")
"""What relay_response.ClientWire.of reads of uvicorn's cycle, to write a streamed answer's chunks on the socket;
ClientWire.start also stands in for the cycle's `transport` while uvicorn's send writes the answer's head through it,
to send the head with the first chunk (a uvicorn that wrote it otherwise has its head go out alone, as before)."""
WIRE_FLOW_READS = ("write_paused", "drain")
"""What ClientWire (and RefusableCycle.send, before an answer's head) uses of the cycle's flow (uvicorn's
FlowControl)."""
LINGER_READS = ("handshake_complete", "initial_response", "close_sent", "disconnected", "scope", "close_timeout",
                "handle_connect", "shutdown")
"""What stopping.Lingering reads and sets of uvicorn's WebSocket protocol (slow_clients.PongsWhileRead's base)."""


class Fit(NamedTuple):
    """What of uvicorn's internals the gateway may rely on (uvicorn_fits)."""

    swap: bool
    """HeadDeadline makes each request's cycle a RefusableCycle (a body refused part-way is the app's 400)."""
    wire: bool
    """relay_response.ClientWire finds the client's socket under a streamed answer (its chunks written directly)."""
    lingers: bool
    """stopping.Lingering lets a WebSocket's response end within the grace (else uvicorn's own close at once, 1012)."""


def version() -> str:
    return str(getattr(uvicorn, "__version__", "?"))


def missing(cls: type, names: Iterable[str]) -> list[str]:
    """Of `names`, those `cls` has neither as an attribute nor as a name the code of its uvicorn classes (`cls` and
    its bases from uvicorn's modules) reads or stores, sorted: an instance attribute is a name its code stores,
    wherever it does (__init__, or later: a WebSocket's `scope` in handle_connect). Code of the gateway's own
    subclasses does not count: it says what the gateway uses, not what uvicorn has."""
    found = set(dir(cls))
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] != "uvicorn":
            continue
        for value in vars(klass).values():
            code = getattr(getattr(value, "__func__", value), "__code__", None)
            if code is not None:
                found.update(code.co_names)
    return sorted(set(names) - found)


@functools.cache
def uvicorn_fits() -> Fit:
    """Whether uvicorn is what the gateway's three reaches into it were written against (module docstring): its
    httptools protocol builds uvicorn's own RequestResponseCycle (the class RefusableCycle extends) with the names
    the swap and ClientWire use, and its WebSocket protocol has what Lingering reads. Once per process; where a part
    does not fit, one warning for it and uvicorn's own behaviour in its place: no class swap (a request refused in
    its chunked body has its connection closed under the app, as uvicorn does), streamed answers through ASGI
    `send`, a Responses WebSocket closed 1012 when the stop begins (Lingering acts as uvicorn's protocol)."""
    built = getattr(httptools_impl, "RequestResponseCycle", None)  # what on_headers_complete builds (by that name)
    builds = "RequestResponseCycle" in HttpToolsProtocol.on_headers_complete.__code__.co_names
    ours = builds and built is RequestResponseCycle
    missing_swap = missing(built, SWAP_READS) if isinstance(built, type) else sorted(SWAP_READS)
    swap = ours and not missing_swap and all(inspect.iscoroutinefunction(getattr(built, name, None))
                                             for name in ("send", "receive"))
    missing_wire = (missing(built, WIRE_READS) if isinstance(built, type) else sorted(WIRE_READS)) + [
        f"flow.{name}" for name in missing(FlowControl, WIRE_FLOW_READS)]
    wire = ours and not missing_wire
    what = (f"uvicorn {version()}'s httptools protocol " + (
        f"builds {_qualified(built)!r}, not the RequestResponseCycle this gateway extends"
        if not ours else "builds a RequestResponseCycle without {}"))
    if not swap:
        log.warning("%s: a request refused in its chunked body has its connection closed under the app (uvicorn's "
                    "own behaviour; slow_clients.RefusableCycle not used)",
                    what.format(", ".join(missing_swap) or "an async send and receive"))
    if not wire:
        log.warning("%s: streamed answers go through ASGI send, not written on the client's socket "
                    "(relay_response.ClientWire finds no wire: slower, still correct)",
                    what.format(", ".join(missing_wire)))
    missing_linger = missing(WebSocketsSansIOProtocol, LINGER_READS)
    if missing_linger:
        log.warning("uvicorn %s's WebSocket protocol has no %s: a Responses WebSocket is closed 1012 when the stop "
                    "begins, its response under way cut (uvicorn's own behaviour; stopping.Lingering not used)",
                    version(), ", ".join(missing_linger))
    return Fit(swap, wire, not missing_linger)


def _qualified(built: object) -> str:
    return f"{getattr(built, '__module__', '?')}.{getattr(built, '__qualname__', built)}"
