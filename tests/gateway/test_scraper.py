"""The scraper's own metrics take an engine's numbers as telemetry reads them (telemetry/store.bounded_stats); one
engine that does not answer its probes holds no other endpoint's scrape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from aigrid.gateway.app import Gateway, build_gateway
from aigrid.gateway.scraper import NAME_TRIES, Scraper
from aigrid.gateway.wiring import build_engines, upstream
from aigrid.spec import load
from tests.gateway import hostile_engine as H
from tests.gateway.conftest import spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.hostile_grid import grid, sane


async def test_the_waiting_gauge_takes_the_engines_number_bounded(gateway: Gateway,
                                                                  fakes: dict[str, FakeEngine]) -> None:
    """The aigrid_endpoint_waiting gauge was set from the engine's raw number: an engine reporting 1e300 requests
    waiting put 1e300 on /metrics (telemetry itself caps it since 2a5591d)."""
    engine = fakes["fra-smollm2"]
    engine.stats_value = replace(engine.stats_value, waiting=10**300)
    await gateway.scraper.scrape_once()
    value = gateway.metrics.registry.get_sample_value("aigrid_endpoint_waiting",
                                                       {"site": "fra", "endpoint": "fra-smollm2"})
    assert value is not None and value <= 1_000_000


async def test_an_engine_that_does_not_answer_its_probe_delays_no_other_endpoint_s_scrape(
        gateway: Gateway, fakes: dict[str, FakeEngine]) -> None:
    """S (twenty-third session): every endpoint's scrape was one tick (awaited together), so an engine whose probe
    does not answer (a site whose network went dark, or an engine that drips its /metrics: each GET up to the
    probe timeout, 2 s, health then metrics then power) held every other endpoint's next scrape until it gave up:
    their health and load refreshed every few seconds instead of every interval. Each endpoint is now scraped on
    its own loop."""
    stuck, scraped = asyncio.Event(), {ep: 0 for ep in fakes}

    async def hangs() -> bool:
        await stuck.wait()
        return True

    def counting(ep: str, probe: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
        async def health() -> bool:
            scraped[ep] += 1
            return await probe()
        return health

    fakes["fra-smollm2"].health = hangs  # type: ignore[method-assign]
    for ep, engine in fakes.items():
        engine.health = counting(ep, engine.health)  # type: ignore[method-assign]
    scraper = Scraper(gateway.store, fakes, load.endpoints(gateway.spec), gateway.metrics, 0.01)
    start = asyncio.ensure_future(scraper.start())
    try:
        others = [ep for ep in scraped if ep != "fra-smollm2"]
        for _ in range(3000):  # polled, up to 30 s: a loaded machine runs the loops late, not fewer of them
            if all(scraped[ep] >= 5 for ep in others):
                break
            await asyncio.sleep(0.01)
        assert all(scraped[ep] >= 5 for ep in others), scraped  # before: 1 each, for as long as one hangs
        assert scraped["fra-smollm2"] == 1
    finally:
        stuck.set()
        await start
        await scraper.stop()


async def test_the_unhealthy_line_says_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An `openai` endpoint whose models path answers 404 (a url whose base is wrong: until 6 Dec 2026 one ending in
    /v1, asked /v1/v1/models) was logged "endpoint X is now UNHEALTHY" and nothing more: the adapter's health probe
    said False, the 404 unsaid. The probe now says why, and the scraper's line carries it."""
    with caplog.at_level("WARNING", logger="aigrid.scraper"):
        async for g in grid(tmp_path, sane, kind="openai"):  # the engines serve GET /health and /metrics only
            assert not g.gw.store.snapshot().state("nrt-smollm2").healthy
    lines = [r for r in caplog.records if r.name == "aigrid.scraper" and "UNHEALTHY" in r.getMessage()]
    assert lines, caplog.text
    for line in lines:
        assert "/v1/models answered HTTP 404 (no such path there" in line.getMessage(), line.getMessage()
        assert "answered HTTP 404" in line.aigrid_fields["reason"]  # type: ignore[attr-defined]


