"""The gateway tests' fixtures (a demo grid of FAKE engines: `fakes`, `gateway`) for the SDK surface tests."""

from tests.gateway.conftest import fakes, gateway

__all__ = ["fakes", "gateway"]
