"""Polls every engine's health and Prometheus metrics into the telemetry store, concurrently, on an interval.

Each endpoint on its own loop: one whose probes do not answer (a site whose network went dark, an engine that
drips its /metrics; each GET may take the probe timeout) holds no other endpoint's next scrape. Started and stopped
by the app's lifespan; never from a constructor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import TypeVar

from aigrid.core.types import Endpoint
from aigrid.engines.openai_compat import ModelCard
from aigrid.engines.protocol import Engine
from aigrid.engines.wrapped import WrappedEngine
from aigrid.errors import EngineError, EngineKeyRefused, EngineUnavailable
from aigrid.gateway.metrics import CIRCUIT_VALUE, GatewayMetrics
from aigrid.gateway.observe import MetricsWrites
from aigrid.logs import fields
from aigrid.telemetry.periodic import Periodic
from aigrid.telemetry.store import TelemetryStore, bounded_stats

log = logging.getLogger("aigrid.scraper")

NAME_TRIES = 3
"""Healthy scrapes at which an engine's GET /v1/models (_name_check), or llama-server's GET /props (_context_check),
that cannot be reached (closed, or no whole answer within the probe timeout) is asked; then one INFO line and no more
until the endpoint is found down (_recheck): each try holds the endpoint's next scrape up to the probe timeout."""
NAMES, CONTEXT = "names", "context"
"""The checks of what an engine says of itself, each done once an endpoint when it is healthy, and again when it is
healthy after a scrape that found it down (_recheck)."""
CONTEXT_UNREAD = ("endpoint %s: its engine's context was not read (%s); the context %d the spec declares for its model "
                  "is not checked")
"""The INFO line of an engine that does not say the context it holds (the endpoint, why, the spec's context)."""
CONTEXT_FLAGS: Mapping[str, str] = MappingProxyType({
    "vllm": "vllm serve --max-model-len {n}",
    "sglang": "SGLang --context-length {n}",
})
"""Engine kinds whose GET /v1/models gives each served model's context (its card's `max_model_len`: vLLM's own
max_model_len, SGLang's context_len), read with the model names (_name_check), and the flag that sets it. llama-server
says its slots' context in GET /props (_context_check); TGI, Ollama and hosted providers are not asked."""
T = TypeVar("T")