async def test_an_engine_without_a_reason_is_unhealthy_saying_its_check_failed(
        gateway: Gateway, fakes: dict[str, FakeEngine], caplog: pytest.LogCaptureFixture) -> None:
    await gateway.scraper.scrape_once()
    fakes["fra-smollm2"].down = True
    with caplog.at_level("WARNING", logger="aigrid.scraper"):
        await gateway.scraper.scrape_once()
    assert [r.getMessage() for r in caplog.records if r.name == "aigrid.scraper"] == [
        "endpoint fra-smollm2 is now UNHEALTHY: health check failed"]


GGUF = "/home/op/models/SmolLM2-135M-Instruct.Q4_1.gguf"


async def _named_scrapes(tmp_path: Path, models: H.Script, kind: str = "vllm", scrapes: int = 2,
                         asked: list[int] | None = None, props: H.Script | None = None,
                         props_asked: list[int] | None = None,
                         before: Callable[[int, H.HostileEngine], None] | None = None,
                         records: list[logging.LogRecord] | None = None) -> list[str]:
    """The scraper's lines (INFO and up) over `scrapes` scrapes of the demo grid, every endpoint of `kind` on one
    engine whose GET /v1/models answers `models` (each GET counted in `asked`) and GET /props `props` (counted in
    `props_asked`; None: a 404), its adapters built as a gateway builds them (build_engines: a llamacpp endpoint's
    is a StopWordEngine around its OpenAICompatEngine). `before(i, engine)` runs before scrape i (0 first); `records`
    gets the lines' records (their levels)."""
    engine = H.HostileEngine(sane)
    count = asked if asked is not None else [0]
    props_count = props_asked if props_asked is not None else [0]

    def listing() -> H.Script:
        count[0] += 1
        return models

    def properties() -> H.Script:
        props_count[0] += 1
        return props if props is not None else H.whole(b"", 404)

    engine.gets["/v1/models"] = listing
    engine.gets["/props"] = properties
    await engine.start()
    up = upstream()
    spec = spec_in(tmp_path)
    spec = spec.model_copy(update={"endpoints": [e.model_copy(update={"engine": kind, "url": engine.url})
                                                 for e in spec.endpoints]})
    gw = build_gateway(spec, build_engines(spec, {}, up))
    logger = logging.getLogger("aigrid.scraper")
    seen: list[str] = []
    handler = logging.Handler(logging.INFO)
    kept = records if records is not None else []
    handler.emit = lambda r: (seen.append(r.getMessage()), kept.append(r))  # type: ignore[method-assign]
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        for i in range(scrapes):
            if before is not None:
                before(i, engine)
            await gw.scraper.scrape_once()
        assert all(gw.store.snapshot().state(e.id).healthy for e in spec.endpoints)
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)
        await up.aclose()
        await engine.stop()
    return seen


def _listing(*ids: str, max_model_len: int | None = None) -> H.Script:
    """A model list of `ids`, each card with `max_model_len` when given (as vLLM's and SGLang's say their context)."""
    said = {} if max_model_len is None else {"max_model_len": max_model_len}
    return H.whole(orjson.dumps({"object": "list", "data": [{"id": i, "object": "model", **said} for i in ids]}))


