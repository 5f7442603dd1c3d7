"""Escalation (gateway/escalation.py) through the whole gateway pipeline, on FAKE engines (tests/gateway/
fake_engine.py: canned answers with a chosen log-probability per word, no model): an unsure answer of the
small model is asked again of the large one before the client sees it; a sure one is not."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from rich.console import Console

from aigrid.core.types import Candidate, Prediction
from aigrid.engines.protocol import UpstreamResponse
from aigrid.explain import render_decision
from aigrid.gateway.app import build_app, build_gateway
from aigrid.gateway.escalation import Escalation, confidence, without_logprobs
from aigrid.spec.load import load_spec
from aigrid.spec.models import AuditSpec, TenantSpec
from tests.agents.scripted_engine import _once
from tests.gateway.conftest import audit_rows
from tests.gateway.fake_engine import FakeEngine

SPEC = Path(__file__).resolve().parents[2] / "examples" / "right-size.yaml"
SURE, UNSURE = math.log(0.9), math.log(0.3)


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def grid(tmp_path: Path):
    spec = load_spec(SPEC)
    tenants = dict(spec.tenants)
    # every prompt to the small model (a threshold no gain reaches); unsure answers below 0.5 go up
    tenants["auto"] = TenantSpec.model_validate({"policy": "balanced", "right_size": {
        "max_quality_drop": 2.0, "escalate": {"below_confidence": 0.5, "within_ms": 60_000}}})
    sec = spec.security.model_copy(update={"keys_file": str(tmp_path / "keys.json"), "audit": AuditSpec(
        path=str(tmp_path / "audit.db"), signing_key=str(tmp_path / "audit.pem"))})
    spec = spec.model_copy(update={"tenants": tenants, "security": sec})
    fakes = {e.id: FakeEngine(e.id, words=(e.id, " says", " hi")) for e in spec.endpoints}
    gw = build_gateway(spec, fakes, rng=random.Random(7), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        yield c, fakes, gw
    await gw.guard.stop()


def _answers_once(fake: FakeEngine, status: int, answer: bytes) -> None:
    """`fake` answers every request with `status` and the JSON `answer`, keeping the request in `fake.received`."""

    @asynccontextmanager
    async def answer_once(path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        fake.received.append(orjson.loads(body))
        yield UpstreamResponse(status, {"content-type": "application/json"}, _once(answer))

    fake.open = answer_once  # type: ignore[method-assign]


async def _ask(client: httpx.AsyncClient, **extra) -> httpx.Response:
    r = await client.post("/v1/chat/completions", headers={"x-aigrid-tenant": "auto",
                                                            "x-aigrid-client-location": "Frankfurt"},
                          json={"model": "auto", "messages": [{"role": "user", "content": "What is 2 + 2?"}], **extra})
    assert r.status_code == 200, r.text
    return r


async def test_an_unsure_answer_is_asked_again_of_the_larger_model(grid):
    client, fakes, _ = grid
    fakes["fra-small"].logprob = UNSURE
    r = await _ask(client)
    assert r.headers["x-aigrid-model"] == "large-70b"
    assert r.headers["x-aigrid-escalated-from"] == "small-1b"
    assert float(r.headers["x-aigrid-confidence"]) == pytest.approx(0.3, abs=1e-4)
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "iad-large says hi"
    assert "logprobs" not in body["choices"][0]  # the gateway asked for them; the client did not
    assert fakes["fra-small"].received[-1]["logprobs"] is True
    assert len(fakes["iad-large"].received) == 1
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert d["served_by"] == "fra-small -> iad-large"
    assert d["attempts"][0]["confidence"] == pytest.approx(0.3, abs=1e-4)
    assert d["attempts"][-1]["escalated_from"] == "fra-small"
    console = Console(width=200, record=True)
    console.print(render_decision(d))
    text = console.export_text()
    assert "confidence 0.300" in text and "escalated from fra-small" in text  # aigrid explain says so


async def test_a_sure_answer_is_returned_as_it_is(grid):
    client, fakes, _ = grid
    fakes["fra-small"].logprob = SURE
    r = await _ask(client)
    assert r.headers["x-aigrid-model"] == "small-1b"
    assert "x-aigrid-escalated-from" not in r.headers
    assert float(r.headers["x-aigrid-confidence"]) == pytest.approx(0.9, abs=1e-4)
    assert r.json()["choices"][0]["message"]["content"] == "fra-small says hi"
    assert fakes["iad-large"].received == []


async def test_the_clients_own_logprobs_are_kept(grid):
    client, fakes, _ = grid
    fakes["fra-small"].logprob = SURE
    r = await _ask(client, logprobs=True)
    assert len(r.json()["choices"][0]["logprobs"]["content"]) == 3


async def test_streamed_answers_and_engines_without_logprobs_are_not_escalated(grid):
    client, fakes, _ = grid
    fakes["fra-small"].logprob = UNSURE
    r = await _ask(client, stream=True)
    assert r.headers["x-aigrid-model"] == "small-1b" and "logprobs" not in fakes["fra-small"].received[-1]
    fakes["fra-small"].logprob = None  # an engine that returns no log-probabilities: no confidence, no escalation
    r = await _ask(client)
    assert r.headers["x-aigrid-model"] == "small-1b" and "x-aigrid-confidence" not in r.headers
    assert fakes["iad-large"].received == []


async def test_when_the_larger_model_fails_the_first_answer_stands_and_both_are_charged(grid):
    client, fakes, gw = grid
    fakes["fra-small"].logprob = UNSURE
    fakes["iad-large"].down = True
    r = await _ask(client)
    assert r.headers["x-aigrid-model"] == "small-1b"
    assert r.json()["choices"][0]["message"]["content"] == "fra-small says hi"
    fakes["iad-large"].down = False
    await _ask(client)  # escalated: the tenant is charged both answers' tokens
    first, escalated = (await audit_rows(gw))[-2:]
    assert (first["prompt_tokens"], first["completion_tokens"]) == (5, 3)
    assert (escalated["prompt_tokens"], escalated["completion_tokens"]) == (10, 6)
    assert escalated["outcome"] == "ok" and first["outcome"] == "ok"


async def test_when_the_larger_models_engine_cannot_read_it_the_first_answer_stands(grid):
    """The larger model's engine (a llama-server) answers the escalated request with the 500 that says it could
    not read it (agents/engine_refusal.py), where the small model's engine (a vLLM, which ignores the field) had
    answered: the first answer stands, as when every larger candidate failed (review finding: the client got
    the engine_could_not_read 400 for an answer that was complete and charged)."""
    client, fakes, gw = grid
    fakes["fra-small"].logprob = UNSURE
    large = fakes["iad-large"]

    _answers_once(large, 500, b'{"error":{"code":500,"message":"Failed to parse messages: bad","type":"server_error"}}')
    r = await _ask(client)
    assert r.headers["x-aigrid-model"] == "small-1b" and len(large.received) == 1
    assert r.json()["choices"][0]["message"]["content"] == "fra-small says hi"
    assert (await audit_rows(gw))[-1]["outcome"] == "ok"


async def test_a_larger_models_answer_past_what_its_tokens_can_hold_is_not_read_to_its_end(grid):
    """The larger model's whole answer was read to its end without the bound of a whole answer (every other whole
    answer has it: docs/reliability.md): an engine that does not stop grew the gateway's memory without bound, and
    its answer was passed on. Now it is its engine's failure past the bound, and the first answer stands."""
    client, fakes, gw = grid
    fakes["fra-small"].logprob = UNSURE
    large = fakes["iad-large"]
    gw.proxy._contexts["iad-large"] = 64  # its bound: 1 MiB

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "big"}}], "pad": "'
        for _ in range(128):
            yield b"x" * 65536
        yield b'"}'

    @asynccontextmanager
    async def huge(path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        large.received.append(orjson.loads(body))
        yield UpstreamResponse(200, {"content-type": "application/json"}, endless())

    large.open = huge  # type: ignore[method-assign]
    r = await _ask(client)
    assert r.headers["x-aigrid-model"] == "small-1b" and len(large.received) == 1
    assert r.json()["choices"][0]["message"]["content"] == "fra-small says hi" and len(r.content) < 100_000
    assert gw.store._live["iad-large"].breaker.failures == 1


def test_confidence_is_the_geometric_mean_of_the_token_probabilities():
    doc = {"choices": [{"logprobs": {"content": [{"logprob": math.log(0.5)}, {"logprob": math.log(0.125)}]}}]}
    assert confidence(doc) == pytest.approx(0.25)
    assert confidence({"choices": [{"message": {}}]}) is None
    assert confidence({"choices": [{"logprobs": {"content": []}}]}) is None
    assert confidence({}) is None
    assert b"logprobs" not in without_logprobs(doc)


def test_the_next_model_up_comes_first_in_rank_order():
    def candidate(name: str, model: str) -> Candidate:
        return Candidate(name, name, "EU", model, {}, 0.5, Prediction(10.0, 10.0, 10.0), 0.0)

    ranked = [candidate("a", "m70"), candidate("b", "m8"), candidate("c", "m1"), candidate("d", "m8")]
    esc = Escalation(0.5, 1.0, {"m1": 1.0, "m8": 8.0, "m70": 70.0}, strip=True)
    assert [c.endpoint_id for c in esc.larger(ranked, "m1")] == ["b", "d", "a"]
    assert esc.larger(ranked, "m70") == []


async def test_a_larger_model_refusing_the_prompt_as_too_long_is_counted_as_the_gateways_own_check(grid):
    """The larger model's engine answers the escalated request with its context 400 (llama.cpp's words): the first
    answer stands, and the larger endpoint's refusal was booked `http_400` in `aigrid_requests`, where the main path
    books an engine's context 400 as the gateway's own `error:context_length_exceeded` (48127ade). Now booked so."""
    client, fakes, gw = grid
    fakes["fra-small"].logprob = UNSURE
    large = fakes["iad-large"]
    too_long = {"error": {"code": 400, "message": "request (2100 tokens) exceeds the available context size (2048 "
                          "tokens), try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 2100,
                          "n_ctx": 2048}}

    _answers_once(large, 400, orjson.dumps(too_long))
    r = await _ask(client)
    assert r.headers["x-aigrid-model"] == "small-1b" and len(large.received) == 1
    assert r.json()["choices"][0]["message"]["content"] == "fra-small says hi"
    assert (await audit_rows(gw))[-1]["outcome"] == "ok"
    requests = {(s.labels["endpoint"], s.labels["outcome"]): s.value
                for m in gw.metrics.registry.collect() if m.name == "aigrid_requests" for s in m.samples
                if s.name == "aigrid_requests_total"}
    assert requests == {("fra-small", "ok"): 1, ("iad-large", "error:context_length_exceeded"): 1}, requests


async def test_a_larger_model_refusing_the_escalation_is_neither_its_failure_nor_a_success(grid):
    """The larger model's engine refuses the escalated request with a 4xx (the client's request, not the engine's
    fault): _escalated called record_success for it, closing its circuit and clearing its failures as a served
    answer does, where forward (since the twenty-ninth session) records no success for an engine's 4xx. Now neither
    a failure nor a success: its breaker's count stands."""
    client, fakes, gw = grid
    fakes["fra-small"].logprob = UNSURE
    large = fakes["iad-large"]

    _answers_once(large, 422, orjson.dumps({"error": {"message": "unsupported parameter"}}))
    gw.store._live["iad-large"].breaker.failures = 2
    r = await _ask(client)
    assert r.headers["x-aigrid-model"] == "small-1b" and len(large.received) == 1
    assert gw.store._live["iad-large"].breaker.failures == 2
