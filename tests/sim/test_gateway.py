"""The simulated gateways share calibration outcomes as the live ones do: at the exchange, weighted."""

from __future__ import annotations

from aigrid.core.calibration import Calibration, observe
from aigrid.core.types import EndpointState
from aigrid.sim.clock import EventLoop
from aigrid.sim.gateway import Gateways, Telemetry
from aigrid.sim.geography import load_cities
from aigrid.sim.grid import build_grid
from aigrid.sim.scenario import load_scenario


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
    gws.record_send(0, 0, 500)
    gws.record_first_token(0, 0, 500, 10.0, 100.0, 180.0)
    own = observe(Calibration(), 10.0, 100.0, 180.0)
    assert gws.calibrations[0][0] == own and 0 not in gws.calibrations[1]  # the others learn at the exchange
    gws._sync(loop)
    assert gws.calibrations[0][0] == own  # not folded twice
    assert gws.calibrations[1][0] == observe(Calibration(), 10.0, 100.0, 180.0, weight=0.5)  # 1 / (3 - 1)
    assert 0 not in gws.calibrations[2]
    assert gws.view(1, (0,), (ep,), 0.0).states[ep.id].calibration == gws.calibrations[1][0]


def test_without_shared_state_each_gateway_learns_alone() -> None:
    gws, loop = gateways(2, 0.0)
    ep = gws.grid.endpoints[0]
    for g in (0, 1):
        gws.view(g, (0,), (ep,), 0.0)
    gws.record_first_token(0, 0, 500, 10.0, 100.0, 180.0)
    gws._sync(loop)
    assert 0 in gws.calibrations[0] and 0 not in gws.calibrations[1]