@pytest.mark.parametrize("kind", ["vllm", "openai", "llamacpp"])
async def test_an_engine_serving_another_name_than_the_gateway_sends_is_warned_of_once(
        tmp_path: Path, kind: str) -> None:
    """A llama-server started without --alias answers every request with its GGUF file's path in `model`, which the
    gateway passed to clients (the site's file system shown to them) and nothing told the operator (P, twenty-eighth
    session); vLLM refuses a name it does not serve. Now the scraper reads each engine's GET /v1/models once it is
    healthy and warns, once an endpoint, naming the endpoint, both names and the fix. A llamacpp endpoint's adapter
    is wrapped (StopWordEngine, gateway/wiring.py), which has no served_models: until review RV6 its check was skipped,
    the llama-server the warning is for never checked."""
    lines = await _named_scrapes(tmp_path, _listing(GGUF), kind)
    spec = spec_in(tmp_path)
    warned = [line for line in lines if "GET /v1/models" in line]
    assert len(warned) == len(spec.endpoints), lines  # one for each endpoint, not one a scrape
    for e in spec.endpoints:
        name = e.served_model or e.model
        line = next(line for line in warned if line.startswith(f"endpoint {e.id}:"))
        assert repr(GGUF) in line and repr(name) in line, line
        if kind == "openai":  # a hosted provider: its own names, no engine to start under another (lead, RV6)
            assert "served_model" in line and "--alias" not in line, line
        else:
            assert f"--alias {name}" in line and f"--served-model-name {name}" in line, line


async def test_an_engine_serving_the_name_it_is_sent_is_not_warned_of(tmp_path: Path) -> None:
    endpoints = spec_in(tmp_path).endpoints
    names = {e.served_model or e.model for e in endpoints}
    asked = [0]
    lines = await _named_scrapes(tmp_path, _listing("other", *names, max_model_len=8192), asked=asked)
    assert not [line for line in lines if "/v1/models" in line], lines
    assert asked[0] == len(endpoints)  # read (once an endpoint, over 2 scrapes), not left unchecked


@pytest.mark.parametrize("models, why", [
    (H.whole(b"<html>no</html>", 200, "text/html"), "answered no JSON"),
    (H.whole(b'{"data": [' + b'{"id": "m"},' * 1_000_000 + b'{}]}'), "answered more than 1048576 bytes"),
])
async def test_an_engine_without_a_model_list_is_said_once_and_stays_healthy(
        tmp_path: Path, models: H.Script, why: str) -> None:
    lines = await _named_scrapes(tmp_path, models)
    said = [line for line in lines if "model names were not read" in line]
    assert len(said) == len(spec_in(tmp_path).endpoints) and why in said[0], lines


async def test_an_engine_whose_model_list_cannot_be_reached_is_asked_a_few_times_then_said_once(
        tmp_path: Path) -> None:
    """An unreachable GET /v1/models (closed unanswered; or hanging: each read up to the probe timeout, 2 s) was
    asked again at every healthy scrape, for ever and unsaid, each time holding the endpoint's next scrape that
    long (Periodic sleeps after its tick). Now NAME_TRIES scrapes, then one INFO line an endpoint."""
    asked = [0]
    lines = await _named_scrapes(tmp_path, [H.CLOSE], scrapes=2 * NAME_TRIES + 2, asked=asked)
    endpoints = len(spec_in(tmp_path).endpoints)
    said = [line for line in lines if "model names were not read" in line]
    assert len(said) == endpoints and "cannot reach" in said[0], lines
    # asked at NAME_TRIES scrapes, each at most once more (a closed pooled connection is asked again): not fewer
    assert NAME_TRIES * endpoints <= asked[0] <= 2 * NAME_TRIES * endpoints, asked


def _props(n_ctx: object, total_slots: object = 2) -> H.Script:
    """llama-server's GET /props, as this project's build (0.3.36) answers it, cut to what the check reads."""
    return H.whole(orjson.dumps({"default_generation_settings": {"params": {"temperature": 0.8}, "n_ctx": n_ctx},
                                 "total_slots": total_slots, "model_alias": "smollm2-135m"}))


