"""Tenant rules: a tenant may be pinned to a set of sites; a retry excludes endpoints already tried."""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import PASS, Context, Verdict
from aigrid.core.types import Endpoint


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class TenantSites:
    name: str = "tenant"

    def applies(self, ctx: Context) -> bool:
        return ctx.request.allowed_sites is not None

    def check(self, ctx: Context, endpoint: Endpoint) -> Verdict:
        allowed = ctx.request.allowed_sites
        if allowed is None or endpoint.site_id in allowed:
            return PASS
        return Verdict(False, f"site {endpoint.site_id} not allowed for tenant {ctx.request.tenant}")


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class NotExcluded:
    name: str = "retry"

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.request.exclude_endpoints)

    def check(self, ctx: Context, endpoint: Endpoint) -> Verdict:
        if endpoint.id in ctx.request.exclude_endpoints:
            return Verdict(False, "already tried for this request")
        return PASS
