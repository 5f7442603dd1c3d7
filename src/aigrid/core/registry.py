"""Explicit name -> factory tables for routing plugins. Adding a plugin means adding one line here."""

from __future__ import annotations

from collections.abc import Callable

from aigrid.core.filters.capacity import HasCapacity
from aigrid.core.filters.context import HoldsPrompt
from aigrid.core.filters.health import Healthy
from aigrid.core.filters.model import ServesModel
from aigrid.core.filters.quality import QualityTarget
from aigrid.core.filters.residency import Residency
from aigrid.core.filters.tenant import NotExcluded, TenantSites
from aigrid.core.picker import SloPicker, TieBreakPicker
from aigrid.core.plugins import Filter, Picker, Scorer
from aigrid.core.scorers.affinity import AffinityScorer
from aigrid.core.scorers.cost import CostScorer
from aigrid.core.scorers.headroom import HeadroomScorer
from aigrid.core.scorers.proximity import ProximityScorer
from aigrid.core.scorers.ttft import TtftScorer

FILTERS: dict[str, Callable[[], Filter]] = {
    "model": ServesModel,
    "quality": QualityTarget,
    "residency": Residency,
    "tenant": TenantSites,
    # after the rules of who may reach what: an endpoint's first rejection is its label, and the gateway's context
    # 400 names the largest context among the endpoints rejected for it (context_window.refuse_too_long), which
    # must be ones the caller may reach
    "context": HoldsPrompt,
    "retry": NotExcluded,
    "health": Healthy,
    "capacity": HasCapacity,
}

SCORERS: dict[str, Callable[[], Scorer]] = {
    "ttft": TtftScorer,
    "cost": CostScorer,
    "affinity": AffinityScorer,
    "headroom": HeadroomScorer,
    "proximity": ProximityScorer,
}

PICKERS: dict[str, Callable[[], Picker]] = {
    "slo-gate": SloPicker,
    "weighted-random-tiebreak": TieBreakPicker,
}
