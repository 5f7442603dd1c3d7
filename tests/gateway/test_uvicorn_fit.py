"""gateway/uvicorn_fit.py: the one check of uvicorn's internals the gateway relies on (the warnings and fallbacks
each part gets: test_slow_clients_uvicorn.py for the class swap and ClientWire, test_stopping.py for Lingering).
Until the twenty-eighth session two near-copies (slow_clients.uvicorn_fits, stopping.stop_fits) read uvicorn's names
two ways; `missing` is the one way now."""

from __future__ import annotations

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from aigrid.gateway import uvicorn_fit
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
