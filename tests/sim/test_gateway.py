"""The simulated gateway's view: seen_state builds exactly the state EndpointState._replace would."""

from __future__ import annotations

import pytest

from aigrid.core.calibration import Calibration
from aigrid.core.types import Circuit, EndpointState
from aigrid.sim.gateway import seen_state
from aigrid.telemetry.inflight import Load, merged_counts, merged_fields


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
