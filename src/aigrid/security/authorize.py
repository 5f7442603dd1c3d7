"""Authorization: may this principal use this model, and where may its request run?

`authorize` raises PermissionDenied (403) on a scope violation; `scope_request` turns the principal's
scopes into the routing core's hard filters (allowed_jurisdictions, allowed_sites, allowed_models),
intersected with what the request itself asked for, so residency and the model scope hold through retries,
failover and escalation, and keys the request's affinity (its prefix and session) by its tenant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from aigrid.core.filters.model import in_scope
from aigrid.core.types import RequestInfo
from aigrid.errors import PermissionDenied
from aigrid.security.principal import Principal, Scopes

AUTO = frozenset({"auto"})
RESIDENCY_HEADER = "x-aigrid-residency"
"""Where the jurisdictions authorize() checks come from: the request's own residency header (the gateway's
request_info.H_RESIDENCY)."""


def shown_jurisdictions(names: Iterable[str]) -> str:
    """Jurisdiction names a request gave (its residency header), sorted and joined for an error's message: a name that
    is not printable (a terminal's escape, a C1 control) shown as repr, as the other headers' errors show theirs. The
    one rule of both residency refusals (Guard.check's 400, authorize's 403: until review RV5 of e87d0273 the 403
    said such a name raw, beside a name the key may use)."""
    return ", ".join(j if j.isprintable() else repr(j) for j in sorted(names))


def authorize(principal: Principal, model: str | None, *, jurisdictions: frozenset[str] | None = None,
              policy: str | None = None, kept: str | None = None) -> None:
    """`model` None: a call that names none (a batch's create checks its headers; its lines' models each checked).
    `kept`: what a storing call keeps where the residency header says (`files`, `conversations`), which the 403 of a
    jurisdiction outside the key's names ("may not keep files in EU"); None, a call whose header says where requests
    are sent (the model doors, a batch's lines): "may not send requests to EU". Until the thirty-fifth session every
    door said the latter (FIX6)."""
    scopes = principal.scopes
    if model is not None and not scopes.allows_model(model):
        raise PermissionDenied(f"key {principal.key_id} may not use model '{model}'", param="model",
                               code="model_not_allowed")
    if jurisdictions is not None and scopes.jurisdictions is not None and not jurisdictions <= scopes.jurisdictions:
        outside = shown_jurisdictions(jurisdictions - scopes.jurisdictions)
        done = "send requests to" if kept is None else f"keep {kept} in"
        raise PermissionDenied(f"{RESIDENCY_HEADER}: tenant {principal.tenant!r} (key {principal.key_id}) may not "
                               f"{done} {outside}; it may use {', '.join(sorted(scopes.jurisdictions))}",
                               param=RESIDENCY_HEADER, code="jurisdiction_not_allowed")
    if policy is not None and scopes.policy is not None and policy != scopes.policy:
        raise PermissionDenied(f"key {principal.key_id} is bound to policy '{scopes.policy}'",
                               code="policy_not_allowed")


def scope_request(principal: Principal, request: RequestInfo, **more: Any) -> RequestInfo:
    """The request with the principal's tenant, residency/site limits and model scope applied as hard filters
    (authorize checked the model asked for; the one an endpoint serves can be another: `auto`, a family fallback,
    an escalation); `more`: other fields of RequestInfo changed in the same copy (one `replace`: ~6 us each)."""
    scopes = principal.scopes
    models = _serving_models(scopes)
    return replace(request, **more, tenant=principal.tenant,
                   allowed_jurisdictions=_narrow(request.allowed_jurisdictions, scopes.jurisdictions),
                   allowed_sites=_narrow(request.allowed_sites, scopes.sites), allowed_models=models,
                   prefix_hash=_tenants_own(principal.tenant, request.prefix_hash),
                   session=_tenants_own(principal.tenant, request.session))


def _serving_models(scopes: Scopes) -> tuple[frozenset[str], ...]:
    """The glob pattern sets a model serving the caller must match, one of each (the routing's model filter)."""
    # `auto` names no model an endpoint serves: a scope of `auto` alone lets the router pick any model, as before
    return tuple(p - AUTO for p in (scopes.models, *scopes.models_within) if p is not None and p - AUTO)


def model_may_serve(scopes: Scopes, model: str) -> bool:
    """Whether the grid model `model` may serve a caller of these scopes (what the routing's model filter lets
    through for it: scope_request): a key narrowed to models reads only stored answers such a model produced
    (check_produced_by)."""
    return in_scope(model, _serving_models(scopes))


def check_produced_by(principal: Principal, models: Iterable[str], param: str, what: str) -> None:
    """Whether this caller may use `what` (a stored response and its chain, a conversation, a background
    response's events, a batch's output file) that the grid `models` produced: a key narrowed to some models (`aigrid
    keys create T --model P`, a token's `models` claim) reads, continues, cancels or deletes only what models that may
    serve it produced (model_may_serve: 403 model_not_allowed, naming the others), as
    conversations_api.check_stored_in holds a key narrowed to jurisdictions to what is stored in them (a scope of
    `auto` alone may be served by any model, so reads any). Before the thirty-fifth session a key narrowed to one
    model read and deleted its tenant's stored answers of every other model."""
    others = sorted({m for m in models if not model_may_serve(principal.scopes, m)})
    if others:
        raise PermissionDenied(f"{param}: {what} holds answers of {', '.join(others)}, a model key "
                               f"{principal.key_id} may not use", param=param, code="model_not_allowed")


def check_made_for(principal: Principal, creator: dict[str, Any] | None, models: Iterable[str], param: str,
                   what: str) -> None:
    """check_produced_by for what was answered for a creator whose answering models are not kept (a batch's answers, a
    background response not yet stored): every grid model of `models` that may serve the creator, whose stored scopes
    (Scopes.to_dict) are `creator`; None, a creator not known (a batch no longer kept): any of them."""
    scopes = Scopes.from_dict(dict(creator)) if creator is not None else Scopes()
    check_produced_by(principal, [m for m in sorted(models) if model_may_serve(scopes, m)], param, what)


def may_serve(scopes: Scopes, model: str, site: str, jurisdiction: str) -> bool:
    """Whether an endpoint of `model` at `site` in `jurisdiction` may serve a caller of these scopes: what
    scope_request's hard filters let the routing choose (the grid a narrowed key reads is this part of it)."""
    return (model_may_serve(scopes, model)
            and (scopes.sites is None or site in scopes.sites)
            and (scopes.jurisdictions is None or jurisdiction in scopes.jurisdictions))


def _tenants_own(tenant: str, key: str | None) -> str | None:
    """An affinity key (a prefix's hash, a session) in the tenant's own space of the affinity map: another tenant's
    same system prompt or session id is another key. Shared, a tenant's decision scored warm the endpoint that last
    served another tenant's prompt (an oracle of what others send), and its session id steered theirs.
    `{tag}.{digest}`: the tag (a short hash of the tenant alone) before the first "." tells the affinity map whose
    the key is (telemetry/store.py: the tenant holding the most entries loses its oldest), and travels with the key
    to the other gateways (a (key, endpoint) pair, as before)."""
    if key is None:
        return None
    tag = hashlib.blake2b(tenant.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    digest = hashlib.blake2b(f"{tenant}\x00{key}".encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
    return f"{tag}.{digest}"


def _narrow(asked: frozenset[str] | None, allowed: frozenset[str] | None) -> frozenset[str] | None:
    if asked is None:
        return allowed
    return asked if allowed is None else asked & allowed
