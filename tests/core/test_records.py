"""core.types.record_builder: the records built once per decision on the simulator's hot path (RequestInfo,
GridView, Decision) without their generated __init__ are the records their constructors build."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import dataclass, fields

import pytest

from aigrid.core.context import NOTHING_CROWDED, Context, build_context
from aigrid.core.policies import BUILTIN_POLICIES
from aigrid.core.types import (
    Decision,
    Endpoint,
    GeoPoint,
    GridView,
    ModelChoice,
    ModelInfo,
    Policy,
    Rejection,
    RequestInfo,
    Site,
    Urgency,
    build_decision,
    build_grid_view,
    build_request_info,
    record_builder,
)


def _same(built: object, made: object) -> None:
    assert type(built) is type(made)
    assert built == made
    for f in fields(made):  # type: ignore[arg-type]
        mine, theirs = getattr(built, f.name), getattr(made, f.name)
        # compiled (core/types.py is), a record holds a float or int field unboxed: each read is a new object (an
        # int outside CPython's cached -5..256: min_prompt_tokens 300)
        assert mine is theirs or (type(mine) is type(theirs) and type(mine) in (float, int) and mine == theirs), f.name
    assert pickle.loads(pickle.dumps(built)) == made and copy.deepcopy(built) == made


def test_every_field_in_order_as_the_constructor_sets_it() -> None:
    values = ("7", "m", 120, 64, GeoPoint(48.1, 11.6), frozenset({"EU"}), "chat", frozenset({"s1"}), "p", "s",
              frozenset({"e1"}), {"m": 0.9}, 0.05, 9, 1500.0, 40, (frozenset({"m*"}),), 300)
    _same(build_request_info(*values), RequestInfo(*values))
    hashable = (*values[:11], None, *values[12:])
    assert hash(build_request_info(*hashable)) == hash(RequestInfo(*hashable))
    view = ({}, (), {}, {"p": "e"}, {}, {"e": 12.5})
    _same(build_grid_view(*view), GridView(*view))
    decision = ("7", "balanced", (), (), "why", None, None)
    _same(build_decision(*decision), Decision(*decision))


def test_the_context_compiled_or_not() -> None:
    """core/context.py is compiled with the core: Context is then a native class, whose fields' descriptors
    are its native setters (record_builder takes the class's own __new__)."""
    request = build_request_info("1", "m", 10, 20, None, None, "t", None, None, None, frozenset(), None, 1.0, 5,
                                 None, None, (), 0)
    view = build_grid_view({}, (), {}, {}, {}, None)
    policy = next(iter(BUILTIN_POLICIES.values()))
    built = build_context(request, view, policy, frozenset({"e"}), 120.0)
    made = Context(request, view, policy, frozenset({"e"}), 120.0)
    assert type(built) is Context and built == made and built.crowded == frozenset({"e"})
    assert built.best_ttft_ms == 120.0
    assert build_context(request, view, policy, NOTHING_CROWDED, -1.0) == Context(request, view, policy)
    with pytest.raises(AttributeError):
        built.policy = policy  # type: ignore[misc]


def test_still_frozen() -> None:
    built = build_decision("7", "balanced", (), (), "", None, None)
    with pytest.raises(AttributeError):
        built.reason = "changed"  # type: ignore[misc]


def test_every_record_pickles_and_copies_compiled_or_not() -> None:
    """core/types.py is compiled with the core: its frozen dataclasses are then native classes, which pickle and
    copy through their __reduce__ (types.reduce_record; mypyc's own __setstate__ would set each field through
    the frozen __setattr__ and fail). The same records with the pure-Python core."""
    site = Site("s", "S", GeoPoint(1.0, 2.0), "EU", "gpu", 100.0, 10.0, 90.0)
    endpoint = Endpoint("e", "s", "m", "f", 7.0, 0.1, 0.2, 4, 900.0, 40.0, "sim")
    records = [
        site, endpoint, ModelInfo("m", "f", 7.0), Policy("p", {"ttft": 1.0}, tpot_slo_ms=50.0),
        Rejection("e", "s", "health", "down"), Urgency(9, "interactive", 500.0, 2000.0, {"ttft": 1.0}, {}),
        ModelChoice("m", "m", {"m": 0.9}, 0.05, ("m",), 0.01),
        GridView({"s": site}, (endpoint,), {}, {"p": "e"}, {}, {"e": 12.5}),
        RequestInfo("r", "m", 10, 20, GeoPoint(3.0, 4.0), frozenset({"EU"}), exclude_endpoints=frozenset({"x"})),
        Decision("r", "p", (), (Rejection("e", "s", "health", "down"),), "why"),
    ]
    for record in records:
        for again in (pickle.loads(pickle.dumps(record)), copy.deepcopy(record), copy.copy(record),
                      dataclasses.replace(record)):
            assert type(again) is type(record) and again == record, record
        with pytest.raises(AttributeError):
            setattr(record, fields(record)[0].name, "changed")  # frozen (FrozenInstanceError is one)
    assert hash(GeoPoint(1.0, 2.0)) == hash(pickle.loads(pickle.dumps(GeoPoint(1.0, 2.0))))


def test_a_record_with_a_post_init_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            assert self.x >= 0

    with pytest.raises(TypeError):
        record_builder(Checked)
