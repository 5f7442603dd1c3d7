"""What a 404's "did you mean" costs (aigrid/gateway/unknown_path.py, RouteIndex.nearest) on the demo gateway's own
routes, for a few typos and paths near no route: `kept`, with this thread's difflib matchers kept (every 404
after a thread's first), and `built`, with this thread's matchers dropped before each call (each route it
compares gets a matcher built again: what building them per call would cost).

    .venv/bin/python scripts/bench_route_index.py

Prints the best of 5 runs of 2,000 calls each, in microseconds per call; no pass/fail. RouteIndex's docstring
quotes these figures.
"""

from __future__ import annotations

import tempfile
import timeit
from pathlib import Path

from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.unknown_path import Near, RouteIndex
from aigrid.spec.load import load_spec
from aigrid.spec.models import AuditSpec

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.yaml"
PATHS = ("/v1/chat/completion", "/v1/embedding", "/v1/files/file-1/contents", "/helthz", "/v1/moderations", "/v1/x")


def per_call_us(fn: object, number: int = 2000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def anew(index: RouteIndex, path: str) -> Near | None:
    """nearest() with this thread's matchers dropped first: each route it compares gets one built again."""
    index._local.__dict__.clear()
    return index.nearest(path)


def main() -> None:
    spec = load_spec(DEMO)
    with tempfile.TemporaryDirectory() as tmp:
        sec = spec.security.model_copy(update={"keys_file": f"{tmp}/keys.json", "audit": AuditSpec(
            path=f"{tmp}/audit.db", signing_key=f"{tmp}/audit.pem")})
        routes = build_app(build_gateway(spec.model_copy(update={"security": sec}), {})).routes
    index = RouteIndex(routes)
    print(f"{len(routes)} routes; microseconds per nearest()")
    for path in PATHS:
        near = index.nearest(path)
        kept = per_call_us(lambda p=path: index.nearest(p))
        built = per_call_us(lambda p=path: anew(index, p))
        print(f"{path:28} kept {kept:6.1f}   built {built:6.1f}   -> {near.path if near else None}")


if __name__ == "__main__":
    main()
