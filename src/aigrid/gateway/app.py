"""build_app(): the gateway's ASGI application, wired from a grid spec and a set of engines.

The request pipeline, in order (routes.py): parse + validate -> tenant rules -> RequestInfo -> core
schedule -> proxy with failover -> usage and metrics. Background work (the scraper) is started and stopped
by the lifespan, never by a constructor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from aigrid.core.baselines import BASELINES, Router
from aigrid.core.scheduler import Scheduler
from aigrid.core.types import GeoPoint, Policy, Rng
from aigrid.core.urgency import parse_level
from aigrid.engines.protocol import Engine
from aigrid.errors import AigridError, ApiError
from aigrid.gateway.admission import Admission
from aigrid.gateway.agent_runtime import AgentRuntime
from aigrid.gateway.background import BackgroundRuns
from aigrid.gateway.batches import Batches, build_batches
from aigrid.gateway.cache_salt import KEY_PURPOSE as SALT_PURPOSE
from aigrid.gateway.cache_salt import SALTED_KINDS, CacheSalt
from aigrid.gateway.conversation_store import ConversationStore
from aigrid.gateway.conversations_api import ConversationsApi
from aigrid.gateway.decisions import DecisionLog
from aigrid.gateway.engine_body import ServingKinds, kinds_of_spec
from aigrid.gateway.envelope import api_error_handler, http_error_handler, internal_error_handler
from aigrid.gateway.guard import Guard
from aigrid.gateway.hub_client import HubClient
from aigrid.gateway.image_urls import ImageUrls
from aigrid.gateway.messages_api import MESSAGES_PATH, MessagesApi
from aigrid.gateway.metrics import GatewayMetrics
from aigrid.gateway.observe import MetricsWrites
from aigrid.gateway.parse_pool import ParsePool
from aigrid.gateway.proxy import FirstByteDeadline, Proxy, Sleep
from aigrid.gateway.response_store import ResponseStore
from aigrid.gateway.responses_api import RESPONSES_PATH, ResponsesApi
from aigrid.gateway.responses_socket import ResponsesSocket
from aigrid.gateway.routes import Routes, audited_route
from aigrid.gateway.scraper import Scraper
from aigrid.gateway.stores import Stores, build_stores
from aigrid.gateway.tracing import Tracing, build_tracing
from aigrid.rightsize.right_sizer import RightSizer
from aigrid.spec import load
from aigrid.spec.models import GridSpec
from aigrid.telemetry.shared import SharedState
from aigrid.telemetry.store import TelemetryStore
from aigrid.telemetry.sync import SharedSync

log = logging.getLogger("aigrid.gateway")


@dataclass
class Gateway:
    """Everything one gateway holds; the routes read it, tests poke it."""

    spec: GridSpec
    engines: Mapping[str, Engine]
    store: TelemetryStore
    scheduler: Scheduler
    policies: dict[str, Policy]
    tenant_policies: dict[str, str]
    """tenant -> its routing policy (scopes, quotas and firewall are the guard's)"""
    cities: dict[str, GeoPoint]
    known_models: frozenset[str]
    serving_kinds: ServingKinds
    """A model, a family or `auto` -> the engine kinds that may serve it (engine_body.kinds_of_spec of `spec`, built
    once, as `known_models`: the spec is fixed once the gateway is built; a test that replaces `spec` replaces
    this too)."""
    decisions: DecisionLog
    metrics: GatewayMetrics
    proxy: Proxy
    scraper: Scraper
    rng: Rng
    clock: Callable[[], float]
    guard: Guard
    agents: AgentRuntime
    location: GeoPoint | None = None
    sync: SharedSync | None = None
    tracing: Tracing = field(default_factory=Tracing)
    """OpenTelemetry spans per request and attempt; off (no cost) unless configured (tracing.py)."""
    responses: ResponseStore = field(default_factory=ResponseStore)
    """Stored Responses API answers, per tenant and jurisdiction (response_store.py)."""
    conversations: ConversationStore = field(default_factory=ConversationStore)
    """Conversations API conversations, per tenant, each bound to one jurisdiction (conversation_store.py)."""
    stores: Stores | None = None
    """What the Responses and Conversations routes call (stores.py): the two above, or with workers the hub,
    and the Redis of each jurisdiction named in `gateway.stores`; built by build_app (after `hub` is set)."""
    background: BackgroundRuns = field(default_factory=BackgroundRuns)
    """The background Responses runs (background.py), stopped by the lifespan before what they need."""
    batches: Batches | None = None
    """The Files and Batch APIs and this process's batch runner (batches.py); built by build_app."""
    images: ImageUrls = field(default_factory=ImageUrls)
    """Image parts given by URL: fetched from public addresses and sent inline (image_urls.py)."""
    parses: ParsePool = field(default_factory=ParsePool)
    """The threads that parse long request bodies and collect their texts (parse_pool.py), apart from asyncio's
    default pool (the Files and Batch APIs' disk work); joined by the lifespan, last."""
    right_sizer: RightSizer | None = None
    """Per-prompt model choice for model "auto" (tenants with right_size; aigrid.rightsize)."""
    hub: HubClient | None = None
    """A gateway worker's hub (`--workers N`): decision records shared with the other workers (hub.py)."""
    workers: int = 1
    """The gateway processes this one is a worker of (`--workers N`; 1 alone): a per-tenant bound of what their one
    shared store serves uncounted (readers of event logs, responses_api.MAX_FOLLOWERS_PER_TENANT) is split among
    them, so that a tenant spreading over the workers gets the bound, not N times it."""
    admission: Admission = field(init=False)
    """The admission queue: requests wait there for capacity, by urgency and fair share (admission.py)."""
    tenant_levels: dict[str, int] = field(init=False)
    """tenant -> the urgency level of its requests that name none (spec tenants.NAME.priority.default)."""
    baselines: dict[str, Router] = field(default_factory=dict)
    """The peers' routing formulas (core.baselines), selectable per request with x-aigrid-policy for an A/B
    against aigrid's own policies on live traffic."""
    stopping: bool = False
    """Set at the process's first SIGINT/SIGTERM (stopping.GatewayServer): a WebSocket the server closes then was
    closed by the stop, not by its client (responses_socket.py)."""
    startup_error: BaseException | None = None
    """Why the lifespan's start failed (a document not found, an MCP server that would not start, an audit log
    that cannot be opened): what started before it is stopped, and the server reports it in one line
    (server.py, workers.py: `startup_problem`), never as a traceback."""

    def __post_init__(self) -> None:
        a = self.spec.gateway.admission
        self.admission = Admission(a.rules(), self.clock, self.metrics, a.enabled, a.poll_interval_s,
                                   {n: t.priority.weight for n, t in self.spec.tenants.items()},
                                   reserve=self.store.reserve, unreserve=self.store.cancel_reservation,
                                   local=self.store.tenants_local, remote=lambda: self.store.tenants_remote,
                                   written=self.proxy.written)  # a failing metrics write: logged, never the queue's
        self.tenant_levels = {n: parse_level(t.priority.default) for n, t in self.spec.tenants.items()}

    def router(self, policy_name: str) -> Router:
        return self.baselines.get(policy_name, self.scheduler)

    def share(self, bound: int) -> int:
        """This process's share of a bound the whole gateway keeps (`workers`): at least one."""
        return max(1, bound // max(1, self.workers))


def tenant_policies(spec: GridSpec) -> dict[str, str]:
    return {name: t.policy or spec.gateway.default_policy for name, t in spec.tenants.items()}


def build_gateway(spec: GridSpec, engines: Mapping[str, Engine], *, clock: Callable[[], float] = time.monotonic,
                  rng: Rng | None = None, sleep: Sleep = asyncio.sleep, scheduler: Scheduler | None = None,
                  shared: SharedState | None = None, gateway_id: str | None = None,
                  guard: Guard | None = None, tracing: Tracing | None = None) -> Gateway:
    """Wire one gateway. `shared` (or spec.gateway.shared_state_url) makes it share state with its peers."""
    models = load.models(spec)
    endpoints = load.endpoints(spec)
    store = TelemetryStore(load.sites(spec), endpoints, models, clock,
                           shares=shared is not None or spec.gateway.shared_state_url is not None)
    metrics = GatewayMetrics()
    served = {e.id: e.served_model or e.model for e in spec.endpoints}
    contexts = {e.id: spec.models[e.model].context for e in spec.endpoints}
    guard = guard or Guard(spec)
    salt = CacheSalt(guard.derived_key(SALT_PURPOSE), [e.id for e in spec.endpoints if e.engine in SALTED_KINDS]) \
        if spec.security.isolate_prefix_cache else None
    proxy = Proxy(engines, served, store, metrics, clock, emulate_network=spec.gateway.network == "emulate",
                  max_attempts=spec.gateway.max_attempts, family_of={e.id: e.family for e in endpoints},
                  deadline=FirstByteDeadline(**spec.gateway.first_byte_timeout.model_dump()), sleep=sleep,
                  contexts=contexts, salt=salt,
                  stream_idle_s=spec.gateway.stream_idle_s, stream_max_s=spec.gateway.stream_max_s)
    # the firewall queue's metrics (told under the screen's lock and on its worker thread), through the proxy's guarded
    # writes: a write that fails (a full disk) is counted and logged, rate-limited, and never raises into the queue
    # (on the worker thread it left the job's caller waiting for ever; in check(), a job queued without its turn)
    firewall_queue = "the firewall queue"
    guard.screen.on_waiting = lambda n: proxy.written(firewall_queue, metrics.firewall_waiting.set, n)
    guard.screen.on_wait = lambda s: proxy.written(firewall_queue, metrics.firewall_wait.observe, s)
    # failed charges given up unreleased, counted through the proxy's guarded writes: raised, a write that fails (a
    # full disk) took the place of the store's own error (the refusal a 500) or ended the releases' retry task
    guard.quotas.on_unreleased = lambda: proxy.written("quota releases", metrics.quota_unreleased.inc)
    # aigrid_endpoint_circuit*, written through the proxy's guarded writes (a failure logged, rate-limited)
    store.on_circuit_open = metrics.count_circuits({e.id: e.site_id for e in endpoints}, proxy.written)
    # the series the alert rules count, shown at 0 from the start: a first shed or refusal is an increase() they see
    metrics.start_at_zero()
    return Gateway(
        spec=spec, engines=engines, store=store, scheduler=scheduler or Scheduler(),
        policies={**{name: Policy(name, {}) for name in BASELINES}, **load.policies(spec)},
        baselines={name: make() for name, make in BASELINES.items() if name not in spec.policies},
        tenant_policies=tenant_policies(spec), cities=load.cities(spec),
        known_models=frozenset(models) | frozenset(m.family for m in models.values()),
        serving_kinds=kinds_of_spec(spec),
        decisions=DecisionLog(), metrics=metrics, proxy=proxy,
        scraper=Scraper(store, engines, endpoints, metrics, spec.gateway.scrape_interval_s, served, contexts,
                        written=proxy.written),
        rng=rng or random.Random(), clock=clock, guard=guard, location=load.gateway_location(spec),
        agents=AgentRuntime.from_spec(spec),
        sync=_sync(spec, store, shared, gateway_id, metrics, proxy.written),
        tracing=tracing or build_tracing(spec.gateway.otel),
        right_sizer=RightSizer.from_spec(spec),
        images=ImageUrls(spec.security.image_urls),
    )


def _sync(spec: GridSpec, store: TelemetryStore, shared: SharedState | None, gateway_id: str | None,
          metrics: GatewayMetrics, written: MetricsWrites) -> SharedSync | None:
    url = spec.gateway.shared_state_url
    if shared is None and url is None:
        return None
    if shared is None:  # imported only here: redis (about 12 MB of each worker's memory) only when named
        from aigrid.telemetry.redis_shared import RedisSharedState

        shared = RedisSharedState.from_url(url or "", spec.name, password_env=spec.gateway.redis_password_env)
    gid = gateway_id or f"{socket.gethostname()}-{os.getpid()}"
    endpoints = [(e.site, e.id) for e in spec.endpoints]

    def observe(seconds: float | None) -> None:
        """Through `written`: raised (a full disk), it skipped the exchange's view (SharedSync.sync_once)."""
        if seconds is None:
            written("the shared state", metrics.shared_sync_failures.inc)
        else:
            written("the shared state", lambda: metrics.shared_sync.observe(seconds))
        # kept current by every worker: /metrics sums them
        written("the shared state", metrics.set_inflight, endpoints, store.inflight, written, "the shared state")

    return SharedSync(store, shared, gid, time.time, spec.gateway.shared_sync_interval_s, observe)


def startup_problem(e: BaseException) -> str:
    """Why a gateway could not start, in one line: an aigrid error says it with its field; anything else is
    named by its type."""
    return str(e) if isinstance(e, AigridError) else f"{type(e).__name__}: {e}"


class GatewayApp:
    """The gateway's ASGI app: the proxied routes go straight to their handler (routes.Audited: one Exchange,
    its own error envelope), so a streamed answer's chunks reach the server's `send` with no middleware
    wrapper per chunk; every other route (and the lifespan) goes through Starlette.

    A start that fails is said in one line (Starlette's lifespan hands the server a whole traceback), or not
    at all with `quiet_startup`, where the caller reports `gateway.startup_error` itself."""

    def __init__(self, app: Starlette, direct: Mapping[str, ASGIApp], gateway: Gateway) -> None:
        self.app = app
        self.direct = dict(direct)
        self.gateway = gateway
        self.quiet_startup = False

    @property
    def routes(self) -> list[BaseRoute]:
        return self.app.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.direct.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        elif scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        await self.app(scope, receive, private_send(send) if scope["type"] == "http" else send)

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: MutableMapping[str, Any]) -> None:
            error = self.gateway.startup_error
            if message["type"] == "lifespan.startup.failed" and error is not None:
                message = {**message, "message": "" if self.quiet_startup else
                           f"the gateway could not start: {startup_problem(error)}"}
            await send(message)

        return lifespan_send


PRIVATE_HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))


