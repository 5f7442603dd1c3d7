"""gateway/uvicorn_fit.py: the one check of uvicorn's internals the gateway relies on (the warnings and fallbacks
each part gets: test_slow_clients_uvicorn.py for the class swap and ClientWire, test_stopping.py for Lingering).
Until the twenty-eighth session two near-copies (slow_clients.uvicorn_fits, stopping.stop_fits) read uvicorn's names
two ways; `missing` is the one way now."""

from __future__ import annotations

import asyncio
from types import CodeType
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from aigrid.gateway import uvicorn_fit
from aigrid.gateway.relay_response import ClientWire
from aigrid.gateway.slow_clients import HeadDeadline, RefusableCycle
from aigrid.gateway.stopping import Lingering
from aigrid.gateway.uvicorn_fit import missing


def test_a_name_uvicorn_sets_outside_init_is_found_and_one_it_lacks_is_missing() -> None:
    """The WebSocket protocol's `scope` is stored by handle_connect, not __init__: slow_clients' old way (a class's
    attributes and what its __init__ stores) gave it as missing, which would have turned Lingering off in silence had
    it checked that protocol. What uvicorn lacks is named, sorted."""
    assert missing(WebSocketsSansIOProtocol, ["scope", "close_sent", "handle_connect"]) == []
    assert missing(WebSocketsSansIOProtocol, ["zz_made_up", "scope", "aa_made_up"]) == ["aa_made_up", "zz_made_up"]
    assert missing(FlowControl, uvicorn_fit.WIRE_FLOW_READS) == []


def test_a_name_only_the_gateways_own_subclass_stores_is_missing() -> None:
    """What a subclass of ours stores says what the gateway uses, not what uvicorn has: not counted."""

    class Ours(FlowControl):
        def note(self) -> None:
            self.only_ours = True

    assert missing(Ours, ["only_ours", "drain"]) == ["only_ours"]


def test_each_check_reads_the_class_the_gateway_extends() -> None:
    """uvicorn_fits checks the classes the gateway's own extend: a change of base (another WebSocket protocol, another
    cycle) must move the check with it."""
    assert WebSocketsSansIOProtocol in Lingering.__mro__
    assert RequestResponseCycle in RefusableCycle.__mro__ and HttpToolsProtocol in HeadDeadline.__mro__


def reads(*functions: Any) -> set[str]:
    """The names the code of `functions` (their nested code too) reads or stores, and the identifiers it names as
    strings (Lingering's `getattr(self, "scope", None)`)."""
    found: set[str] = set()
    todo = [getattr(f, "__func__", f).__code__ for f in functions]
    while todo:
        code = todo.pop()
        found.update(code.co_names)
        found.update(c for c in code.co_consts if isinstance(c, str) and c.isidentifier())
        todo.extend(c for c in code.co_consts if isinstance(c, CodeType))
    return found


def own_code(cls: type) -> list[Any]:
    """The functions `cls` itself defines (methods, class methods, properties' getters)."""
    return [getattr(value, "fget", value) for value in vars(cls).values()
            if callable(getattr(value, "fget", value)) or isinstance(value, classmethod)]


def test_each_list_names_only_what_its_part_reads() -> None:
    """A name listed that its part no longer reads turns the part off, in silence but for a warning, under a uvicorn
    that dropped that name, for nothing: SWAP_READS kept `response_started` after RefusableCycle.answering (6620938b)
    replaced RefusableCycle.receive's read of it."""
    swap = reads(*own_code(RefusableCycle), HeadDeadline.send_400_response)
    assert sorted(set(uvicorn_fit.SWAP_READS) - swap) == []
    assert sorted(set(uvicorn_fit.WIRE_READS) - reads(ClientWire.__init__, ClientWire.of)) == []
    assert sorted(set(uvicorn_fit.WIRE_FLOW_READS) - reads(*own_code(ClientWire))) == []
    assert sorted(set(uvicorn_fit.LINGER_READS) - reads(*own_code(Lingering))) == []


def test_what_refusable_cycle_reads_of_uvicorns_cycle_is_checked() -> None:
    """What RefusableCycle's own code reads of uvicorn's cycle (its attributes, and what an instance holds) is in
    SWAP_READS, but the cycle's `flow`, read (write_paused, drain) only where uvicorn_fits' `wire` holds: in WIRE_READS
    and WIRE_FLOW_READS."""
    cycle = RequestResponseCycle(scope={}, transport=None, flow=None, logger=None, access_logger=None,  # type: ignore[arg-type, typeddict-item]
                                 access_log=False, default_headers=[], message_event=asyncio.Event(),
                                 expect_100_continue=False, keep_alive=True, on_response=lambda: None)
    uvicorns = set(vars(cycle)) | {name for name in dir(RequestResponseCycle) if not name.startswith("__")}
    used = reads(*own_code(RefusableCycle)) & uvicorns
    assert sorted(used - set(uvicorn_fit.SWAP_READS)) == ["flow"]
    assert "flow" in uvicorn_fit.WIRE_READS and "wire" in reads(RefusableCycle.send)
    assert sorted(reads(RefusableCycle.send) & {"write_paused", "drain"}) == sorted(uvicorn_fit.WIRE_FLOW_READS)