async def test_a_llamacpp_engine_holding_fewer_tokens_a_slot_than_the_spec_declares_is_warned_of_once(
        tmp_path: Path) -> None:
    """The gateway checks a prompt against the spec's `context` for its model (8192 in the demo) and trusted it: an
    external llama-server holding fewer tokens a slot (--ctx-size 4096 --parallel 4: 1024) refused, in its own words,
    every prompt between the two that the gateway had let through, and nothing told the operator. Now the scraper
    reads llama-server's GET /props once an endpoint is first healthy and warns, once an endpoint, naming the
    endpoint, both numbers and what to change."""
    spec = spec_in(tmp_path)
    asked = [0]
    lines = await _named_scrapes(tmp_path, _listing("smollm2-135m"), "llamacpp", scrapes=3,
                                 props=_props(1024, 4), props_asked=asked)
    warned = [line for line in lines if "GET /props" in line]
    assert len(warned) == len(spec.endpoints), lines  # one for each endpoint, not one a scrape
    assert asked[0] == len(spec.endpoints)
    for e in spec.endpoints:
        declared = spec.models[e.model].context
        line = next(line for line in warned if line.startswith(f"endpoint {e.id}:"))
        assert "holds 1024 tokens a slot" in line and f"the {declared} the spec declares" in line, line
        assert f"models.{e.model}.context to 1024" in line and f"aigrid node --context {declared}" in line, line
        assert f"--ctx-size {declared * 4} --parallel 4" in line, line


async def test_a_llamacpp_engine_holding_the_declared_context_is_read_once_and_not_said(tmp_path: Path) -> None:
    spec = spec_in(tmp_path)
    assert {m.context for m in spec.models.values()} == {8192}
    asked = [0]
    lines = await _named_scrapes(tmp_path, _listing("smollm2-135m"), "llamacpp", props=_props(8192),
                                 props_asked=asked)
    assert not [line for line in lines if "/props" in line or "context" in line], lines
    assert asked[0] == len(spec.endpoints)  # read (once an endpoint, over 2 scrapes), not left unchecked


def _vllm_models(name: str, max_model_len: int | None, *loras: str) -> H.Script:
    """vLLM's GET /v1/models (vllm/entrypoints/openai/models/serving.py show_available_models, ModelCard; read in
    the 0.34.0 wheel): a card for each served name with the engine's max_model_len, and one for each LoRA adapter
    without it (null)."""
    permission = {"id": "modelperm-0c1d", "object": "model_permission", "created": 1733500000,
                  "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                  "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False, "organization": "*",
                  "group": None, "is_blocking": False}
    cards = [{"id": name, "object": "model", "created": 1733500000, "owned_by": "vllm",
              "root": "/models/SmolLM2-135M-Instruct", "parent": None, "max_model_len": max_model_len,
              "permission": [permission]}]
    cards += [{"id": lora, "object": "model", "created": 1733500000, "owned_by": "vllm", "root": f"/loras/{lora}",
               "parent": name, "max_model_len": None, "permission": [permission]} for lora in loras]
    return H.whole(orjson.dumps({"object": "list", "data": cards}))


def _sglang_models(name: str, context_len: int, *loras: str) -> H.Script:
    """SGLang's GET /v1/models (sglang/srt/entrypoints/http_server.py available_models, openai/protocol.py
    ModelCard; read in the 0.5.23 wheel): a card for its served name, max_model_len the model's context_len
    (--context-length), and with --enable-lora one for each adapter (root its path, parent the served name,
    max_model_len None). Its GET /get_model_info (/model_info) says no context (model_path, is_generation, ...)."""
    return H.whole(orjson.dumps({"object": "list", "data": [
        {"id": name, "object": "model", "created": 1733500000, "owned_by": "sglang", "root": name, "parent": None,
         "max_model_len": context_len}] + [
        {"id": lora, "object": "model", "created": 1733500000, "owned_by": "sglang", "root": f"/loras/{lora}",
         "parent": name, "max_model_len": None} for lora in loras]}))