def private_send(send: Send) -> Send:
    """`send`, with `cache-control: no-store` on an answer whose route says nothing of caching, and `nosniff`.
    The answers are the caller's (its files, batches, stored responses, decisions, its key's models); a file's
    content came with `last-modified` and an `etag`, and a shared cache on the way that keeps answers to a GET
    without `Authorization` (Varnish's built-in rules: 120 s; the Anthropic SDK sends its key as `x-api-key`)
    handed one tenant's to whoever asked the same URL. (The proxied POST routes, served directly, are not kept
    by a cache: a POST's answer is not reused without explicit freshness.)"""
    return with_missing_headers(send, PRIVATE_HEADERS)


def with_missing_headers(send: Send, extra: Sequence[tuple[bytes, bytes]]) -> Send:
    """`send`, each answer with the `extra` headers (lower-case names) its route does not set itself."""
    async def send_with(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers") or ())
            names = {bytes(name).lower() for name, _ in headers}
            message = {**message, "headers": headers + [(k, v) for k, v in extra if k not in names]}
        await send(message)

    return send_with


def build_app(gateway: Gateway, *, extra_routes: Sequence[BaseRoute] = ()) -> GatewayApp:
    routes = Routes(gateway)
    gateway.stores = stores = build_stores(gateway)
    gateway.batches = batches = build_batches(routes)
    messages, responses = MessagesApi(routes), ResponsesApi(routes)
    audited = routes.audited({MESSAGES_PATH: messages.create, RESPONSES_PATH: responses.create})

    async def start() -> None:
        # Each stop is registered before its start is awaited: a start that fails half-way (the first MCP server
        # running, the next one's command missing; the abuse sync and the JWKS refresher running, the audit log
        # not opening) leaves what it did start to its stop, which takes a part-done start. Registered after,
        # the first MCP server was never stopped and the process hung for good: no error line, no Ctrl-C.
        started: list[Callable[[], Awaitable[None]]] = []
        try:
            started.append(gateway.guard.stop)
            await gateway.guard.start()
            started.append(gateway.agents.stop)
            await gateway.agents.start(vet=gateway.guard.firewall.tool_description)
            started.append(gateway.scraper.stop)
            await gateway.scraper.start()
            if gateway.sync is not None:
                started.append(gateway.sync.stop)
                await gateway.sync.start()
            started.append(batches.stop)
            await batches.start()
        except BaseException as e:
            gateway.startup_error = e
            for stop in reversed(started):  # nothing stays half-started
                try:
                    await stop()
                except Exception:  # the start's own error is raised below; this one is said, not dropped
                    log.warning("while stopping after a failed start: %s failed", getattr(stop, "__qualname__", stop),
                                exc_info=True)
            raise

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await start()
        try:
            yield
        finally:
            try:
                await gateway.background.stop()  # each run settles and writes its record while the audit log runs
                await batches.stop()  # likewise every line it stops; the batches resume at the next start
                await stores.aclose()
                if gateway.sync is not None:
                    await gateway.sync.stop()
                await gateway.scraper.stop()
                await gateway.agents.stop()
                await gateway.images.aclose()
                await gateway.guard.stop()
                gateway.tracing.shutdown()
            finally:  # last, every request read; even where a stop above raised (its threads outlived the gateway)
                gateway.parses.close()

    app = Starlette(
        routes=[
            *(Route(path, endpoint, methods=["POST"]) for path, endpoint in audited.items()),
            audited_route(gateway, "GET", "/v1/models", routes.list_models),  # every read of the grid is audited
            audited_route(gateway, "GET", "/v1/models/{model_id:path}", routes.get_model),
            *messages.routes(),
            *responses.routes(),
            # the Responses API's WebSocket mode: each response.create served by the audited POST above
            WebSocketRoute(RESPONSES_PATH, ResponsesSocket(gateway, audited[RESPONSES_PATH])),
            *ConversationsApi(routes).routes(),
            *batches.routes(),
            audited_route(gateway, "GET", "/v1/decisions", routes.recent_decisions),  # every tenant's, to an operator
            audited_route(gateway, "GET", "/v1/decisions/{decision_id}", routes.get_decision),
            audited_route(gateway, "GET", "/v1/grid", routes.grid),
            Route("/healthz", routes.healthz, methods=["GET"]),
            Route("/livez", routes.livez, methods=["GET"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
            Route("/openapi.json", routes.openapi, methods=["GET"]),
            *extra_routes,
        ],
        exception_handlers={ApiError: api_error_handler, HTTPException: http_error_handler,
                            Exception: internal_error_handler},
        lifespan=lifespan,
    )
    return GatewayApp(app, audited, gateway)
