"""The gateway end to end in process, against FAKE engines: routing, headers, SSE relay, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import httpx
import orjson
import pytest

from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.spec.models import GridSpec
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.short_deadline import ShortDeadline
from tests.gateway.test_batches import batch_spec

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}


async def chat(client: httpx.AsyncClient, location: str | None = None, **extra: object) -> httpx.Response:
    headers = {} if location is None else {"x-aigrid-client-location": location}
    return await client.post("/v1/chat/completions", json={**CHAT, **extra}, headers=headers)


async def test_tokyo_client_is_served_by_nrt_and_frankfurt_by_fra(client: httpx.AsyncClient) -> None:
    tokyo = await chat(client, "Tokyo")
    frankfurt = await chat(client, "Frankfurt")
    assert tokyo.status_code == 200 and frankfurt.status_code == 200
    assert tokyo.headers["x-aigrid-site"] == "nrt"
    assert frankfurt.headers["x-aigrid-site"] == "fra"
    assert tokyo.json()["choices"][0]["message"]["content"] == "Hello from the grid"


async def test_lat_lon_location_and_decision_is_explainable(client: httpx.AsyncClient) -> None:
    r = await chat(client, "-23.5,-46.6")
    assert r.headers["x-aigrid-site"] == "gru"
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert d["chosen"] == "gru-smollm2" and d["served_by"] == "gru-smollm2"
    assert len(d["candidates"]) == 4
    first = d["candidates"][0]
    assert set(first["scores"]) == {"ttft", "cost", "affinity", "headroom", "proximity"}
    assert first["predicted_ttft_ms"] < d["candidates"][-1]["predicted_ttft_ms"]


async def test_stream_relays_sse_bytes_untouched(client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True},
                             headers={"x-aigrid-client-location": "Paris"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join([c async for c in r.aiter_raw()])
    events = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "Hello from the grid"
    assert not any(b'"usage"' in e for e in events)  # not asked for: the gateway metered it, then hid it
    upstream = fakes["fra-smollm2"].received[-1]
    assert upstream["model"] == "smollm2-135m" and upstream["stream_options"] == {"include_usage": True}


async def test_stream_usage_when_asked(client: httpx.AsyncClient) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=body,
                             headers={"x-aigrid-client-location": "Paris"}) as r:
        raw = b"".join([c async for c in r.aiter_raw()])
    events = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    last = orjson.loads(events[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 4
    metrics = (await client.get("/metrics")).text
    assert 'aigrid_tokens_total{kind="completion",site="fra"} 4.0' in metrics  # metered either way


async def test_tokyo_goes_elsewhere_when_nrt_is_down_and_decision_says_why(
        client: httpx.AsyncClient, gateway: Gateway, fakes: dict[str, FakeEngine]) -> None:
    fakes["nrt-smollm2"].down = True
    await gateway.scraper.scrape_once()
    r = await chat(client, "Tokyo")
    assert r.status_code == 200 and r.headers["x-aigrid-site"] != "nrt"
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert {"endpoint": "nrt-smollm2", "site": "nrt", "filter": "health"}.items() <= d["rejected"][0].items()
    health = (await client.get("/healthz")).json()
    assert "nrt-smollm2" not in health["healthy"]


async def test_failure_before_first_byte_retries_next_candidate(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    fakes["nrt-smollm2"].down = True  # down, but the scraper has not noticed yet
    r = await chat(client, "Tokyo")
    assert r.status_code == 200 and r.headers["x-aigrid-site"] != "nrt"
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert d["attempts"][0]["endpoint"] == "nrt-smollm2" and d["attempts"][0]["ok"] is False
    assert d["attempts"][1]["ok"] is True


async def test_circuit_opens_after_repeated_failures(client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    fakes["nrt-smollm2"].down = True  # the scraper has not noticed: only real failures can open the circuit
    jp_only = {"x-aigrid-client-location": "Tokyo", "x-aigrid-residency": "JP"}
    for _ in range(3):
        r = await client.post("/v1/chat/completions", json=CHAT, headers=jp_only)
        assert r.status_code == 502
    r = await client.post("/v1/chat/completions", json=CHAT, headers=jp_only)
    assert r.status_code == 503 and "circuit breaker open" in r.json()["error"]["message"]
    assert len(fakes["nrt-smollm2"].received) == 0


async def read_stream(client: httpx.AsyncClient, body: dict, headers: dict) -> tuple[list[dict], httpx.Headers]:
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers) as r:
        raw = b"".join([c async for c in r.aiter_raw()])
        hdrs = r.headers
    events = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    return [{"done": True} if e == b"[DONE]" else orjson.loads(e) for e in events], hdrs


def text_of(events: list[dict]) -> str:
    return "".join(c["delta"].get("content") or "" for e in events for c in e.get("choices", []))


@pytest.mark.parametrize("echo", [False, True])
async def test_mid_stream_death_continues_on_next_site_without_repeats(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine], echo: bool) -> None:
    for f in fakes.values():
        f.echo_prefill = echo  # llama.cpp repeats the prefilled text first; vLLM does not
    fakes["fra-smollm2"].break_after = 2  # dies after "Hello from"
    events, headers = await read_stream(client, CHAT, {"x-aigrid-client-location": "Frankfurt"})
    assert text_of(events) == "Hello from the grid"
    assert events[-1] == {"done": True} and not any("error" in e for e in events)
    assert {e["id"] for e in events if "id" in e} == {"fra-smollm2"}  # one stream id from start to end
    assert not any("usage" in e for e in events)
    d = (await client.get(f"/v1/decisions/{headers['x-aigrid-decision']}")).json()
    assert d["served_by"].startswith("fra-smollm2 -> ")
    taker = d["served_by"].split(" -> ")[1]
    resumed = fakes[taker].received[-1]
    assert resumed["messages"][-1] == {"role": "assistant", "content": "Hello from"}
    assert resumed["max_tokens"] == 14
    assert d["attempts"][-1]["continuation_after_chars"] == len("Hello from")


async def test_constrained_output_is_not_resumed_but_ends_with_error(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    fakes["fra-smollm2"].break_after = 2
    body = {**CHAT, "response_format": {"type": "json_object"}}
    events, _ = await read_stream(client, body, {"x-aigrid-client-location": "Frankfurt"})
    assert text_of(events) == "Hello from"
    assert events[-1]["error"]["code"] == "stream_interrupted"
    assert "response_format" in events[-1]["error"]["message"]


async def test_no_spare_site_within_residency_ends_with_error(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    fakes["fra-smollm2"].break_after = 1
    events, _ = await read_stream(client, CHAT, {"x-aigrid-tenant": "eu-bank"})
    assert events[-1]["error"]["code"] == "stream_interrupted"
    assert all(len(f.received) == 0 for k, f in fakes.items() if k != "fra-smollm2")  # never left the EU


async def test_hedge_wins_when_first_byte_is_late(client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    # the hedge starts after 2 x nrt's predicted TTFT + 150 ms (0.39 s here): nrt's first byte is far later (it was
    # 2.0 s, a 1.6 s margin), and it is cancelled once the hedge answers, so the test does not wait for it
    fakes["nrt-smollm2"].first_byte_delay_s = 60.0
    events, headers = await read_stream(client, CHAT, {"x-aigrid-client-location": "Tokyo", "x-aigrid-hedge": "on"})
    assert text_of(events) == "Hello from the grid"
    assert headers["x-aigrid-site"] != "nrt"
    d = (await client.get(f"/v1/decisions/{headers['x-aigrid-decision']}")).json()
    nrt = next(a for a in d["attempts"] if a["endpoint"] == "nrt-smollm2")
    assert nrt["ok"] is False and "cancelled" in nrt["error"]
    assert any(a.get("hedge") and a["ok"] for a in d["attempts"])
    metrics = (await client.get("/metrics")).text
    assert 'aigrid_hedge_wins_total{winner="hedge"} 1.0' in metrics


async def test_residency_keeps_eu_tenant_in_eu_even_from_tokyo(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT,
                          headers={"x-aigrid-client-location": "Tokyo", "x-aigrid-tenant": "eu-bank"})
    assert r.headers["x-aigrid-site"] == "fra" and r.headers["x-aigrid-jurisdiction"] == "EU"


async def test_no_eligible_site_is_503_with_reasons(client: httpx.AsyncClient, gateway: Gateway,
                                                    fakes: dict[str, FakeEngine]) -> None:
    fakes["fra-smollm2"].down = True
    await gateway.scraper.scrape_once()
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"x-aigrid-tenant": "eu-bank"})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "no_eligible_endpoint" and "residency" in err["message"] and "health" in err["message"]


async def test_every_candidate_failing_is_502(client: httpx.AsyncClient, fakes: dict[str, FakeEngine]) -> None:
    for f in fakes.values():
        f.down = True
    r = await chat(client, "Tokyo")
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed"


async def test_prefix_affinity_is_remembered(client: httpx.AsyncClient) -> None:
    r1 = await chat(client, "Tokyo")
    r2 = await chat(client, "Tokyo")
    d = (await client.get(f"/v1/decisions/{r2.headers['x-aigrid-decision']}")).json()
    assert r1.headers["x-aigrid-site"] == "nrt"
    assert "cache warm" in " ".join(d["candidates"][0]["notes"])


async def test_an_apps_system_prompt_is_warm_for_its_next_user(client: httpx.AsyncClient) -> None:
    """Two users of one app (the same system prompt, different questions): the second finds the endpoint
    that served the first warm, with the system prompt's own size taken off its prefill."""
    system = {"role": "system", "content": "You are Example Bank's assistant. " * 60}
    first = await chat(client, "Tokyo", messages=[system, {"role": "user", "content": "Where is my card?"}])
    second = await chat(client, "Tokyo", messages=[system, {"role": "user", "content": "Close my account."}])
    d = (await client.get(f"/v1/decisions/{second.headers['x-aigrid-decision']}")).json()
    warm = [c for c in d["candidates"] if "cache warm" in " ".join(c["notes"])]
    assert [c["site"] for c in warm] == [first.headers["x-aigrid-site"]], d["candidates"]
    other = await chat(client, "Tokyo", messages=[{"role": "system", "content": "You are a poet. " * 60},
                                                  {"role": "user", "content": "Where is my card?"}])
    d3 = (await client.get(f"/v1/decisions/{other.headers['x-aigrid-decision']}")).json()
    assert not any("cache warm" in " ".join(c["notes"]) for c in d3["candidates"])  # another app: cold