@pytest.mark.parametrize("kind, models, flag", [
    ("vllm", _vllm_models("smollm2-135m", 4096), "vllm serve --max-model-len 8192"),
    ("sglang", _sglang_models("smollm2-135m", 4096), "SGLang --context-length 8192"),
])
async def test_a_vllm_or_sglang_engine_holding_fewer_tokens_than_the_spec_declares_is_warned_of_once(
        tmp_path: Path, kind: str, models: H.Script, flag: str) -> None:
    """N2: the context check read llama-server's GET /props only; a vLLM started with --max-model-len 4096 (or an
    SGLang with --context-length 4096) under a spec declaring 8192 refused every prompt between the two that the
    gateway let through, unsaid. Both give the context in GET /v1/models (each card's max_model_len), which the name
    check already reads: that same read (no other request) is now compared, one warning an endpoint."""
    spec = spec_in(tmp_path)
    asked, props_asked = [0], [0]
    lines = await _named_scrapes(tmp_path, models, kind, scrapes=3, asked=asked, props=_props(16),
                                 props_asked=props_asked)
    warned = [line for line in lines if "max_model_len" in line]
    assert len(warned) == len(spec.endpoints), lines  # one for each endpoint, not one a scrape
    assert asked[0] == len(spec.endpoints) and props_asked[0] == 0  # the names' one read, nothing more
    for e in spec.endpoints:
        line = next(line for line in warned if line.startswith(f"endpoint {e.id}:"))
        assert "holds 4096 tokens a request (GET /v1/models: max_model_len 4096 for 'smollm2-135m')" in line, line
        assert "fewer than the 8192 the spec declares" in line and f"models.{e.model}.context to 4096" in line, line
        assert f"start the engine with 8192 tokens a request ({flag})" in line, line


@pytest.mark.parametrize("kind, models, props, more", [
    ("vllm", _vllm_models("smollm2-135m", 32768), None, "holds 32768 tokens a request (GET /v1/models"),
    ("sglang", _sglang_models("smollm2-135m", 131072), None, "holds 131072 tokens a request (GET /v1/models"),
    ("llamacpp", _listing("smollm2-135m"), _props(131072), "holds 131072 tokens a slot (GET /props"),
])
async def test_an_engine_holding_more_than_the_spec_declares_is_said_in_one_info_line(
        tmp_path: Path, kind: str, models: H.Script, props: H.Script | None, more: str) -> None:
    """N2: an engine holding more than the spec's `context` was not said: the gateway refuses (its
    context_length_exceeded) prompts between the two that the engine would serve. One INFO line an endpoint now
    says the spec could declare more."""
    spec = spec_in(tmp_path)
    lines = await _named_scrapes(tmp_path, models, kind, scrapes=3, props=props)
    said = [line for line in lines if "context" in line]
    assert len(said) == len(spec.endpoints), lines
    for e in spec.endpoints:
        line = next(line for line in said if line.startswith(f"endpoint {e.id}:"))
        assert more in line and "more than the 8192 the spec declares" in line, line
        assert "the gateway refuses prompts between the two that the engine would serve" in line, line
        assert f"models.{e.model}.context could be up to {more.split()[1]}" in line, line


@pytest.mark.parametrize("kind, models", [
    ("vllm", _vllm_models("smollm2-135m", 8192)),
    ("sglang", _sglang_models("smollm2-135m", 8192)),
    ("openai", _vllm_models("smollm2-135m", 16)),  # a hosted provider's list is not read for a context
    ("llamacpp", _vllm_models("smollm2-135m", 16)),  # llama-server's context is its GET /props' (here 8192)
])
async def test_an_engine_holding_the_declared_context_or_not_asked_it_says_nothing_of_it(
        tmp_path: Path, kind: str, models: H.Script) -> None:
    lines = await _named_scrapes(tmp_path, models, kind, props=_props(8192))
    assert not [line for line in lines if "context" in line or "max_model_len" in line], lines


def _orphan_lora(name: str) -> H.Script:
    """A LoRA adapter's card (as _vllm_models') whose `parent` is not a listed id: nothing to read its context from."""
    return H.whole(orjson.dumps({"object": "list", "data": [
        {"id": name, "object": "model", "created": 1733500000, "owned_by": "vllm", "root": f"/loras/{name}",
         "parent": "/models/unlisted", "max_model_len": None}]}))


