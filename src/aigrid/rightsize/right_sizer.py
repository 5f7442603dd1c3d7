"""Per request: turn the prompt's quality estimate into the numbers the core's right-sizing reads.

For a tenant with `right_size` in the spec and a request for model "auto", every model of the tenant's
ladder (by default the grid's models) gets an estimated quality. The estimate has two reference points, a
mid-size and a large model (docs/models.md); on a ladder of n models ordered by size the largest gets
p_large and model i gets p_large - gain x (n - 1 - i) / (n - 1), gain = the large model's expected gain
(never below 0). This places intermediate models linearly between the two references: an approximation,
stated as such in the model card. The per-prompt threshold comes from the tenant's quality target through
the estimate's operating table (measured out of fold on its training data), unless the tenant sets it directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from aigrid.core.filters.model import in_scope
from aigrid.core.types import RequestInfo
from aigrid.rightsize.estimator import QualityEstimate, QualityEstimator
from aigrid.spec.models import EscalateSpec, GridSpec, RightSizeSpec


def ladder_quality(ladder: Sequence[str], est: QualityEstimate) -> dict[str, float]:
    """Estimated quality per model of a ladder ordered smallest first."""
    n = len(ladder)
    gain = max(est.gain, 0.0)
    if n == 1:
        return {ladder[0]: est.p_large}
    return {m: est.p_large - gain * (n - 1 - i) / (n - 1) for i, m in enumerate(ladder)}


class RightSizer:
    """Holds the estimate (loaded once) and each right-sizing tenant's ladder and threshold."""

    def __init__(self, tenants: Mapping[str, RightSizeSpec], params_b: Mapping[str, float],
                 estimator: QualityEstimator | None = None) -> None:
        self.estimator = estimator if estimator is not None or not tenants else QualityEstimator.load()
        self.ladders: dict[str, tuple[str, ...]] = {}
        self.thresholds: dict[str, float] = {}
        self.escalations: dict[str, EscalateSpec] = {}
        """Tenants whose unsure answers go to the next model up (gateway/escalation.py)."""
        self.sizes = dict(params_b)
        for name, cfg in tenants.items():
            models = cfg.models or list(params_b)
            self.ladders[name] = tuple(sorted(models, key=lambda m: (params_b[m], m)))
            self.thresholds[name] = self._threshold(cfg)
            if cfg.escalate is not None:
                self.escalations[name] = cfg.escalate

    @classmethod
    def from_spec(cls, spec: GridSpec, estimator: QualityEstimator | None = None) -> RightSizer:
        tenants = {n: t.right_size for n, t in spec.tenants.items() if t.right_size is not None}
        return cls(tenants, {n: m.params_b for n, m in spec.models.items()}, estimator)

    def _threshold(self, cfg: RightSizeSpec) -> float:
        if cfg.max_quality_drop is not None:
            return cfg.max_quality_drop
        table = self.estimator.table if self.estimator is not None else None
        return table.threshold_for(cfg.quality_target) if table is not None else 0.0

    def apply(self, info: RequestInfo, prompt: str, tenant: str) -> RequestInfo:
        """`info` with per-model estimates and the tenant's threshold; unchanged unless both apply. The estimates
        are placed on the tenant's whole ladder and kept for the models the caller may use (`info.allowed_models`,
        its key's scope): measured against a model its key may not use, a key's models were all rejected by the
        quality filter (a 503) and its decision named that model."""
        ladder = self.ladders.get(tenant)
        if ladder is None or info.model != "auto" or self.estimator is None:
            return info
        quality = {m: q for m, q in ladder_quality(ladder, self.estimator.estimate(prompt)).items()
                   if in_scope(m, info.allowed_models)}
        if not quality:  # none of the ladder's models (auto's only ones) may serve it: the model filter says so
            return replace(info, allowed_models=(*info.allowed_models, frozenset(ladder)))
        return replace(info, quality=quality, max_quality_drop=self.thresholds[tenant])