async def test_models_health_metrics(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    kinds = {m["id"]: m["kind"] for m in models["data"]}
    assert kinds == {"smollm2-135m": "chat", "auto": "chat", "all-minilm-l6-v2": "embedding"}
    embedding = next(m for m in models["data"] if m["kind"] == "embedding")
    assert embedding["dimensions"] == 384 and "sentence-transformers/all-MiniLM-L6-v2" in embedding["aliases"]
    await chat(client, "Tokyo")
    metrics = (await client.get("/metrics")).text
    assert 'aigrid_requests_total{endpoint="nrt-smollm2",outcome="ok",site="nrt"} 1.0' in metrics
    assert (await client.get("/healthz")).json()["status"] == "ok"
    assert (await client.get("/livez")).json() == {"status": "alive"}


async def test_an_engine_that_never_answers_is_left_after_the_first_byte_deadline(
        tmp_path, fakes: dict[str, FakeEngine]) -> None:  # type: ignore[no-untyped-def]
    import random

    from aigrid.gateway.app import build_app, build_gateway
    from aigrid.spec.models import FirstByteSpec
    from tests.gateway.conftest import _no_sleep, spec_in

    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(
        update={"first_byte_timeout": FirstByteSpec(factor=1, min_s=0.2, max_s=1)})})
    gw = build_gateway(spec, fakes, rng=random.Random(0), sleep=_no_sleep)
    gw.proxy._deadline = _silent_nrt(spec)
    await gw.scraper.scrape_once()
    fakes["nrt-smollm2"].first_byte_delay_s = 30  # a dark link: connected, silent
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://g") as c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "stream": True},
                         headers={"x-aigrid-client-location": "Tokyo"})
    assert r.status_code == 200 and r.headers["x-aigrid-site"] != "nrt"
    d = gw.decisions.get(r.headers["x-aigrid-decision"])
    assert d is not None and "no first byte within" in d.attempts[0]["error"]