@pytest.mark.parametrize("models, why", [
    (_listing("smollm2-135m"), "GET /v1/models gives no max_model_len for 'smollm2-135m'"),  # an older build, a proxy
    (_orphan_lora("smollm2-135m"), "GET /v1/models gives no max_model_len for 'smollm2-135m'"),  # LoRA, no parent
])
async def test_a_vllm_engine_that_does_not_say_its_context_is_said_once_and_not_asked_props(
        tmp_path: Path, models: H.Script, why: str) -> None:
    """vLLM has no /props: it is not asked; a card without max_model_len (an older build's; a LoRA adapter's whose
    parent is not listed) gets the llama.cpp case's one INFO line."""
    asked = [0]
    lines = await _named_scrapes(tmp_path, models, "vllm", scrapes=3, props=_props(16), props_asked=asked)
    said = [line for line in lines if "context" in line]
    assert asked[0] == 0 and len(said) == len(spec_in(tmp_path).endpoints), lines
    assert f"context was not read ({why}); the context 8192 the spec declares" in said[0], said[0]


@pytest.mark.parametrize("kind, cards", [("vllm", _vllm_models), ("sglang", _sglang_models)])
@pytest.mark.parametrize("held, said", [
    (4096, "holds 4096 tokens a request (GET /v1/models: max_model_len 4096 for 'base', the parent of 'smollm2-135m')"),
    (32768, "holds 32768 tokens a request (GET /v1/models: max_model_len 32768 for 'base', the parent of"),
])
async def test_a_lora_adapters_context_is_its_parent_cards(
        tmp_path: Path, kind: str, cards: Callable[..., H.Script], held: int, said: str) -> None:
    """N4: the name the gateway sends may be a LoRA adapter's (vllm serve --enable-lora --lora-modules
    smollm2-135m=...): its card has no max_model_len but names its base card in `parent`, whose max_model_len the
    adapter is served in. Until now that was the 'context was not read' INFO line, the spec unchecked; the parent's
    context is now compared as the base card's would be: fewer, a warning; more, the INFO line."""
    spec = spec_in(tmp_path)
    records: list[logging.LogRecord] = []
    lines = await _named_scrapes(tmp_path, cards("base", held, "smollm2-135m"), kind, scrapes=3, records=records)
    said_lines = [r for r in records if "context" in r.getMessage()]
    assert len(said_lines) == len(spec.endpoints), lines
    assert not [line for line in lines if "not read" in line or "not checked" in line], lines
    for r in said_lines:
        assert said in r.getMessage(), r.getMessage()
        assert r.levelno == (logging.WARNING if held < 8192 else logging.INFO), r.getMessage()


@pytest.mark.parametrize("kind, checked", [("vllm", True), ("sglang", True), ("openai", False), ("llamacpp", False)])
async def test_a_model_list_not_read_says_the_context_is_unchecked_too_where_it_holds_it(
        tmp_path: Path, kind: str, checked: bool) -> None:
    """N4: vLLM's and SGLang's context is read from GET /v1/models' cards only (no /props): a list that cannot be read
    left it unchecked, and the only line said the name was not checked. That line now says the context too, for
    those kinds; a llama-server's context is read from its /props (its own line), a hosted provider's is not asked."""
    lines = await _named_scrapes(tmp_path, H.whole(b"not json"), kind, props=_props(8192))
    said = [line for line in lines if "model names were not read" in line]
    assert len(said) == len(spec_in(tmp_path).endpoints), lines
    assert all(("nor the context 8192 the spec declares for its model" in line) == checked for line in said), said


@pytest.mark.parametrize("props, why", [
    (None, "answered HTTP 404"),
    (_props("8192"), "answered no context"),
    (_props(0), "answered no context"),
    (H.whole(b"[1]"), "answered no JSON object"),
])
async def test_an_engine_that_does_not_say_its_context_is_said_once_and_stays_healthy(
        tmp_path: Path, props: H.Script | None, why: str) -> None:
    lines = await _named_scrapes(tmp_path, _listing("smollm2-135m"), "llamacpp", props=props)
    said = [line for line in lines if "context was not read" in line]
    assert len(said) == len(spec_in(tmp_path).endpoints) and why in said[0], lines
    assert "the context 8192 the spec declares for its model is not checked" in said[0], said[0]


