"""Data residency: the site's jurisdiction must be one the tenant or request allows."""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import PASS, Context, Verdict
from aigrid.core.types import Endpoint


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class Residency:
    name: str = "residency"

    def applies(self, ctx: Context) -> bool:
        return ctx.request.allowed_jurisdictions is not None

    def check(self, ctx: Context, endpoint: Endpoint) -> Verdict:
        allowed = ctx.request.allowed_jurisdictions
        if allowed is None:
            return PASS
        jurisdiction = ctx.view.sites[endpoint.site_id].jurisdiction
        if jurisdiction in allowed:
            return PASS
        return Verdict(False, f"jurisdiction {jurisdiction} not in allowed {sorted(allowed)}")