async def test_a_non_streamed_answer_has_its_decode_time_before_its_first_byte(
        tmp_path, fakes: dict[str, FakeEngine]) -> None:  # type: ignore[no-untyped-def]
    """An engine sends a non-streamed answer's first byte with the whole answer: the deadline adds the decode
    time of its max_tokens (proxy.FirstByteDeadline.whole), so an answer taking longer than the TTFT deadline
    is served, not abandoned on every candidate in turn (before: a 502 for any answer over 5 s), while a
    silent site is still left once even that has passed."""
    import random

    from aigrid.gateway.app import build_app, build_gateway
    from aigrid.spec.models import FirstByteSpec
    from tests.gateway.conftest import _no_sleep, spec_in

    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"gateway": spec.gateway.model_copy(
        update={"first_byte_timeout": FirstByteSpec(factor=1, min_s=0.2, max_s=10)})})
    gw = build_gateway(spec, fakes, rng=random.Random(0), sleep=_no_sleep)
    gw.proxy._deadline = _silent_nrt(spec)
    await gw.scraper.scrape_once()
    tokyo = {"x-aigrid-client-location": "Tokyo"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://g") as c:
        fakes["nrt-smollm2"].first_byte_delay_s = 1.0  # decoding 16 tokens: 0.2 s + 3 x 16 x 0.1 s allowed
        r = await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 16}, headers=tokyo)
        assert r.status_code == 200 and r.headers["x-aigrid-site"] == "nrt"
        d = gw.decisions.get(r.headers["x-aigrid-decision"])
        assert d is not None and len(d.attempts) == 1
        fakes["nrt-smollm2"].first_byte_delay_s = 30  # a dark link: 2 tokens allow 0.2 + 0.6 s
        r = await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2}, headers=tokyo)
    assert r.status_code == 200 and r.headers["x-aigrid-site"] != "nrt"
    d = gw.decisions.get(r.headers["x-aigrid-decision"])
    assert d is not None and "no first byte within 0.8 s" in d.attempts[0]["error"]


