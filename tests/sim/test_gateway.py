"""The simulated gateways: the view each one sees (seen_state builds exactly the state EndpointState._replace
would), and calibration outcomes shared as the live gateways share them: at the exchange, weighted."""

from __future__ import annotations

import random

import pytest

from aigrid.core.calibration import Calibration, observe
from aigrid.core.types import Circuit, EndpointState, PrefillQueue
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


@pytest.mark.parametrize("limit", [2, 5, 64])
def test_lazy_folds_equal_folding_at_every_exchange(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """The others' outcomes are folded when a gateway next reads or updates its calibration (or the shared log
    is full): every calibration equals the one folded at every exchange (this reference), at every step of a
    random run, whatever the log's limit."""
    monkeypatch.setattr("aigrid.sim.gateway.SHARED_LOG_LIMIT", limit)
    rng = random.Random(limit)
    gws, loop = gateways(4, 0.1)
    eps = gws.grid.endpoints  # two
    ref: list[dict[int, Calibration | None]] = [{} for _ in eps]
    pending: list[tuple[int, int, float, float, float]] = []
    for _ in range(3000):
        g, e = rng.randrange(4), rng.randrange(len(eps))
        op = rng.random()
        if op < 0.4:  # gateway g scores endpoint e: a key from now on
            cal = gws.view(g, (e,), (eps[e],), 0.0).states[eps[e].id].calibration
            ref[e].setdefault(g, None)
            assert cal == ref[e][g]
        elif op < 0.8:  # its own outcome there, at once
            outcome = (rng.uniform(0, 50), rng.uniform(1, 300), rng.uniform(1, 600))
            gws.record_first_token(g, e, 100, *outcome, rid=0, now=0.0, produced_at=0.0)
            mine = ref[e].get(g)
            ref[e][g] = observe(Calibration() if mine is None else mine, *outcome)
            pending.append((g, e, *outcome))
        else:  # the exchange: the others learn, weighted 1 / 3
            gws._sync(loop)
            for source, index, *outcome in pending:
                for other, cal in ref[index].items():
                    if other != source:
                        ref[index][other] = observe(Calibration() if cal is None else cal, *outcome, weight=1 / 3)
            pending.clear()
        if rng.random() < 0.1:
            e = rng.randrange(len(eps))
            assert all(gws.calibration(g, e) == ref[e].get(g) for g in range(4))


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
        elif name == "prefill_queue":  # a value of its own type: the compiled simulator checks the types it reads
            values[name] = PrefillQueue(1.5, ((2.5, 7),))
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
