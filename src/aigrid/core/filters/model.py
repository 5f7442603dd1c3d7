"""Serves the model: exact name, "auto" (any model), a family name, or (if the policy allows) another
model of the same family; and, whatever was asked, only a model the caller may use (RequestInfo.allowed_models:
a key limited to one model was served another of its family, or any model of the grid for "auto")."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import PASS, Context, Verdict
from aigrid.core.types import Endpoint

AUTO = "auto"


def in_scope(model: str, allowed_models: tuple[frozenset[str], ...]) -> bool:
    """Whether `model` matches a glob pattern of each set (RequestInfo.allowed_models; none: any model)."""
    return all(any(fnmatchcase(model, p) for p in patterns) for patterns in allowed_models)


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class ServesModel:
    name: str = "model"

    def applies(self, ctx: Context) -> bool:
        return ctx.request.model != AUTO or bool(ctx.request.allowed_models)

    def check(self, ctx: Context, endpoint: Endpoint) -> Verdict:
        wanted = ctx.request.model
        if not in_scope(endpoint.model, ctx.request.allowed_models):
            return Verdict(False, "serves a model the caller's key may not use")  # unnamed: a narrowed key reads its decisions
        if wanted in (AUTO, endpoint.model, endpoint.family):
            return PASS
        info = ctx.view.models.get(wanted)
        if ctx.policy.allow_family_fallback and info is not None and info.family == endpoint.family:
            return PASS
        return Verdict(False, f"serves {endpoint.model}, not {wanted}")