async def test_a_non_streamed_answer_has_a_ceiling_of_its_own_and_its_models_context_bounds_it(
        tmp_path, fakes: dict[str, FakeEngine]) -> None:  # type: ignore[no-untyped-def]
    """A whole answer may take longer than a stream's first-byte ceiling (max_s; before: a 502 for any
    non-streamed answer over 120 s): its ceiling is whole_max_s. A request with no output limit is bounded by
    its model's context (the most it can decode), so a silent site is still left."""
    import random

    from aigrid.gateway.app import build_app, build_gateway
    from aigrid.spec.models import FirstByteSpec
    from tests.gateway.conftest import _no_sleep, spec_in

    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={
        "gateway": spec.gateway.model_copy(update={"first_byte_timeout": FirstByteSpec(
            factor=1, min_s=0.2, max_s=0.5, whole_max_s=10)}),
        "models": {n: m.model_copy(update={"context": 2}) for n, m in spec.models.items()}})
    gw = build_gateway(spec, fakes, rng=random.Random(0), sleep=_no_sleep)
    gw.proxy._deadline = _silent_nrt(spec)
    await gw.scraper.scrape_once()
    tokyo = {"x-aigrid-client-location": "Tokyo"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://g") as c:
        fakes["nrt-smollm2"].first_byte_delay_s = 1.0  # longer than max_s; 16 tokens allow 0.2 + 4.8 s
        r = await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 16}, headers=tokyo)
        assert r.status_code == 200 and r.headers["x-aigrid-site"] == "nrt"
        d = gw.decisions.get(r.headers["x-aigrid-decision"])
        assert d is not None and len(d.attempts) == 1
        fakes["nrt-smollm2"].first_byte_delay_s = 30  # a dark link, no max_tokens: a context of 2 allows 0.8 s
        unlimited = {k: v for k, v in CHAT.items() if k != "max_tokens"}
        r = await c.post("/v1/chat/completions", json=unlimited, headers=tokyo)
    assert r.status_code == 200 and r.headers["x-aigrid-site"] != "nrt"
    d = gw.decisions.get(r.headers["x-aigrid-decision"])
    assert d is not None and "no first byte within 0.8 s" in d.attempts[0]["error"]


