"""The simulated gateways: the view each one sees (seen_state builds exactly the state EndpointState._replace
would), and calibration outcomes shared as the live gateways share them: at the exchange, weighted."""

from __future__ import annotations

import pytest

from aigrid.core.calibration import Calibration, observe
from aigrid.core.types import Circuit, EndpointState
from aigrid.sim.clock import EventLoop
from aigrid.sim.gateway import Gateways, Telemetry, seen_state
from aigrid.sim.geography import load_cities
from aigrid.sim.grid import build_grid
from aigrid.sim.scenario import load_scenario
from aigrid.telemetry.inflight import Load, merged_counts, merged_fields


def gateways(count: int, shared_sync_s: float) -> tuple[Gateways, EventLoop]:
    grid = build_grid(load_scenario("examples/sim/one-region.yaml"), load_cities())
    loop = EventLoop()
    telemetry = Telemetry(loop, len(grid.endpoints), lambda i: EndpointState(), 1.0, 1.0)
    return Gateways(grid, telemetry, count, True, 30.0, shared_sync_s=shared_sync_s), loop


def test_outcomes_reach_the_other_gateways_that_score_the_endpoint_at_the_exchange() -> None:
    gws, loop = gateways(3, 0.1)
    ep = gws.grid.endpoints[0]
    for g in (0, 1):  # gateways 0 and 1 score endpoint 0; gateway 2 never does
        gws.view(g, (0,), (ep,), 0.0)
    gws.record_send(0, 0, 500, rid=1, now=0.0, arrives_at=0.01)
    gws.record_first_token(0, 0, 500, 10.0, 100.0, 180.0, rid=1, now=0.2, produced_at=0.19)
    own = observe(Calibration(), 10.0, 100.0, 180.0)
    assert gws.calibration(0, 0) == own and gws.calibration(1, 0) is None  # the others learn at the exchange
    gws._sync(loop)
    assert gws.calibration(0, 0) == own  # not folded twice
    assert gws.calibration(1, 0) == observe(Calibration(), 10.0, 100.0, 180.0, weight=0.5)  # 1 / (3 - 1)
    assert gws.calibration(2, 0) is None
    assert gws.view(1, (0,), (ep,), 0.0).states[ep.id].calibration == gws.calibration(1, 0)


def test_without_shared_state_each_gateway_learns_alone() -> None:
    gws, loop = gateways(2, 0.0)
    ep = gws.grid.endpoints[0]
    for g in (0, 1):
        gws.view(g, (0,), (ep,), 0.0)
    gws.record_first_token(0, 0, 500, 10.0, 100.0, 180.0, rid=1, now=0.2, produced_at=0.19)
    gws._sync(loop)
    assert gws.calibration(0, 0) is not None and gws.calibration(1, 0) is None


def _distinct_state() -> EndpointState:
    """Every field set to a value unlike its default, so that a field built from the wrong place shows."""
    values: dict[str, object] = {}
    for n, name in enumerate(EndpointState._fields):
        default = EndpointState._field_defaults[name]
        if isinstance(default, bool):
            values[name] = not default
        elif name == "circuit":
            values[name] = Circuit.HALF_OPEN
        elif name == "calibration":
            values[name] = Calibration(n=3)
        elif isinstance(default, str):
            values[name] = f"{name}-value"
        elif isinstance(default, int):
            values[name] = 100 + n
        else:
            values[name] = 100.5 + n
    return EndpointState(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("load", [None, Load(), Load(2, 300, 1), Load(0, 0, 250)])
@pytest.mark.parametrize("cal", [None, Calibration(n=9)])
@pytest.mark.parametrize("circuit", list(Circuit))
@pytest.mark.parametrize("base", [EndpointState(), _distinct_state()])
def test_seen_state_equals_replace(base: EndpointState, load: Load | None, cal: Calibration | None,
                                   circuit: Circuit) -> None:
    changes: dict[str, object] = dict(merged_fields(base, load, 8))
    if cal is not None:
        changes["calibration"] = cal
    if circuit is not Circuit.CLOSED:
        changes["circuit"] = circuit
        changes["reason"] = "connection failed recently"
    expected = base._replace(**changes)
    got = seen_state(base, merged_counts(base, load, 8), cal, circuit)
    assert got == expected  # every field
    assert [type(v) for v in got] == [type(v) for v in expected]
