"""The demo grid with two models of one family and different contexts, for the tests of a prompt only the larger
holds (the router's context filter, core/filters/context.py)."""

from __future__ import annotations

from pathlib import Path

from aigrid.spec.models import GridSpec
from tests.gateway.conftest import spec_in
from tests.gateway.fake_engine import FakeEngine

SMALL, LARGE = "smollm2-135m", "smollm2-1.7b"
SMALL_AT, LARGE_AT = "iad-smollm2", "fra-smollm2"


def two_contexts(tmp: Path) -> tuple[GridSpec, dict[str, FakeEngine]]:
    """SMALL (context 2,048) at iad (US), LARGE (8,192) at fra (EU), both of family smollm2; a fake engine each."""
    spec = spec_in(tmp)
    small = spec.models[SMALL].model_copy(update={"context": 2048})
    large = small.model_copy(update={"context": 8192, "params_b": 1.7})
    endpoints = [e if e.id == SMALL_AT else e.model_copy(update={"model": LARGE})
                 for e in spec.endpoints if e.id in (SMALL_AT, LARGE_AT)]
    spec = spec.model_copy(update={"models": {SMALL: small, LARGE: large}, "endpoints": endpoints})
    return spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}