def _silent_nrt(spec: GridSpec) -> ShortDeadline:
    """The spec's first-byte deadline for nrt (the silent engine); 30 s for the spare that answers, which the spec's
    left 0.28 s (0.88 s for a whole answer), as little as a loaded machine can take before its first byte."""
    return ShortDeadline(**spec.gateway.first_byte_timeout.model_dump(), short=("nrt-smollm2",))


def test_an_output_limit_written_as_a_whole_float_counts_and_whole_max_s_is_never_below_max_s() -> None:
    from aigrid.gateway.continuation import Delivered, continuation_body
    from aigrid.gateway.schemas import output_limit
    from aigrid.spec.models import FirstByteSpec

    assert output_limit({"max_tokens": 100.0}) == 100 and output_limit({"max_tokens": 2.5}) is None
    assert output_limit({"max_tokens": True}) is None and output_limit({"max_completion_tokens": 7}) == 7
    resumed = continuation_body({"prompt": "x", "max_tokens": 100.0}, Delivered(chunks=60), "vllm")
    assert resumed["max_tokens"] == 40  # the rest of the budget, as before output_limit
    with pytest.raises(ValueError, match="whole_max_s"):
        FirstByteSpec(max_s=120, whole_max_s=30)


async def test_refusals_of_the_files_batches_and_stored_response_calls_are_counted_by_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aigrid_requests_rejected_total counted the model routes' refusals alone: an upload refused 503
    insufficient_storage, or a files, batches, stored-response or conversations call refused 503 audit_unavailable
    (Guard.admit_call), was in no metric, so AigridAuditUnavailable did not see a grid that served only those. Each
    audited call now counts its refusals (a 429 or a 5xx) by code, once; a client's 404 of a file is no refusal, and
    a model route's refusal is still counted once (by its pipeline)."""
    from tests.gateway.test_batches import MODEL, MULTIPART, TENANT, engines_for, form_parts, started  # noqa: PLC0415

    def count(code: str) -> float:
        return gw.metrics.rejected.labels(code)._value.get()

    gw = await started(batch_spec(tmp_path, min_free_bytes=10 << 20), engines_for(tmp_path))
    free = [(10 << 20) + 100]  # 100 bytes above what the disk must keep free
    monkeypatch.setattr("aigrid.gateway.file_store.shutil.disk_usage", lambda _: SimpleNamespace(free=free[0]))
    batch = {"requests": [{"custom_id": "a", "params": {"model": MODEL, "max_tokens": 5,
                                                          "messages": [{"role": "user", "content": "hi"}]}}]}
    app = build_app(gw)
    assert gw.batches is not None
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                     headers=TENANT) as c:
            assert (await c.get("/v1/files/file-nothere")).status_code == 404  # the client's mistake: not counted
            upload = await c.post("/v1/files", content=b"".join(form_parts(5000)), headers=MULTIPART)
            assert upload.json()["error"]["code"] == "insufficient_storage", upload.text
            assert (await c.post("/v1/messages/batches", json=batch)).status_code == 529  # Anthropic's 503
            assert count("insufficient_storage") == 2 and count("not_found") == 0
            await gw.batches.stop()
            await gw.guard.stop()  # the audit log takes no record now: every call is refused
            calls = [c.get("/v1/files"), c.get("/v1/batches"), c.get("/v1/responses/resp_nothere"),
                     c.post("/v1/conversations", json={}), c.get("/v1/models")]
            for call in calls:
                r = await call
                assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable", r.text
            assert count("audit_unavailable") == len(calls)
            chat = await c.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 4,
                                                              "messages": [{"role": "user", "content": "hi"}]})
            assert chat.status_code == 503 and count("audit_unavailable") == len(calls) + 1  # once, not twice
    finally:
        await gw.batches.stop()
        await gw.guard.stop()


