"""Fuzz every route of the API from its own OpenAPI schema (schemathesis) against the in-process gateway with
FAKE engines and a small stand-in embedder: no input a client can send may produce a 500, and every JSON
error is its API's envelope (OpenAI's, or Anthropic's on /v1/messages). A route missing from the OpenAPI
document fails test_every_route_is_fuzzed, so a new front door is fuzzed as soon as it is documented.

Examples per route: EXAMPLES (the test suite's run; 60 until the thirty-second session, 61 s of `make test`), or
the deep run's count in AIGRID_FUZZ_EXAMPLES, the same strategies:
`AIGRID_FUZZ_EXAMPLES=300 .venv/bin/python -m pytest tests/gateway/test_fuzz.py -q`."""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from starlette.routing import Route

from aigrid.gateway.app import build_app, build_gateway
from aigrid.spec.load import load_spec
from tests.agents.test_embeddings import HashEmbedder
from tests.gateway.conftest import DEMO, _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine

_fakes = {e.id: FakeEngine(e.id) for e in load_spec(DEMO).endpoints}
_gateway = build_gateway(spec_in(Path(tempfile.mkdtemp(prefix="aigrid-fuzz-"))), _fakes, rng=random.Random(0),
                         sleep=_no_sleep)
_gateway.agents.embedders = {alias: HashEmbedder() for alias in _gateway.agents.embedders}  # no torch here
_app = build_app(_gateway)
MAX_ITEMS = 3
EXAMPLES = int(os.environ.get("AIGRID_FUZZ_EXAMPLES", "20"))
"""Hypothesis examples per route and method."""


def bounded(node: Any) -> Any:
    """A copy of a JSON schema in which every array without a `maxItems` (or with a larger one) holds at most
    MAX_ITEMS: 0, 1 and several items are the shapes a handler branches on (test_errors covers size limits).
    Unbounded, hypothesis spent 15-65 s building 60 bodies of POST /v1/messages/batches (requests of messages of
    content blocks, each block one of six types; up to 64 kB each), and up to 138 s of this test under load."""
    if isinstance(node, list):
        return [bounded(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: bounded(v) for k, v in node.items()}
    kind = out.get("type")
    if kind == "array" or (isinstance(kind, list) and "array" in kind):
        out["maxItems"] = max(min(out.get("maxItems", MAX_ITEMS), MAX_ITEMS), out.get("minItems", 0))
    return out


def _bounded_in_place(context: schemathesis.HookContext, raw_schema: dict[str, Any]) -> None:
    """schemathesis' `before_load_schema` hook, which changes the document in place: `bounded`'s copy of it."""
    raw_schema.update(bounded(raw_schema))


# The app's own document through schemathesis' ASGI loader (which binds the schema to the app and its path), bounded
# as it loads: a global hook, so registered only while this one schema loads. (It was loaded twice, the bounded copy
# through from_dict, and its `app` and `location` set by hand: names of schemathesis' own, not its API.)
schemathesis.hook("before_load_schema")(_bounded_in_place)
try:
    schema = schemathesis.openapi.from_asgi("/openapi.json", _app)
finally:
    schemathesis.hooks.unregister(_bounded_in_place)


def test_every_route_is_fuzzed() -> None:
    documented = {(path, method.upper()) for path, ops in schema.raw_schema["paths"].items() for method in ops}
    served = {(re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path), m)  # "{model_id:path}" is the schema's "{model_id}"
              for r in _app.routes if isinstance(r, Route) for m in (r.methods or ()) if m != "HEAD"}
    assert served <= documented, sorted(served - documented)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_500s(case: schemathesis.Case) -> None:
    response = case.call()
    anthropic = case.path.startswith("/v1/messages")
    assert response.status_code < 500 or response.status_code in ((529,) if anthropic else (502, 503)), response.text
    if response.status_code >= 400 and response.headers.get("content-type", [""])[0].startswith("application/json"):
        body = response.json()
        if anthropic:
            assert body.get("type") == "error" and set(body["error"]) == {"type", "message"}, response.text
        else:
            assert set(body["error"]) == {"message", "type", "param", "code"}
