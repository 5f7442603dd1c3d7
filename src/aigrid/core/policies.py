"""Built-in named policies: weight sets over the five axes. Specs may add their own."""

from __future__ import annotations

from dataclasses import replace

from aigrid.core.types import Policy

BUILTIN_POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("latency-first", {"ttft": 0.6, "cost": 0.05, "affinity": 0.1, "headroom": 0.15, "proximity": 0.1}),
        Policy("balanced", {"ttft": 0.35, "cost": 0.2, "affinity": 0.15, "headroom": 0.15, "proximity": 0.15}),
        Policy("cost-first", {"ttft": 0.15, "cost": 0.55, "affinity": 0.1, "headroom": 0.1, "proximity": 0.1},
               ttft_slo_ms=5000.0),
    )
}
DEFAULT_POLICY = "balanced"


def with_slo(policy: Policy, ttft_slo_ms: float, tpot_slo_ms: float | None) -> Policy:
    """The policy gating on the operator's SLO: a grid spec's `slo` (spec/load.py) or a simulated scenario's
    (sim/routers.py), which is also what goodput is counted against there."""
    return replace(policy, ttft_slo_ms=ttft_slo_ms, tpot_slo_ms=tpot_slo_ms)