async def test_the_audit_logs_backlog_is_in_the_metrics_before_its_refusals_begin(tmp_path: Path) -> None:
    """Nothing showed an audit log filling up (its writer slow on its disk) before it refused requests 503
    audit_unavailable: /metrics shows its records waiting (aigrid_audit_queue_waiting) beside the number at which the
    refusals begin (aigrid_audit_queue_limit, security.audit.queue_max), current after each request and at a scrape."""
    from aigrid.spec.models import AuditSpec  # noqa: PLC0415
    from tests.gateway.conftest import _no_sleep, spec_in  # noqa: PLC0415
    from tests.gateway.stalled_audit import stall_audit  # noqa: PLC0415
    from tests.gateway.test_batches import MODEL, engines_for  # noqa: PLC0415

    spec = spec_in(tmp_path)
    sec = spec.security.model_copy(update={"audit": AuditSpec(path=str(tmp_path / "a.db"), signing_key=None,
                                                              queue_max=2)})
    gw = build_gateway(spec.model_copy(update={"security": sec}), engines_for(tmp_path), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    await gw.guard.start()
    release, stuck = stall_audit(gw)
    chat = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}

    def shown(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("aigrid_audit_queue_")]

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            assert (await c.post("/v1/chat/completions", json=chat)).status_code == 200  # taken by the stuck writer
            for _ in range(1000):
                if stuck.is_set():
                    break
                await asyncio.sleep(0.01)
            assert stuck.is_set()
            assert shown((await c.get("/metrics")).text) == ["aigrid_audit_queue_waiting 0.0",
                                                            "aigrid_audit_queue_limit 2.0"]
            assert (await c.post("/v1/chat/completions", json=chat)).status_code == 200  # waits: 1 of 2
            assert gw.metrics.audit_waiting._value.get() == 1  # as the request closed, before any scrape
            assert (await c.post("/v1/chat/completions", json=chat)).status_code == 200  # 2 of 2: full
            assert shown((await c.get("/metrics")).text) == ["aigrid_audit_queue_waiting 2.0",
                                                            "aigrid_audit_queue_limit 2.0"]
            refused = await c.post("/v1/chat/completions", json=chat)
            assert refused.json()["error"]["code"] == "audit_unavailable"
            release.set()
            await gw.guard.audit.flush()
            assert shown((await c.get("/metrics")).text) == ["aigrid_audit_queue_waiting 0.0",
                                                            "aigrid_audit_queue_limit 2.0"]
    finally:
        release.set()
        await gw.guard.stop()


async def test_an_unexpected_500_is_counted_on_every_route_by_its_code(
        client: httpx.AsyncClient, gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug of ours (an exception that is not an ApiError) answered 500 internal_error was counted nowhere in
    aigrid_requests_rejected_total, on a model route or an audited call (files, models, ...), while their 503s were:
    now the one rule (routes.refused): what the grid caused, 429, 5xx and such a 500, counted on every route, once."""

    def count(code: str) -> float:
        return gateway.metrics.rejected.labels(code)._value.get()

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway.guard, "admit_call", broken)
    r = await client.get("/v1/models")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error", r.text
    assert count("internal_error") == 1
    monkeypatch.setattr(gateway.guard, "admit", broken)
    r = await chat(client, "Tokyo")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error", r.text
    assert count("internal_error") == 2
    monkeypatch.undo()
    assert (await chat(client, "Tokyo")).status_code == 200 and count("internal_error") == 2
