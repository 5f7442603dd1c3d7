"""The HTTP handlers: OpenAI routes, decisions, grid state, health and metrics."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from aigrid import __version__
from aigrid.agents.embeddings import create_embeddings
from aigrid.agents.loop import LoopConfig, validate_tool_request, wants_server_tools
from aigrid.agents.reply import ToolLoopEngine
from aigrid.agents.tool import ToolContext
from aigrid.core.types import Candidate, Decision
from aigrid.engines.protocol import Engine
from aigrid.errors import ApiError, InvalidRequest, NoEligibleEndpoint, NotFound
from aigrid.gateway.decisions import DecisionRecord, calibration_dict
from aigrid.gateway.envelope import from_validation
from aigrid.gateway.guard import Admission
from aigrid.gateway.openapi import openapi_document
from aigrid.gateway.output_filter import OutputFilter, redact_json_answer
from aigrid.gateway.proxy import HedgePolicy, Wrap
from aigrid.gateway.request_info import H_POLICY, build_request_info
from aigrid.gateway.schemas import ChatRequest, CompletionRequest
from aigrid.security.authorize import authorize, scope_request
from aigrid.security.firewall.pipeline import Verdict
from aigrid.security.principal import Principal

if TYPE_CHECKING:
    from aigrid.gateway.app import Gateway

H_TENANT = "x-aigrid-tenant"
CHAT_PATH = "/v1/chat/completions"
H_HEDGE = "x-aigrid-hedge"


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


class Routes:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def chat_completions(self, request: Request) -> Response:
        return await self._route(request, "/v1/chat/completions", ChatRequest)

    async def completions(self, request: Request) -> Response:
        return await self._route(request, "/v1/completions", CompletionRequest)

    async def _read_json(self, request: Request) -> dict[str, Any]:
        limit = self.gw.spec.gateway.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise InvalidRequest(f"request body is larger than {limit} bytes", code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise InvalidRequest(f"request body is larger than {limit} bytes", code="request_too_large")
            chunks.append(chunk)
        try:
            body = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as e:
            raise InvalidRequest(f"could not parse the JSON body: {e}", code="invalid_json") from e
        if not isinstance(body, dict):
            raise InvalidRequest("the JSON body must be an object", code="invalid_json")
        return body

    async def _route(self, request: Request, path: str, schema: type[ChatRequest | CompletionRequest]) -> Response:
        gw = self.gw
        principal: Principal | None = None
        body: dict[str, Any] = {}
        model = ""
        try:
            body = await self._read_json(request)
            try:
                parsed: ChatRequest | CompletionRequest = schema.model_validate(body)
            except ValidationError as e:
                raise from_validation(e) from e
            model = parsed.model
            principal = gw.guard.principal(request.headers.get("authorization"), request.headers.get(H_TENANT))
            policy_name = (request.headers.get(H_POLICY) or principal.scopes.policy
                           or gw.tenant_policies.get(principal.tenant, gw.spec.gateway.default_policy))
            policy = gw.policies.get(policy_name)
            if policy is None:
                raise InvalidRequest(f"unknown policy {policy_name!r}; known: {', '.join(sorted(gw.policies))}",
                                     param=H_POLICY)
            hedge = self._hedge(request)
            decision_id = f"dec-{uuid.uuid4().hex[:16]}"
            asked = build_request_info(decision_id, parsed, request.headers, gw.cities, gw.known_models,
                                       gw.spec.gateway.max_output_tokens, gw.location)
            info = scope_request(principal, asked)
            loop = None
            if path == CHAT_PATH and wants_server_tools(body, gw.agents.tools):
                loop = validate_tool_request(body, gw.agents.tools, gw.agents.loop)  # 400s before routing
            admission = await gw.guard.admit(principal, body, model, parsed.prompt_text(),
                                             info.prompt_tokens + info.max_output_tokens, policy=policy_name,
                                             jurisdictions=asked.allowed_jurisdictions)
        except ApiError as e:
            gw.metrics.rejected.labels(e.code or "error").inc()
            await gw.guard.reject(principal, e, model, body)
            raise
        decision = gw.router(policy_name)(info, gw.store.snapshot(), policy, gw.rng)
        record = DecisionRecord(decision, time.time(), principal.tenant, model, info.client_location,
                                affinity_keys=(info.prefix_hash, info.session), prompt_tokens=info.prompt_tokens)
        gw.decisions.add(record)
        if decision.chosen is None:
            record.status = "rejected"
            gw.metrics.rejected.labels("no_eligible_endpoint").inc()
            await gw.guard.complete(admission, decision, None, model, "error:no_eligible_endpoint", None, body)
            details = "; ".join(f"{r.endpoint_id}: {r.filter} ({r.reason})" for r in decision.rejected)
            raise NoEligibleEndpoint(f"{decision.reason}. {details}", headers={"x-aigrid-decision": decision_id})
        return await self._forward(path, body, parsed, decision, record, admission, hedge, loop)

    def _tool_loop(self, loop: LoopConfig, tenant: str) -> Wrap:
        """Run the agent's tool loop at the chosen site, beside its engine (agents/)."""
        agents = self.gw.agents

        def wrap(engine: Engine, cand: Candidate) -> Engine:
            mode = self.gw.spec.models[cand.model].tool_calls
            return ToolLoopEngine(engine, agents.tools, context=ToolContext(cand.site_id, tenant),
                                  config=dataclasses.replace(loop, mode=mode))

        return wrap

    async def _forward(self, path: str, body: dict[str, Any], parsed: ChatRequest | CompletionRequest,
                       decision: Decision, record: DecisionRecord, admission: Admission,
                       hedge: HedgePolicy | None, loop: LoopConfig | None = None) -> Response:
        """Proxy with the tenant's output checks, and settle + audit once the answer is over."""
        fw = self.gw.guard.firewall
        tenant = admission.principal.tenant
        output: OutputFilter | None = None
        answer_verdicts: list[Verdict] = []
        if parsed.stream:
            wants_usage = parsed.stream_options is not None and parsed.stream_options.include_usage
            if not wants_usage:  # meter with the engine's own count, then hide it from the client again
                body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            output = OutputFilter(fw.output_redactor(tenant), strip_usage=not wants_usage)  # also meters usage

        def redact(answer: bytes) -> bytes:
            redacted, verdicts = redact_json_answer(fw, tenant, answer)
            answer_verdicts.extend(verdicts)
            return redacted

        async def done(rec: DecisionRecord, usage: dict[str, Any] | None) -> None:
            verdicts = output.verdicts() if output is not None else answer_verdicts
            await self.gw.guard.complete(admission, decision, rec.served_by, parsed.model, rec.status, usage, body,
                                         verdicts)

        needs_redaction = not parsed.stream and fw.policy(tenant).pii_output != "off"
        wrap = None if loop is None else self._tool_loop(loop, tenant)
        return await self.gw.proxy.forward(path, body, decision, record, parsed.stream, hedge, output=output,
                                           redact_answer=redact if needs_redaction else None, on_complete=done,
                                           wrap=wrap)

    async def embeddings(self, request: Request) -> Response:
        """OpenAI /v1/embeddings, computed by the gateway's embedder (all-MiniLM-L6-v2)."""
        gw = self.gw
        body = await self._read_json(request)
        principal = gw.guard.principal(request.headers.get("authorization"), request.headers.get(H_TENANT))
        authorize(principal, str(body.get("model", "")))
        return json_response(await create_embeddings(body, gw.agents.embedders))

    def _hedge(self, request: Request) -> HedgePolicy | None:
        spec = self.gw.spec.gateway.hedge
        asked = request.headers.get(H_HEDGE, "").strip().lower()
        if asked not in ("", "on", "off"):
            raise InvalidRequest(f"{H_HEDGE} must be 'on' or 'off'", param=H_HEDGE)
        enabled = spec.enabled if asked == "" else asked == "on"
        return HedgePolicy(spec.factor, spec.min_ms) if enabled else None

    async def list_models(self, request: Request) -> Response:
        created = 0
        data = [{"id": name, "object": "model", "created": created, "owned_by": "aigrid",
                 "family": m.family, "params_b": m.params_b} for name, m in self.gw.spec.models.items()]
        data.append({"id": "auto", "object": "model", "created": created, "owned_by": "aigrid"})
        return json_response({"object": "list", "data": data})

    async def get_decision(self, request: Request) -> Response:
        tenant = self.gw.guard.reader(request.headers.get("authorization"))
        rec = self.gw.decisions.get(request.path_params["decision_id"])
        if rec is None or (tenant is not None and rec.tenant != tenant):  # another tenant's: not yours to see
            raise NotFound(f"no decision {request.path_params['decision_id']!r} "
                           "(the gateway keeps only the most recent decisions)", param="decision_id")
        return json_response(rec.to_dict())

    async def recent_decisions(self, request: Request) -> Response:
        raw = request.query_params.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise InvalidRequest("limit must be an integer between 1 and 1000", param="limit")
        tenant = self.gw.guard.reader(request.headers.get("authorization"))
        records = self.gw.decisions.recent(int(raw) if tenant is None else 1000)
        if tenant is not None:
            records = [r for r in records if r.tenant == tenant][: int(raw)]
        return json_response({"data": [r.to_dict() for r in records]})

    async def grid(self, request: Request) -> Response:
        self.gw.guard.reader(request.headers.get("authorization"))  # any valid key: no tenant data here
        view = self.gw.store.snapshot()
        sites = {s.id: {"name": s.name, "lat": s.location.lat, "lon": s.location.lon,
                        "jurisdiction": s.jurisdiction, "hardware": s.hardware} for s in view.sites.values()}
        endpoints = []
        for e in view.endpoints:
            st = self.gw.store.state(e.id)  # fresh, so telemetry_age_s grows while an engine is silent
            endpoints.append({"id": e.id, "site": e.site_id, "model": e.model, "engine": e.engine,
                              "url": self.gw.engines[e.id].base_url,
                              "slots": e.max_concurrency, "healthy": st.healthy, "circuit": str(st.circuit),
                              "running": st.running, "waiting": st.waiting, "kv_usage": st.kv_usage,
                              "ttft_s": st.ttft_s, "error_rate": round(st.error_rate, 4), "reason": st.reason,
                              "telemetry_age_s": round(st.age_s, 2),
                              "measured_rtt_ms": None if st.rtt_ms is None else round(st.rtt_ms, 2),
                              "pending_requests": st.pending_requests,
                              "pending_prompt_tokens": st.pending_prompt_tokens, "decoding": st.decoding,
                              "calibration": calibration_dict(st.calibration)})
        return json_response({"name": self.gw.spec.name, "sites": sites, "endpoints": endpoints})

    async def livez(self, request: Request) -> Response:
        """Liveness: the gateway process serves. Unlike /healthz it stays 200 when every engine is down, so an
        orchestrator never restarts gateways because of their engines."""
        return json_response({"status": "alive"})

    async def healthz(self, request: Request) -> Response:
        view = self.gw.store.snapshot()
        healthy = [e.id for e in view.endpoints if view.state(e.id).healthy]
        status = 200 if healthy else 503
        shared = {"backend": "in-process"} if self.gw.sync is None else self.gw.sync.status()
        return json_response({"status": "ok" if healthy else "no healthy endpoint", "healthy": healthy,
                              "endpoints": len(view.endpoints), "shared_state": shared}, status)

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document(__version__))

    async def metrics(self, request: Request) -> Response:
        for e in self.gw.store.snapshot().endpoints:
            self.gw.metrics.inflight.labels(e.site_id, e.id).set(self.gw.store.inflight(e.id))
        return Response(generate_latest(self.gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)
