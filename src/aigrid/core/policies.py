"""Built-in named policies: weight sets over the five axes. Specs may add their own."""

from __future__ import annotations

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
