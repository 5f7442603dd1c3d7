"""Policy name -> (router, Policy). aigrid's named policies go through core.scheduler.schedule, the very
function the gateway calls; the baselines (core.baselines) share its signature and hard filters."""

from __future__ import annotations

from aigrid.core.baselines import BASELINES, Centralized, Router
from aigrid.core.policies import BUILTIN_POLICIES, with_slo
from aigrid.core.scheduler import Scheduler, schedule
from aigrid.core.types import Policy

KNOWN = (*BUILTIN_POLICIES, "centralized", *BASELINES)
QUIET = Scheduler(explain=False)
"""schedule's default profile, leaving each Decision's reason empty (the runs that keep no decisions)."""


def make_router(name: str, central_sites: frozenset[str] = frozenset(),
                slo_ms: float | None = None, tpot_slo_ms: float | None = None,
                explain: bool = True) -> tuple[Router, Policy]:
    """A fresh router (baselines with state start from zero) and the Policy it is called with; aigrid's
    policies get the scenario's TTFT SLO (the tenant's SLO, as a spec would set it). `explain=False`: aigrid's
    decisions come without their `reason` (core.scheduler.Scheduler), the same otherwise."""
    if name in BUILTIN_POLICIES:
        policy = BUILTIN_POLICIES[name]
        if slo_ms is not None:
            policy = with_slo(policy, slo_ms, tpot_slo_ms)
        return (schedule if explain else QUIET), policy
    if name == "centralized":
        return Centralized(central_sites), Policy("centralized", {})
    if name in BASELINES:
        return BASELINES[name](), Policy(name, {})
    raise KeyError(f"unknown policy {name!r} (known: {', '.join(KNOWN)})")


def is_aigrid(name: str) -> bool:
    return name in BUILTIN_POLICIES
