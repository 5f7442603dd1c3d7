"""One vLLM endpoint that is an engine emulator on `port`: the grid spec the emulator tests of tests/gateway share."""

from __future__ import annotations

from aigrid.spec.load import parse_spec
from aigrid.spec.models import GridSpec


def emulated_spec(port: int) -> GridSpec:
    """A grid of one site and one vLLM endpoint `emu0` (model `emulated`, context left at its default) at
    127.0.0.1:`port`, scraped only when a test asks, no audit log."""
    return parse_spec({
        "name": "emulated", "gateway": {"network": "none", "scrape_interval_s": 60},
        "models": {"emulated": {"family": "emulated", "params_b": 1.0}},
        "sites": {"s0": {"name": "S0", "lat": 50.0, "lon": 8.0, "jurisdiction": "EU"}},
        "endpoints": [{"id": "emu0", "site": "s0", "model": "emulated", "engine": "vllm", "slots": 4,
                       "url": f"http://127.0.0.1:{port}"}],
        "security": {"audit": None}}, "emulated")