class Scraper:
    def __init__(self, store: TelemetryStore, engines: Mapping[str, Engine], endpoints: tuple[Endpoint, ...],
                 metrics: GatewayMetrics, interval_s: float, served: Mapping[str, str] | None = None,
                 contexts: Mapping[str, int] | None = None, *, written: MetricsWrites | None = None) -> None:
        """`served`: endpoint id -> the model name the gateway sends its engine (its served_model, else its model);
        `contexts`: endpoint id -> its model's `context` in the spec, what the gateway checks prompts against;
        `written`: the gateway's guarded metrics writes (Proxy.written; a scraper's own without one), each gauge
        written in its own call: a write that fails (a multiprocess metrics file that cannot grow on a full disk) is
        counted and logged, rate-limited, and the scrape goes on. Written bare until the thirty-first session, one
        raised out of the scrape, skipping the rest: an endpoint found down kept its checks done (_recheck), so its
        engine restarted with another context or name was not read again; a healthy one's checks and queue gauge were
        skipped while the writes failed."""
        self._store = store
        self._engines = engines
        self._endpoints = endpoints
        self._metrics = metrics
        self._written = written if written is not None else MetricsWrites()
        self._served = dict(served or {})
        self._contexts = dict(contexts or {})
        self._checked: dict[str, set[str]] = {NAMES: set(), CONTEXT: set()}
        """Check -> the endpoints it was done for (read, or said unread): once each."""
        self._tries: dict[tuple[str, str], int] = {}
        """(check, endpoint id) -> the healthy scrapes at which what it reads could not be reached (up to NAME_TRIES)."""
        self._periodic = [Periodic(partial(self._scrape, e), interval_s, f"aigrid-scraper-{e.id}") for e in endpoints]

    async def scrape_once(self) -> None:
        """Every endpoint scraped once now, concurrently, and no task left running: the same `_scrape` as each
        loop's tick (start()'s first round is this, each endpoint on its own loop). The seam for a gateway whose
        lifespan is not run (the tests' gateways: telemetry fresh on demand, with no background loop to stop or to
        race with); only the supervision differs: an unexpected error here raises, where a loop logs it."""
        await asyncio.gather(*(self._scrape(e) for e in self._endpoints))

    async def _scrape(self, endpoint: Endpoint) -> None:
        engine = self._engines[endpoint.id]
        labels = (endpoint.site_id, endpoint.id)
        try:
            probe_start = time.perf_counter()
            healthy = await engine.health()
            if healthy:  # the health probe is a trivial handler: its time is the round trip to the site
                self._store.record_rtt(endpoint.id, time.perf_counter() - probe_start)
            stats = await engine.stats() if healthy else None
        except Exception as e:  # noqa: BLE001 -- logged: one engine's scrape never fails the others' (nor a start)
            if not isinstance(e, EngineError):
                log.warning("endpoint %s: unexpected error reading its health or metrics", endpoint.id, exc_info=e)
            why = str(e) or type(e).__name__
            if self._store.state(endpoint.id).healthy:
                log.warning("endpoint %s is now UNHEALTHY: %s", endpoint.id, why,
                            extra=fields(endpoint=endpoint.id, healthy=False, reason=why))
            self._store.record_scrape(endpoint.id, False, None, reason=why)
            self._gauges(endpoint, healthy=False)
            self._recheck(endpoint.id)
            return
        was_healthy = self._store.state(endpoint.id).healthy
        reason = "" if healthy else "health check failed"  # an engine's probe that says why raises (above)
        self._store.record_scrape(endpoint.id, healthy, stats, reason=reason)
        if was_healthy != healthy:
            log.warning("endpoint %s is now %s", endpoint.id, "healthy" if healthy else f"UNHEALTHY: {reason}",
                        extra=fields(endpoint=endpoint.id, healthy=healthy, **({"reason": reason} if reason else {})))
        self._gauges(endpoint, healthy=healthy)
        if not healthy:
            self._recheck(endpoint.id)
        waiting = bounded_stats(stats).waiting if stats is not None else None  # as telemetry reads it, not raw
        if waiting is not None:
            self._written(f"the scrape of {endpoint.id}", lambda: self._metrics.queue.labels(*labels).set(waiting))
        if healthy and not all(endpoint.id in done for done in self._checked.values()):
            while isinstance(engine, WrappedEngine):  # a llamacpp endpoint's StopWordEngine (gateway/wiring.py)
                engine = engine.inner
            if endpoint.id not in self._checked[NAMES]:
                await self._name_check(endpoint, engine)
            if endpoint.id not in self._checked[CONTEXT]:
                await self._context_check(endpoint, engine)

    def _gauges(self, endpoint: Endpoint, *, healthy: bool) -> None:
        """The endpoint's health and circuit gauges, each through `written` (a failure logged, the scrape going on)."""
        labels, what = (endpoint.site_id, endpoint.id), f"the scrape of {endpoint.id}"
        circuit = CIRCUIT_VALUE[self._store.state(endpoint.id).circuit]
        self._written(what, lambda: self._metrics.healthy.labels(*labels).set(1 if healthy else 0))
        self._written(what, lambda: self._metrics.circuit.labels(*labels).set(circuit))

    def _recheck(self, endpoint_id: str) -> None:
        """An endpoint seen down has its checks done again once it is healthy: its engine may have been restarted with
        other flags (another --ctx-size or --parallel, another --alias), which a check done once for the process's life
        never saw (review RV2, twenty-ninth session)."""
        for check, done in self._checked.items():
            done.discard(endpoint_id)
            self._tries.pop((check, endpoint_id), None)

    async def _read_once(self, check: str, endpoint: Endpoint, read: Callable[[], Awaitable[T]],
                         unread: str, *args: object) -> T | None:
        """What `read()` answers for a `check` done once an endpoint; None when it was not read: unreachable just now
        (asked again at its next healthy scrapes, NAME_TRIES in all), or else one INFO line, `unread` % (the endpoint,
        why, *args), and the check is done. The engine refusing the gateway's key (EngineKeyRefused: the path, and the
        key's setting) is that line at once, as a WARNING, not asked again: on an engine whose /health and /metrics
        answer without a key (vLLM keys its /v1 routes only) the endpoint stays healthy, and this is the sign of a
        wrong key before its requests fail. llama-server (0.3.36) keys /metrics too, so there the scrape's stats read
        is refused first and the endpoint is UNHEALTHY with that reason, its checks not run (docs/engines.md).
        Never raises: a check never fails a scrape."""
        try:
            answer = await read()
        except Exception as e:  # noqa: BLE001 -- logged: the check never fails a scrape
            tries = self._tries[check, endpoint.id] = self._tries.get((check, endpoint.id), 0) + 1
            refused = isinstance(e, EngineKeyRefused)
            if isinstance(e, EngineUnavailable) and not refused and tries < NAME_TRIES:
                return None  # unreachable just now: asked again at its next healthy scrape
            self._checked[check].add(endpoint.id)
            log.log(logging.WARNING if refused else logging.INFO, unread, endpoint.id, str(e) or type(e).__name__,
                    *args, extra=fields(endpoint=endpoint.id))
            return None
        self._checked[check].add(endpoint.id)
        return answer

    async def _name_check(self, endpoint: Endpoint, engine: Engine) -> None:
        """Once an endpoint is first healthy: a warning, once, when its engine does not serve the name the gateway
        sends it (GET /v1/models). The engine's answers carry its own name in `model`, which the gateway passes to the
        client as the engine wrote it (the relay does not read a stream's chunks to rewrite it, docs/engines.md): a
        llama-server started without --alias answered with its GGUF file's path (/home/.../SmolLM2-135M-Instruct.
        Q4_1.gguf), the site's file system shown to every client; vLLM and SGLang refuse a name they do not serve.
        The same read gives a vLLM or SGLang engine's context for the name (_card_context): no other request."""
        served_models = getattr(engine, "served_models", None)  # engines that speak OpenAI's API over HTTP
        if served_models is None:
            self._checked[NAMES].add(endpoint.id)
            return
        name = self._served.get(endpoint.id, endpoint.model)
        kind = getattr(engine, "kind", None)
        declared = self._contexts.get(endpoint.id)
        if kind in CONTEXT_FLAGS and declared is not None:  # its context is read from the same list: unchecked too
            models = await self._read_once(NAMES, endpoint, served_models, "endpoint %s: its engine's model names were "
                                           "not read (%s); the name %r it is sent is not checked, nor the context %d "
                                           "the spec declares for its model", name, declared)
        else:
            models = await self._read_once(NAMES, endpoint, served_models, "endpoint %s: its engine's model names were "
                                           "not read (%s); the name %r it is sent is not checked", name)
        if models is None:
            return
        if name in models:
            self._card_context(endpoint, kind, name, models)
            return
        ids = list(models)
        shown = ", ".join(repr(i[:200]) for i in ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        if endpoint.engine == "openai":  # a hosted provider: no --alias to give, and some serve names they do not list
            log.warning("endpoint %s: the provider lists %s (GET /v1/models), not %r, the name the gateway sends it: "
                        "if it refuses the requests, set the endpoint's served_model to the provider's name for the "
                        "model", endpoint.id, shown or "no model", name, extra=fields(endpoint=endpoint.id, served=name))
            return
        log.warning("endpoint %s: its engine serves %s (GET /v1/models), not %r, the name the gateway sends it: "
                    "vLLM and SGLang refuse the requests, llama-server answers them with its own name in `model`, "
                    "which clients get as written (without --alias, its GGUF file's path: the site's file system "
                    "shown to every client). Start the engine under the name %r (llama-server --alias %s; vLLM, "
                    "SGLang --served-model-name %s), or, for vLLM or SGLang, set the endpoint's served_model to a name it "
                    "serves", endpoint.id, shown or "no model", name, name, name, name,
                    extra=fields(endpoint=endpoint.id, served=name))

    def _card_context(self, endpoint: Endpoint, kind: object, name: str, models: Mapping[str, ModelCard]) -> None:
        """A vLLM or SGLang engine's context for the name it is sent, from its GET /v1/models' card for it (read by
        _name_check), against the spec's: the lines of _compare_context. A LoRA adapter's card gives no max_model_len
        but names its base model's card in `parent`: the adapter is served in the engine's one context, so the
        parent's max_model_len is read when the parent is listed. One INFO line when neither gives one (an older
        build, a proxy in front, a parent not listed)."""
        declared = self._contexts.get(endpoint.id)
        if declared is None or not isinstance(kind, str) or kind not in CONTEXT_FLAGS:
            return
        card = models[name]
        held, of = card.max_model_len, repr(name)
        parent = models.get(card.parent) if held is None and card.parent is not None else None
        if parent is not None and parent.max_model_len is not None:
            held, of = parent.max_model_len, f"{card.parent!r}, the parent of {name!r}"
        if held is None:
            log.info(CONTEXT_UNREAD, endpoint.id, f"GET /v1/models gives no max_model_len for {name!r}", declared,
                     extra=fields(endpoint=endpoint.id))
            return
        self._compare_context(endpoint, held, "a request", f"GET /v1/models: max_model_len {held} for {of}",
                              CONTEXT_FLAGS[kind].format(n=declared))

    async def _context_check(self, endpoint: Endpoint, engine: Engine) -> None:
        """Once a llama.cpp endpoint is first healthy: its engine's context a slot (GET /props) against the spec's
        (_compare_context). The other kinds' is read with their model names (_card_context), or not at all."""
        declared = self._contexts.get(endpoint.id)
        slot_context = getattr(engine, "slot_context", None)
        if declared is None or slot_context is None or getattr(engine, "kind", None) != "llamacpp":
            self._checked[CONTEXT].add(endpoint.id)
            return
        read = await self._read_once(CONTEXT, endpoint, slot_context, CONTEXT_UNREAD, declared)
        if read is None:
            return
        held, slots = read
        total = slots or endpoint.max_concurrency
        self._compare_context(endpoint, held, "a slot", f"GET /props: n_ctx {held}, total_slots "
                              f"{slots if slots is not None else 'not given'}", f"aigrid node --context {declared}; "
                              f"llama-server --ctx-size {declared * total} --parallel {total}")

    def _compare_context(self, endpoint: Endpoint, held: int, each: str, said: str, flags: str) -> None:
        """The one line of an engine whose context (`held` tokens `each`: a slot, a request; `said` where it says so)
        is not the spec's `context` for its model, which the gateway checks prompts against (context_window.py), as do
        an agent loop's context_limit and the Responses API's compaction. Fewer: a warning, with the fix (the spec's
        context down, or the engine's up: `flags`): a prompt between the two passed the gateway and met the engine's
        own 400 (an external llama-server started with --ctx-size 4096 --parallel 4 holds 1024 a slot). More: an INFO
        line, the spec could declare more: the gateway refuses prompts between the two that the engine would serve."""
        declared = self._contexts[endpoint.id]
        extra = fields(endpoint=endpoint.id, engine_context=held, context=declared)
        if held < declared:
            log.warning("endpoint %s: its engine holds %d tokens %s (%s), fewer than the %d the spec declares for model "
                        "%r (its `context`): the gateway lets through prompts the engine refuses. Set models.%s.context "
                        "to %d, or start the engine with %d tokens %s (%s)", endpoint.id, held, each, said, declared,
                        endpoint.model, endpoint.model, held, declared, each, flags, extra=extra)
        elif held > declared:
            log.info("endpoint %s: its engine holds %d tokens %s (%s), more than the %d the spec declares for model %r "
                     "(its `context`): the gateway refuses prompts between the two that the engine would serve. "
                     "models.%s.context could be up to %d, if the model's other endpoints hold as many", endpoint.id,
                     held, each, said, declared, endpoint.model, endpoint.model, held, extra=extra)

    async def start(self) -> None:
        """Every endpoint scraped once (the first request sees them), then each on its own interval."""
        await asyncio.gather(*(p.start() for p in self._periodic))

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self._periodic))