async def test_an_engine_whose_context_cannot_be_reached_is_asked_a_few_times_then_said_once(tmp_path: Path) -> None:
    asked = [0]
    lines = await _named_scrapes(tmp_path, _listing("smollm2-135m"), "llamacpp", scrapes=2 * NAME_TRIES + 2,
                                 props=[H.CLOSE], props_asked=asked)
    endpoints = len(spec_in(tmp_path).endpoints)
    said = [line for line in lines if "context was not read" in line]
    assert len(said) == endpoints and "cannot reach" in said[0], lines
    # asked at NAME_TRIES scrapes, each at most once more (a closed pooled connection is asked again): not fewer
    assert NAME_TRIES * endpoints <= asked[0] <= 2 * NAME_TRIES * endpoints, asked


@pytest.mark.parametrize("status", [401, 403])
async def test_an_engine_refusing_the_key_on_its_model_list_is_warned_of_once_naming_the_key_setting(
        tmp_path: Path, status: int) -> None:
    """A wrong key (or none, to a keyed engine) was only INFO lines, "answered HTTP 401", while the endpoint stayed
    healthy. The checks' reads (GET /v1/models, llama-server's GET /props) now read 401/403 as health() does (the key
    refused, its setting named) and the scraper says it once an endpoint as a WARNING, without asking again. Run as
    vLLM, whose /health and /metrics answer without a key (it keys /v1 only), as the fake's do: there this line is
    the sign of a wrong key. A keyed llama-server refuses /metrics too (0.3.36), so its endpoint is UNHEALTHY first
    and these checks are not reached (docs/engines.md): a fake llamacpp engine refusing /props alone is no real one.
    The spec declares the model's context, read from the same list for vLLM: the line says it is not checked either."""
    asked, records = [0], []
    refusal = H.whole(b'{"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}}', status)
    lines = await _named_scrapes(tmp_path, refusal, "vllm", scrapes=NAME_TRIES + 1, asked=asked, records=records)
    endpoints = len(spec_in(tmp_path).endpoints)
    said = [r for r in records if "model names were not read" in r.getMessage()]
    assert len(said) == endpoints and all(r.levelno == logging.WARNING for r in said), lines
    assert f"/v1/models answered HTTP {status}" in said[0].getMessage(), lines
    assert "the engine asks for a key (set the endpoint's api_key_env" in said[0].getMessage(), lines
    assert "nor the context 8192 the spec declares for its model" in said[0].getMessage(), lines
    assert asked[0] == endpoints, asked  # said at once: a refused key is not asked NAME_TRIES times


async def test_an_engine_found_down_is_checked_again_once_it_is_healthy(tmp_path: Path) -> None:
    """Review RV2: the checks were done once for the gateway's life, so an external llama-server restarted with fewer
    tokens a slot (or without --alias) was never read again, and the prompts between the two met its own 400 unsaid.
    An endpoint a scrape finds down now has its checks done again at its next healthy scrape: here its engine holds
    the spec's 8192 a slot, goes down (503), and comes back at 1024 a slot: one warning an endpoint, then."""
    props = list(_props(8192))  # the script /props answers, changed in place at the restart

    def restart(i: int, engine: H.HostileEngine) -> None:
        if i == 1:
            engine.gets["/health"] = lambda: H.whole(b"loading", 503)
        elif i == 2:
            engine.gets["/health"] = lambda: H.whole(b"ok", content_type="text/plain")
            props[:] = _props(1024, 4)

    asked = [0]
    spec = spec_in(tmp_path)
    lines = await _named_scrapes(tmp_path, _listing("smollm2-135m"), "llamacpp", scrapes=4, props=props,
                                 props_asked=asked, before=restart)
    warned = [line for line in lines if "GET /props" in line]
    assert len(warned) == len(spec.endpoints) and "holds 1024 tokens a slot" in warned[0], lines
    assert asked[0] == 2 * len(spec.endpoints)  # once up, once back up: not at each healthy scrape
